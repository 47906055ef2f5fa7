"""Every error the runtime raises on purpose.

    RuntimeFailure
    ├── ConfigError            settings are wrong; the process exits 2 before writing anything
    ├── RefusedToStart         the data or the cluster state does not match this node; exit 2
    ├── InvalidInput           a request or key that can never succeed (HTTP 400/413)
    │   └── ValueTooLarge
    ├── NotFound               no such key or job (HTTP 404)
    ├── LeaseLost              an ack whose lease no longer holds the job (HTTP 409)
    ├── StorageError
    │   ├── Conflict           a compare-and-swap lost: the revision was not the expected one
    │   └── StorageUnavailable the DB did not answer; the outcome of a write is unknown
    └── SecurityError          a secret did not decrypt, a certificate could not be made
        └── InvalidToken       a bearer token that must be answered with 401

Foreign exceptions (sqlite3, grpc, aiohttp, cryptography) are translated where they are caught,
with ``raise X(...) from exc``, so callers only ever handle this tree.
"""

from __future__ import annotations


class RuntimeFailure(Exception):
    """Base of every error raised on purpose by the runtime."""


class ConfigError(RuntimeFailure):
    """One or more settings are invalid. ``problems`` holds one line per offender."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class RefusedToStart(RuntimeFailure):
    """The node would risk corrupting data if it started."""


class InvalidInput(RuntimeFailure):
    """A key, value or request that is wrong whatever the state of the DB."""


class ValueTooLarge(InvalidInput):
    """A value over the size limit."""


class NotFound(RuntimeFailure):
    """The key or job asked for does not exist."""


class LeaseLost(RuntimeFailure):
    """An ack that cannot be honoured: ``code`` is ``lease_mismatch`` or ``lease_expired``."""

    def __init__(self, code: str, detail: str) -> None:
        self.code = code
        super().__init__(detail)


class StorageError(RuntimeFailure):
    """Base of the storage errors."""


class Conflict(StorageError):
    """A compare-and-swap failed. ``current`` is the revision found (0: absent)."""

    def __init__(self, key: str, expected: int, current: int) -> None:
        self.key, self.expected, self.current = key, expected, current
        super().__init__(f"{key!r}: expected revision {expected}, found {current}")


class StorageUnavailable(StorageError):
    """The DB could not be reached or did not confirm the operation in time.

    ``applied`` is False when the operation certainly had no effect (nothing was sent, or the
    DB refused it before proposing it), None when it may or may not have taken effect.
    """

    def __init__(self, message: str, *, applied: bool | None = None) -> None:
        self.applied = applied
        super().__init__(message)


class StorageFull(StorageUnavailable):
    """The node's disk is full: the write was rolled back (nothing applied); reads go on, and
    writes succeed again once there is space, without a restart."""

    def __init__(self, message: str) -> None:
        super().__init__(message, applied=False)


class SecurityError(RuntimeFailure):
    """Key material is missing, corrupt, or does not decrypt with our secret."""


class InvalidToken(SecurityError):
    """A bearer token that is malformed, expired, unsigned or signed by an unknown key."""

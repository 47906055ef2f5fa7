"""Which tokens no longer count, before they expire. Pure: the records are data, time is passed in.

Two kinds, in the runtime's ``_cluster`` namespace, followed by every node:

- a user's tokens issued before a moment (logout everywhere, a new password, a disabled or
  deleted user): ``users[name] = t``, in one record (one entry per user at most);
- one token, by its ``jti``, until it would have expired anyway (a logout): a key of its own,
  :func:`token_key`, named by the token's expiry so the ones past it are pruned in key order.
  (They once shared one record: about 33,000 logouts filled its 1 MiB, after which every
  logout, password change, disable and delete failed.)

    >>> r = Revocations.empty().revoke_user("ann", at=100.0, token_ttl=3600)
    >>> r.revoked(Principal("ann", (), 4000.0, issued_at=99.0, token_id="a"), now=150.0)
    True
    >>> r.revoked(Principal("ann", (), 4000.0, issued_at=101.0, token_id="b"), now=150.0)
    False

Entries are pruned once no token they could stop is still valid, so the record stays small.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from runtime.security.authz import Principal

RECORD = "revocations"
TOKENS = "revoked-tokens/"


def token_key(token_id: str, expires_at: float) -> str:
    """``revoked-tokens/<expiry, 12 digits>/<jti>``: key order is expiry order.

    >>> token_key("abc", 1700000000.5)
    'revoked-tokens/001700000001/abc'
    """
    return f"{TOKENS}{math.ceil(expires_at):012d}/{token_id}"


def parse_token_key(key: str) -> tuple[str, float]:
    """(jti, expiry) of a key made by :func:`token_key`; ValueError for anything else."""
    expiry, _, token_id = key.removeprefix(TOKENS).partition("/")
    if not key.startswith(TOKENS) or not token_id or not expiry.isdigit():
        raise ValueError(f"not a revoked token's key: {key!r}")
    return token_id, float(expiry)


@dataclass(frozen=True)
class Revocations:
    users: dict[str, tuple[float, float]] = field(default_factory=dict)  # name -> (revoked before, prune after)
    tokens: dict[str, float] = field(default_factory=dict)  # jti -> the token's exp

    @classmethod
    def empty(cls) -> Revocations:
        return cls()

    @classmethod
    def load(cls, raw: bytes, tokens: dict[str, float] | None = None) -> Revocations:
        """The users' record, and the revoked tokens read from their keys."""
        data = json.loads(raw) if raw else {}
        users = {str(k): (float(v[0]), float(v[1])) for k, v in data.get("users", {}).items()}
        return cls(users, dict(tokens or {}))

    def dump(self) -> bytes:
        """The users' record (tokens live in keys of their own)."""
        return json.dumps({"users": self.users}, separators=(",", ":")).encode()

    def revoked(self, principal: Principal, now: float) -> bool:
        before = self.users.get(principal.username)
        if before is not None and principal.issued_at < before[0]:
            return True
        return principal.token_id in self.tokens

    def revoke_user(self, username: str, *, at: float, token_ttl: float) -> Revocations:
        """Every token of ``username`` issued before ``at``; kept until the last could expire."""
        return Revocations({**self.users, username: (at, at + token_ttl)}, dict(self.tokens)).pruned(at)

    def revoke_token(self, token_id: str, *, expires_at: float, now: float) -> Revocations:
        return Revocations(dict(self.users), {**self.tokens, token_id: expires_at}).pruned(now)

    def pruned(self, now: float) -> Revocations:
        users = {name: entry for name, entry in self.users.items() if entry[1] > now}
        return Revocations(users, {jti: exp for jti, exp in self.tokens.items() if exp > now})

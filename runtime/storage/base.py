"""The one seam between services and their DB.

A service is handed a :class:`Namespace` and nothing else. The namespace name is fixed when
the runtime builds it, every key is validated, and no method takes a namespace argument, so a
service has no way to name a key outside its own space. Backends implement :class:`Backend`,
whose methods take ``(namespace, key)``; only the runtime's wiring ever holds one.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from runtime.storage.keys import STORED_KEY_MAX_BYTES, validate_key, validate_namespace, validate_value


@dataclass(frozen=True, slots=True)
class Entry:
    key: str
    value: bytes
    revision: int


class Backend(Protocol):
    """A storage engine. ``if_revision``: None = unconditional, 0 = must be absent, N = must be at N."""

    name: str

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None: ...
    async def get(self, ns: str, key: str) -> Entry | None: ...
    async def put(self, ns: str, key: str, value: bytes, if_revision: int | None) -> int: ...
    async def delete(self, ns: str, key: str, if_revision: int | None) -> bool: ...
    async def range(
        self, ns: str, prefix: str, after: str | None, limit: int, *, keys_only: bool = False
    ) -> list[Entry]:
        """Entries in key order; with ``keys_only`` their values are not read (``b""``)."""

    def changes(self, ns: str, key: str) -> AsyncIterator[None]:
        """Wakes at once, then whenever ``key`` may have changed, written by any node. Never ends
        on its own; a backend reconnects by itself (and wakes, since it may have missed one)."""

    def watch(self, ns: str, prefix: str) -> AsyncIterator[Sequence[str] | None]:
        """The keys under ``prefix`` that changed (written or deleted by any node), as they
        change; ``None`` first and after every gap (a reconnect), meaning "read them all
        again". Never ends on its own."""


Observer = Callable[[str, float], None]


def _ignore(op: str, seconds: float) -> None:
    return None


class Namespace:
    """One service's private view of the DB.

    ``put`` returns the new revision; with ``if_revision`` it raises ``Conflict`` when the
    stored revision differs (0 means the key must not exist yet).
    """

    __slots__ = ("__backend", "__name", "__observe")

    def __init__(self, backend: Backend, name: str, observe: Observer = _ignore) -> None:
        self.__backend = backend
        self.__name = validate_namespace(name)
        self.__observe = observe

    @property
    def name(self) -> str:
        return self.__name

    async def get(self, key: str) -> Entry | None:
        started = time.perf_counter()
        try:
            return await self.__backend.get(self.__name, _key(key))
        finally:
            self.__observe("get", time.perf_counter() - started)

    async def put(self, key: str, value: bytes, *, if_revision: int | None = None) -> int:
        validate_value(value)
        started = time.perf_counter()
        try:
            return await self.__backend.put(self.__name, _key(key), value, if_revision)
        finally:
            self.__observe("put", time.perf_counter() - started)

    async def delete(self, key: str, *, if_revision: int | None = None) -> bool:
        started = time.perf_counter()
        try:
            return await self.__backend.delete(self.__name, _key(key), if_revision)
        finally:
            self.__observe("delete", time.perf_counter() - started)

    def changes(self, key: str) -> AsyncIterator[None]:
        """Wakes at once, then whenever ``key`` may have changed (see :meth:`Backend.changes`)."""
        return self.__backend.changes(self.__name, _key(key))

    def watch(self, prefix: str) -> AsyncIterator[Sequence[str] | None]:
        """Which keys under ``prefix`` changed, or None: read all (see :meth:`Backend.watch`)."""
        return self.__backend.watch(self.__name, _key(prefix))

    async def range(
        self, prefix: str = "", *, after: str | None = None, limit: int = 100, keys_only: bool = False
    ) -> list[Entry]:
        if prefix:
            _key(prefix)
        if after is not None:
            _key(after)
        started = time.perf_counter()
        try:
            return await self.__backend.range(self.__name, prefix, after, max(1, min(limit, 1000)), keys_only=keys_only)
        finally:
            self.__observe("range", time.perf_counter() - started)


def _key(key: str) -> str:
    return validate_key(key, max_bytes=STORED_KEY_MAX_BYTES)


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest byte string greater than every string starting with ``prefix``.

    >>> prefix_end(b"ab")
    b'ac'
    >>> prefix_end(b"a\\xff") is None or prefix_end(b"a\\xff")
    b'b'
    """
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return None
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


def range_start(prefix: str, after: str | None) -> bytes:
    """Where a prefix scan starts: the prefix, or just past ``after`` when that is later."""
    start = prefix.encode()
    if after is not None and after.encode() >= start:
        start = after.encode() + b"\x00"
    return start

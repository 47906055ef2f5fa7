"""An in-memory backend: the fake for fast unit tests. Same contract as SQLite and etcd."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from runtime.exceptions import Conflict
from runtime.storage.base import Entry, prefix_end, range_start
from runtime.storage.changes import LocalChanges


class MemoryBackend:
    name = "memory"

    def __init__(self) -> None:
        self._data: dict[tuple[str, str], Entry] = {}
        self._revision = 0
        self._changes = LocalChanges()

    def changes(self, ns: str, key: str) -> AsyncIterator[None]:
        return self._changes.follow(ns, key)

    def watch(self, ns: str, prefix: str) -> AsyncIterator[Sequence[str] | None]:
        return self._changes.watch(ns, prefix)

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    async def get(self, ns: str, key: str) -> Entry | None:
        return self._data.get((ns, key))

    async def put(self, ns: str, key: str, value: bytes, if_revision: int | None) -> int:
        self._check(ns, key, if_revision)
        self._revision += 1
        self._data[(ns, key)] = Entry(key, value, self._revision)
        self._changes.notify(ns, key)
        return self._revision

    async def delete(self, ns: str, key: str, if_revision: int | None) -> bool:
        self._check(ns, key, if_revision)
        if self._data.pop((ns, key), None) is None:
            return False
        self._revision += 1
        self._changes.notify(ns, key)
        return True

    async def range(
        self, ns: str, prefix: str, after: str | None, limit: int, *, keys_only: bool = False
    ) -> list[Entry]:
        start, end = range_start(prefix, after), prefix_end(prefix.encode())
        keys = sorted(key.encode() for (space, key) in self._data if space == ns)
        chosen = [self._data[(ns, k.decode())] for k in keys if k >= start and (end is None or k < end)][:limit]
        return [Entry(e.key, b"", e.revision) for e in chosen] if keys_only else chosen

    def _check(self, ns: str, key: str, if_revision: int | None) -> None:
        if if_revision is None:
            return
        found = self._data.get((ns, key))
        current = found.revision if found else 0
        if current != if_revision:
            raise Conflict(key, if_revision, current)

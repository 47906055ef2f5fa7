"""Change notification for backends that only this process writes (memory, SQLite):
every committed write of a key wakes whoever follows that key, and tells whoever watches a
prefix of it which key it was.

    changes = LocalChanges()
    async for _ in changes.follow("ns", "key"):   # first wake-up at once: read the current state
        ...
    async for keys in changes.watch("ns", "p/"):  # None first (read all), then changed keys
        ...
    changes.notify("ns", "key")                    # after each committed write
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field


class LocalChanges:
    def __init__(self) -> None:
        self._followers: dict[tuple[str, str], set[asyncio.Event]] = defaultdict(set)
        self._watchers: dict[tuple[str, str], set[_Watcher]] = defaultdict(set)

    def notify(self, ns: str, key: str) -> None:
        for event in self._followers.get((ns, key), ()):
            event.set()
        for (space, prefix), watchers in self._watchers.items():
            if space == ns and key.startswith(prefix):
                for watcher in watchers:
                    watcher.keys.append(key)
                    watcher.event.set()

    async def watch(self, ns: str, prefix: str) -> AsyncIterator[Sequence[str] | None]:
        watcher = _Watcher()
        self._watchers[(ns, prefix)].add(watcher)
        try:
            yield None  # the watcher starts by reading what is there
            while True:
                await watcher.event.wait()
                watcher.event.clear()
                keys, watcher.keys = watcher.keys, []
                yield keys
        finally:
            self._watchers[(ns, prefix)].discard(watcher)

    async def follow(self, ns: str, key: str) -> AsyncIterator[None]:
        event = asyncio.Event()
        event.set()  # the follower starts by reading what is there
        self._followers[(ns, key)].add(event)
        try:
            while True:
                await event.wait()
                event.clear()
                yield
        finally:
            self._followers[(ns, key)].discard(event)


@dataclass(eq=False)
class _Watcher:
    event: asyncio.Event = field(default_factory=asyncio.Event)
    keys: list[str] = field(default_factory=list)

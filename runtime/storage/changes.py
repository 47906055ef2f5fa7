"""Change notification for backends that only this process writes (memory, SQLite):
every committed write of a key wakes whoever follows that key.

    changes = LocalChanges()
    async for _ in changes.follow("ns", "key"):   # first wake-up at once: read the current state
        ...
    changes.notify("ns", "key")                    # after each committed write
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator


class LocalChanges:
    def __init__(self) -> None:
        self._followers: dict[tuple[str, str], set[asyncio.Event]] = defaultdict(set)

    def notify(self, ns: str, key: str) -> None:
        for event in self._followers.get((ns, key), ()):
            event.set()

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

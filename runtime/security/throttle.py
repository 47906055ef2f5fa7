"""Slow down repeated failed logins, per (user, client address) and per client address.

Attempts for one (user, address) pair run one at a time (:meth:`serialized`), and each checks
the lock *inside* that turn: a hundred concurrent guesses for one user are not all checked
before the first failure is recorded; only ``free`` of them are, the rest wait their turn and
are refused. Concurrent correct logins (a load generator's users) just queue briefly. After
``free`` failures a pair is locked for ``base * 2**(extra failures)`` seconds, capped at
``cap``; a success clears the pair. Counts decay after ``cap`` seconds without a failure.

Keys are a 16-byte hash, so a megabyte username costs no more than a short one, and the
table holds at most ``max_keys`` entries. Locking is per (user, address): a stranger's
guesses lock the stranger out, not the user everywhere. The address key, with a larger
budget, slows one client spraying many users. State is per process.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


def keys_for(username: str, client: str) -> list[bytes]:
    """``[hash(user, address), hash(address)]``: bounded, whatever the inputs."""
    pair = hashlib.sha256(b"pair\0" + username.encode(errors="surrogatepass") + b"\0" + client.encode()).digest()
    alone = hashlib.sha256(b"addr\0" + client.encode()).digest()
    return [pair[:16], alone[:16]]


@dataclass
class _State:
    count: int
    locked_until: float
    last: float


@dataclass
class LoginThrottle:
    free: int = 5
    base: float = 1.0
    cap: float = 300.0
    max_keys: int = 100_000
    per_address_free: int = 50  # failures one address may have, over any users
    _keys: OrderedDict[bytes, _State] = field(default_factory=OrderedDict)
    _turns: dict[bytes, asyncio.Lock] = field(default_factory=dict)

    @asynccontextmanager
    async def serialized(self, pair: bytes) -> AsyncIterator[None]:
        """One attempt at a time for this (user, address) pair."""
        turn = self._turns.setdefault(pair, asyncio.Lock())
        try:
            async with turn:
                yield
        finally:
            if not turn.locked() and self._turns.get(pair) is turn:
                del self._turns[pair]  # nobody waits: the table of turns stays small

    def retry_after(self, keys: list[bytes], now: float) -> float:
        """Seconds to wait before another attempt (0: go ahead)."""
        return max(0.0, *(self._state(k, now).locked_until - now for k in keys))

    def failed(self, keys: list[bytes], now: float) -> None:
        for key, free in zip(keys, (self.free, self.per_address_free), strict=False):
            state = self._state(key, now)
            state.count += 1
            state.last = now
            if state.count >= free:
                state.locked_until = now + min(self.cap, self.base * 2 ** (state.count - free))
            self._keys[key] = state
            self._keys.move_to_end(key)
        while len(self._keys) > self.max_keys:
            self._keys.popitem(last=False)  # the least recently failed

    def succeeded(self, keys: list[bytes]) -> None:
        """The pair starts again; the address keeps its count (one good account must not
        reset a sprayer's budget)."""
        self._keys.pop(keys[0], None)

    def __len__(self) -> int:
        return len(self._keys)

    def _state(self, key: bytes, now: float) -> _State:
        state = self._keys.get(key)
        if state is None or now - state.last > self.cap:
            return _State(0, 0.0, now)
        return state

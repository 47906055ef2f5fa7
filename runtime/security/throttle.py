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

Every password check (a login, a change of one's own password) goes through :meth:`turn`:
at most ``per_address_hashing`` checks of one address run at once, and each looks at the
address's lock inside its turn, so a burst of guesses for many users is counted as it runs,
not after (120 concurrent failures for 120 usernames once all ran scrypt first); and at most
``hashing`` checks run at once in all (scrypt takes 16 MiB and ~50 ms of a core each).
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
    per_address_hashing: int = 2  # password checks of one address running at once
    hashing: int = 4  # password checks running at once, in all
    _keys: OrderedDict[bytes, _State] = field(default_factory=OrderedDict)
    _turns: dict[bytes, tuple[asyncio.Lock, list[int]]] = field(default_factory=dict)
    _addresses: dict[bytes, tuple[asyncio.Semaphore, list[int]]] = field(default_factory=dict)
    _hashing: asyncio.Semaphore | None = None

    @asynccontextmanager
    async def turn(self, keys: list[bytes]) -> AsyncIterator[None]:
        """A password check's turn: a slot of its address, then the (user, address) pair's
        turn. Check :meth:`retry_after` inside it, then record the outcome."""
        pair, address = keys
        slots, users = self._addresses.setdefault(address, (asyncio.Semaphore(self.per_address_hashing), [0]))
        users[0] += 1
        try:
            async with slots, self.serialized(pair):
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._addresses[address]  # nobody holds or waits: the table stays small

    @asynccontextmanager
    async def hashing_slot(self) -> AsyncIterator[None]:
        """One of the process's ``hashing`` slots, around the hash itself."""
        if self._hashing is None:
            self._hashing = asyncio.Semaphore(self.hashing)
        async with self._hashing:
            yield

    @asynccontextmanager
    async def serialized(self, pair: bytes) -> AsyncIterator[None]:
        """One attempt at a time for this (user, address) pair. The lock leaves the table
        only when nobody holds or awaits it (a released lock whose next holder has not yet
        woken is not free: dropping it then let a third attempt run beside the second)."""
        turn, users = self._turns.setdefault(pair, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with turn:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._turns[pair]

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

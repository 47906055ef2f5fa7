"""Slow down repeated failed logins, per (user, client address) and per client address.

An attempt is counted when it begins, before the password is checked: :meth:`begin` runs on
the event loop with no await inside, so a hundred concurrent guesses cannot all pass the
check before the first failure is recorded. After ``free`` attempts that did not succeed, a
key is locked for ``base * 2**(extra attempts)`` seconds, capped at ``cap``; a success clears
the (user, address) key. Counts decay after ``cap`` seconds without an attempt.

Keys are a 16-byte hash, so a megabyte username costs no more than a short one, and the table
holds at most ``max_keys`` entries. Locking is per (user, address): a stranger's guesses lock
the stranger out, not the user everywhere. The address key slows one client spraying many
users. State is per process: each node throttles what it sees.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
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
    per_address_free: int = 50  # one address may try this many (user, password) pairs
    _keys: OrderedDict[bytes, _State] = field(default_factory=OrderedDict)

    def begin(self, keys: list[bytes], now: float) -> float:
        """0.0, with the attempt counted against every key; or the seconds to wait, counting nothing."""
        wait = max((self._state(k, now).locked_until - now for k in keys), default=0.0)
        if wait > 0:
            return wait
        for index, key in enumerate(keys):
            state = self._state(key, now)
            free = self.free if index == 0 else self.per_address_free
            state.count += 1
            state.last = now
            if state.count >= free:
                state.locked_until = now + min(self.cap, self.base * 2 ** (state.count - free))
            self._keys[key] = state
            self._keys.move_to_end(key)
        self._bound(now)
        return 0.0

    def succeeded(self, keys: list[bytes]) -> None:
        """The pair's count starts again; the address keeps its count (one good account must
        not reset a sprayer's budget)."""
        self._keys.pop(keys[0], None)

    def __len__(self) -> int:
        return len(self._keys)

    def _state(self, key: bytes, now: float) -> _State:
        state = self._keys.get(key)
        if state is None or now - state.last > self.cap:
            return _State(0, 0.0, now)
        return state

    def _bound(self, now: float) -> None:
        while len(self._keys) > self.max_keys:
            self._keys.popitem(last=False)  # the least recently tried

"""A bounded cache of verified bearer tokens: a token checked once is not checked again
until it expires (or its signing key retires). Keyed by a SHA-256 of the token, so the
cache never holds a usable token. Pure: time is passed in. Safe to use from several threads
(the event loop's and the gRPC server's).

    >>> cache = VerifiedTokens(capacity=2)
    >>> cache.put("t1", Principal("ann", ("reader",), 100.0), until=100.0)
    >>> cache.get("t1", now=50.0).username, cache.get("t1", now=100.0)
    ('ann', None)
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

from runtime.security.authz import Principal


class VerifiedTokens:
    def __init__(self, capacity: int = 10_000) -> None:
        if capacity < 1:
            raise ValueError(f"token cache capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._entries: OrderedDict[bytes, tuple[Principal, float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _key(token: str) -> bytes:
        return hashlib.sha256(token.encode(errors="surrogatepass")).digest()

    def get(self, token: str, *, now: float) -> Principal | None:
        key = self._key(token)
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            principal, until = found
            if until <= now:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return principal

    def put(self, token: str, principal: Principal, *, until: float) -> None:
        """Remember ``token`` as verified until ``until``; the least recently used goes first."""
        key = self._key(token)
        with self._lock:
            self._entries[key] = (principal, until)
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

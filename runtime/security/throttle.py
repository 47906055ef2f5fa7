"""Slow down repeated failed logins, per username and per client address.

After ``free`` failures in a row a key is locked for ``base * 2**(extra failures)`` seconds,
capped at ``cap``. A success clears the username's count. State is per process: each node
throttles what it sees, which bounds guessing to nodes x rate.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LoginThrottle:
    free: int = 5
    base: float = 1.0
    cap: float = 300.0
    max_keys: int = 100_000
    _failures: dict[str, tuple[int, float]] = field(default_factory=dict)

    def retry_after(self, keys: list[str], now: float) -> float:
        """Seconds to wait before another attempt is allowed (0: go ahead)."""
        return max((self._failures.get(k, (0, 0.0))[1] - now for k in keys), default=0.0) if keys else 0.0

    def failed(self, keys: list[str], now: float) -> None:
        if len(self._failures) > self.max_keys:
            self._failures = {k: v for k, v in self._failures.items() if v[1] > now}
        for key in keys:
            count = self._failures.get(key, (0, 0.0))[0] + 1
            lock = 0.0 if count < self.free else min(self.cap, self.base * 2 ** (count - self.free))
            self._failures[key] = (count, now + lock)

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)

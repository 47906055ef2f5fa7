"""Which tokens no longer count, before they expire. Pure: the record is data, time is passed in.

Two kinds, in one record of the runtime's ``_cluster`` namespace that every node follows:

- a user's tokens issued before a moment (logout everywhere, a new password, a disabled or
  deleted user): ``users[name] = t``;
- one token, by its ``jti``, until it would have expired anyway (a logout): ``tokens[jti] = exp``.

    >>> r = Revocations.empty().revoke_user("ann", at=100.0, token_ttl=3600)
    >>> r.revoked(Principal("ann", (), 4000.0, issued_at=99.0, token_id="a"), now=150.0)
    True
    >>> r.revoked(Principal("ann", (), 4000.0, issued_at=101.0, token_id="b"), now=150.0)
    False

Entries are pruned once no token they could stop is still valid, so the record stays small.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from runtime.security.authz import Principal

RECORD = "revocations"


@dataclass(frozen=True)
class Revocations:
    users: dict[str, tuple[float, float]] = field(default_factory=dict)  # name -> (revoked before, prune after)
    tokens: dict[str, float] = field(default_factory=dict)  # jti -> the token's exp

    @classmethod
    def empty(cls) -> Revocations:
        return cls()

    @classmethod
    def load(cls, raw: bytes) -> Revocations:
        data = json.loads(raw)
        users = {str(k): (float(v[0]), float(v[1])) for k, v in data.get("users", {}).items()}
        return cls(users, {str(k): float(v) for k, v in data.get("tokens", {}).items()})

    def dump(self) -> bytes:
        return json.dumps({"users": self.users, "tokens": self.tokens}, separators=(",", ":")).encode()

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

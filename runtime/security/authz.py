"""Authorization: one pure decision for every request, from the route's permission.

>>> decide(None, "public")
<Decision.ALLOW: 200>
>>> decide(None, "read")
<Decision.UNAUTHENTICATED: 401>
>>> decide(Principal("bob", ("reader",)), "write")
<Decision.FORBIDDEN: 403>
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

ROLES: dict[str, frozenset[str]] = {
    "reader": frozenset({"read"}),
    "writer": frozenset({"read", "write"}),
    "admin": frozenset({"read", "write", "admin"}),
}


@dataclass(frozen=True)
class Principal:
    username: str
    roles: tuple[str, ...]
    expires_at: float = 0.0
    issued_at: float = 0.0
    token_id: str = ""

    @property
    def permissions(self) -> frozenset[str]:
        return frozenset().union(*(ROLES.get(role, frozenset()) for role in self.roles))


class Decision(enum.IntEnum):
    ALLOW = 200
    UNAUTHENTICATED = 401
    FORBIDDEN = 403


def decide(principal: Principal | None, permission: str) -> Decision:
    if permission == "public":
        return Decision.ALLOW
    if principal is None:
        return Decision.UNAUTHENTICATED
    return Decision.ALLOW if permission in principal.permissions else Decision.FORBIDDEN

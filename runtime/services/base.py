"""What every service is: a name, a schema version, a Namespace, and handlers by route name."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from starlette.requests import Request
from starlette.responses import Response

from runtime.exceptions import Conflict, RefusedToStart
from runtime.jsonbody import strict_loads
from runtime.security.authz import Principal
from runtime.storage import Namespace

MARKER = "meta/marker"


@dataclass(frozen=True)
class Call:
    """One request as a handler sees it: already matched, authorized and read."""

    request: Request
    params: Mapping[str, str]
    principal: Principal | None
    body: bytes
    client: str

    def json(self) -> object:
        return strict_loads(self.body)


Handler = Callable[[Call], Awaitable[Response]]


class Service(Protocol):
    name: str
    schema_version: int

    @property
    def handlers(self) -> Mapping[str, Handler]: ...

    async def start(self) -> None: ...


async def ensure_marker(ns: Namespace, service: str, schema_version: int) -> None:
    """Write ``{service, schema}`` on first start; refuse to start on a mismatch."""
    wanted = {"service": service, "schema": schema_version}
    found = await ns.get(MARKER)
    if found is None:
        try:
            await ns.put(MARKER, json.dumps(wanted).encode(), if_revision=0)
            return
        except Conflict:
            found = await ns.get(MARKER)
    stored = json.loads(found.value) if found else None
    if stored != wanted:
        raise RefusedToStart(
            f"namespace {ns.name!r}: holds data of {stored}, this runtime expects {wanted}; "
            "start a runtime of the matching version, or migrate the data first"
        )

"""The route table: data, defined once, the same in every mode.

Each :class:`Route` says which service owns a path, what permission it needs and whether a
retry is safe. :func:`match` is pure (no I/O): the app decides where a request goes from its
answer, then handles it locally or forwards it. The same table is exported as plain data by
:func:`as_data` (``runtime routes``), which is what a proxy's configuration (HAProxy, Envoy
xDS) is generated from.

>>> m = match("GET", "/v1/kv/users/alice")
>>> (m.route.name, m.route.service, m.params)
('kv.get', 'kv', {'key': 'users/alice'})
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

PUBLIC, READ, WRITE, ADMIN = "public", "read", "write", "admin"
OPS = "ops"  # answered by whichever node receives the request; never forwarded


@dataclass(frozen=True)
class Route:
    name: str
    method: str
    path: str
    service: str
    permission: str
    summary: str
    idempotent: bool = False
    # cluster-internal: answered only on a member's direct connection, never through a front
    # door (Envoy and HAProxy answer 404 themselves, a node refuses it from a balancer)
    members_only: bool = False
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pattern", compile_path(self.path))

    @property
    def prefix(self) -> str:
        """The literal part before the first parameter: what a prefix router needs."""
        return self.path.split("{", 1)[0]


def compile_path(path: str) -> re.Pattern[str]:
    """``/v1/kv/{key:path}`` -> a regex with named groups; ``{x}`` stops at '/'."""
    if not path.startswith("/"):
        raise ValueError(f"route path must start with '/', got {path!r}")
    out, pos = "^", 0
    for found in re.finditer(r"{([a-z_]+)(?::(path))?}", path):
        out += re.escape(path[pos : found.start()])
        out += f"(?P<{found[1]}>.+)" if found[2] else f"(?P<{found[1]}>[^/]+)"
        pos = found.end()
    return re.compile(out + re.escape(path[pos:]) + "$")


ROUTES: tuple[Route, ...] = (
    Route("healthz", "GET", "/healthz", OPS, PUBLIC, "Process is alive", idempotent=True),
    Route("livez", "GET", "/livez", OPS, PUBLIC, "Process is alive (Kubernetes' liveness name)", idempotent=True),
    Route("readyz", "GET", "/readyz", OPS, PUBLIC, "DB reachable and services started", idempotent=True),
    Route("ca", "GET", "/ca.pem", OPS, PUBLIC, "Cluster CA certificate (PEM)", idempotent=True),
    Route("metrics", "GET", "/metrics", OPS, READ, "Prometheus metrics", idempotent=True),
    Route("openapi", "GET", "/openapi.json", OPS, PUBLIC, "This API as OpenAPI 3", idempotent=True),
    Route(
        "cluster.renew",
        "POST",
        "/v1/_cluster/renew",
        OPS,
        PUBLIC,
        "Renew the calling member's certificate (members, directly)",
        members_only=True,
    ),
    Route("auth.login", "POST", "/v1/auth/login", "auth", PUBLIC, "Exchange username and password for a token"),
    Route("auth.jwks", "GET", "/v1/auth/jwks", "auth", PUBLIC, "Public token-signing keys (JWKS)", idempotent=True),
    Route("auth.whoami", "GET", "/v1/auth/whoami", "auth", READ, "Who the token belongs to", idempotent=True),
    Route("auth.users.create", "POST", "/v1/auth/users", "auth", ADMIN, "Create a user with roles"),
    Route("auth.logout", "POST", "/v1/auth/logout", "auth", READ, "Revoke the token of this call"),
    Route("auth.password", "POST", "/v1/auth/password", "auth", READ, "Change one's own password; revokes its tokens"),
    Route("auth.users.delete", "DELETE", "/v1/auth/users/{user}", "auth", ADMIN, "Delete a user; revokes its tokens"),
    Route("auth.users.update", "PATCH", "/v1/auth/users/{user}", "auth", ADMIN, "Disable or enable a user"),
    Route("auth.users.password", "PUT", "/v1/auth/users/{user}/password", "auth", ADMIN, "Set a user's password"),
    Route("kv.list", "GET", "/v1/kv", "kv", READ, "List keys by prefix", idempotent=True),
    Route("kv.get", "GET", "/v1/kv/{key:path}", "kv", READ, "Read a value", idempotent=True),
    Route("kv.put", "PUT", "/v1/kv/{key:path}", "kv", WRITE, "Write a value (If-Match / If-None-Match)"),
    Route("kv.delete", "DELETE", "/v1/kv/{key:path}", "kv", WRITE, "Delete a value (If-Match)"),
    Route("queue.enqueue", "POST", "/v1/queue/{queue}/jobs", "queue", WRITE, "Add a job"),
    Route("queue.claim", "POST", "/v1/queue/{queue}/claim", "queue", WRITE, "Claim the next job with a lease"),
    Route("queue.ack", "POST", "/v1/queue/{queue}/jobs/{job}/ack", "queue", WRITE, "Acknowledge a claimed job"),
    Route("queue.get", "GET", "/v1/queue/{queue}/jobs/{job}", "queue", READ, "A job's state", idempotent=True),
    Route(
        "queue.delete",
        "DELETE",
        "/v1/queue/{queue}/jobs/{job}",
        "queue",
        WRITE,
        "Delete a job, in any state",
        idempotent=True,
    ),
)


GRPC_PACKAGE = "modematrix.v1"


@dataclass(frozen=True)
class GrpcMethod:
    """A gRPC method of ``runtime/rpc/modematrix.proto`` and the HTTP route it mirrors: the
    same service, permission and retry safety, so both APIs route and authorize alike."""

    path: str
    route: Route


def _grpc(service: str, method: str, route_name: str) -> GrpcMethod:
    route = next(r for r in ROUTES if r.name == route_name)
    return GrpcMethod(f"/{GRPC_PACKAGE}.{service}/{method}", route)


GRPC_METHODS: tuple[GrpcMethod, ...] = (
    _grpc("Kv", "Get", "kv.get"),
    _grpc("Kv", "Put", "kv.put"),
    _grpc("Kv", "Delete", "kv.delete"),
    _grpc("Kv", "List", "kv.list"),
    _grpc("Queue", "Enqueue", "queue.enqueue"),
    _grpc("Queue", "Claim", "queue.claim"),
    _grpc("Queue", "Ack", "queue.ack"),
    _grpc("Queue", "GetJob", "queue.get"),
    _grpc("Queue", "DeleteJob", "queue.delete"),
)
GRPC_SERVICES = tuple(sorted({m.route.service for m in GRPC_METHODS}))
_GRPC_BY_PATH = {m.path: m for m in GRPC_METHODS}  # looked up on every call


def grpc_method(path: str) -> GrpcMethod | None:
    """The method at ``path`` (``/package.Service/Method``), or None.

    >>> grpc_method("/modematrix.v1.Kv/Put").route.name
    'kv.put'
    """
    return _GRPC_BY_PATH.get(path)


@dataclass(frozen=True)
class Match:
    route: Route
    params: dict[str, str]


@dataclass(frozen=True)
class NoMatch:
    status: int  # 404: no such path; 405: path exists, method does not
    allowed: tuple[str, ...] = ()


def match(method: str, path: str, routes: tuple[Route, ...] = ROUTES) -> Match | NoMatch:
    allowed: list[str] = []
    for route in routes:
        found = route.pattern.match(path)
        if found is None:
            continue
        if route.method == method or (method == "HEAD" and route.method == "GET"):
            return Match(route, found.groupdict())
        allowed.append(route.method)
    return NoMatch(405, tuple(sorted(set(allowed)))) if allowed else NoMatch(404)


def services_routed() -> tuple[str, ...]:
    return tuple(sorted({r.service for r in ROUTES if r.service != OPS}))


def as_data(routes: tuple[Route, ...] = ROUTES) -> list[dict[str, object]]:
    """The table as JSON-ready data, for proxies and for documentation."""
    return [
        {
            "name": r.name,
            "method": r.method,
            "path": r.path,
            "prefix": r.prefix,
            "regex": r.pattern.pattern,
            "service": r.service,
            "permission": r.permission,
            "idempotent": r.idempotent,
            "members_only": r.members_only,
            "summary": r.summary,
        }
        for r in routes
    ]

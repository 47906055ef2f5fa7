"""The edge every request passes through, in every mode.

    match (pure) -> member gate -> authenticate -> decide (pure) -> local handler | forward

Errors from any step become ``{"error", "detail"}`` bodies here and nowhere else.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from cryptography import x509
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from runtime import http, logs, openapi, routing
from runtime.app import Node, clock_of
from runtime.exceptions import InvalidInput, InvalidToken, StorageFull, StorageUnavailable, ValueTooLarge
from runtime.security import Decision, Principal, decide
from runtime.security.certs import NotRenewable
from runtime.services import Call
from runtime.storage.keys import VALUE_MAX_BYTES

log = logging.getLogger("runtime.http")
READY_CACHE_SECONDS = 0.5


class RuntimeApp:
    """ASGI application of one node."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._ops: dict[str, Callable[[Request], Awaitable[Response]]] = {
            "healthz": self.healthz,
            "livez": self.healthz,
            "readyz": self.readyz,
            "ca": self.ca,
            "metrics": self.metrics,
            "openapi": self.openapi,
            "cluster.renew": self.renew,
        }
        self._ready: tuple[float, Response | None] = (0.0, None)
        # <random per process>-<counter>: unique across nodes and restarts, and no os.urandom per
        # request (uuid4 was a seventh of a node's event loop under load)
        prefix = uuid.uuid4().hex[:8]
        self._request_ids = (f"{prefix}-{n:x}" for n in itertools.count(1))
        self._openapi = json.dumps(openapi.document(node.version)).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        rid = request.headers.get("x-request-id") or next(self._request_ids)
        token = logs.request_id.set(rid)
        started = time.perf_counter()
        found = routing.match(request.method, request.url.path)
        route = found.route.name if isinstance(found, routing.Match) else "unmatched"
        try:
            response = await self._handle(request, found)
        except Exception:
            log.exception("unhandled error", extra={"fields": {"route": route}})
            response = http.error(500, "internal", f"internal error; see the node's log for request {rid}")
        finally:
            logs.request_id.reset(token)
        response.headers["x-request-id"] = rid
        self._record(request, route, response.status_code, started, rid)
        await response(scope, receive, send)

    def _record(self, request: Request, route: str, status: int, started: float, rid: str) -> None:
        elapsed = time.perf_counter() - started
        metrics, method = self.node.metrics, metric_method(request.method)
        metrics.requests.labels(route, method, str(status)).inc()
        metrics.latency.labels(route, method).observe(elapsed)
        level = logging.WARNING if status >= 500 else logging.INFO if status >= 400 else logging.DEBUG
        if log.isEnabledFor(level):
            log.log(
                level,
                "request",
                extra={
                    "fields": {
                        "request_id": rid,
                        "method": request.method,
                        "route": route,
                        "status": status,
                        "ms": round(elapsed * 1000, 3),
                        "client": _client(request, _member_certificate(request)),
                    }
                },
            )

    async def _handle(self, request: Request, found: routing.Match | routing.NoMatch) -> Response:
        if isinstance(found, routing.NoMatch):
            if found.status == 405:
                return http.error(
                    405,
                    "method_not_allowed",
                    f"{request.method} is not allowed here",
                    headers={"Allow": ", ".join(found.allowed)},
                )
            return http.error(404, "not_found", f"no route for {request.url.path}")
        route = found.route
        member = _member_certificate(request)
        if route.members_only and self._through_a_front_door(request):
            return http.error(404, "not_found", f"no route for {request.url.path} through a front door")
        if route.service != routing.OPS and not self.node.is_edge and not member and not self.node.config.insecure_http:
            return http.error(403, "members_only", "this node takes API calls only from cluster members (mutual TLS)")
        permission = "public" if route.name == "metrics" and self.node.config.metrics_public else route.permission
        try:
            principal = await self._authenticate(request, permission)
        except InvalidToken as exc:
            return http.error(
                401, "unauthenticated", str(exc), headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
            )
        decision = decide(principal, permission)
        if decision is Decision.UNAUTHENTICATED:
            return http.error(
                401, "unauthenticated", "a bearer token is required", headers={"WWW-Authenticate": "Bearer"}
            )
        if decision is Decision.FORBIDDEN:
            return http.error(403, "forbidden", f"{route.name} needs the {permission!r} permission")
        try:
            return await self._run(request, found, principal, client=_client(request, member))
        except ValueTooLarge as exc:
            return http.error(413, "too_large", str(exc))
        except InvalidInput as exc:
            return http.error(400, "invalid", str(exc))
        except StorageUnavailable as exc:
            return unavailable(exc)

    def _through_a_front_door(self, request: Request) -> bool:
        """Arrived through a balancer: on the balancers' port (HAProxy), or carrying the headers
        a proxy adds (Envoy's X-Forwarded-For, x-envoy-*, Forwarded, Via). A member calling
        directly sends none of them."""
        server = request.scope.get("server")
        proxy_port = self.node.config.proxy_port
        if proxy_port and server and server[1] == proxy_port:
            return True
        return any(name in PROXY_HEADERS or name.startswith("x-envoy-") for name in request.headers)

    async def _authenticate(self, request: Request, permission: str) -> Principal | None:
        header = request.headers.get("authorization")
        if header is None or (permission == "public" and not header.lower().startswith("bearer ")):
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise InvalidToken("Authorization: expected 'Bearer <token>'")
        try:
            return await self.node.keys.verify_fresh(token.strip())
        except InvalidToken:
            if permission == "public":
                return None
            raise

    async def _run(self, request: Request, found: routing.Match, principal: Principal | None, client: str) -> Response:
        route = found.route
        if route.service == routing.OPS:
            return await self._ops[route.name](request)
        body = await _read_body(request) if request.method in ("PUT", "POST", "PATCH") else b""
        service = self.node.services.get(route.service)
        if service is not None:
            return await service.handlers[route.name](Call(request, found.params, principal, body, client))
        if self.node.peers is not None and route.service in self.node.peers.peers:
            return await self.node.peers.forward(
                route.service, request, body, idempotent=route.idempotent, client=client
            )
        return http.error(404, "service_not_here", f"this node does not run {route.service!r} and has no peers for it")

    # -- operations endpoints -----------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return http.json({"status": "alive", "node": self.node.config.node_name})

    async def readyz(self, request: Request) -> Response:
        checked_at, cached = self._ready
        if cached is not None and time.monotonic() - checked_at < READY_CACHE_SECONDS:
            return cached
        node = self.node
        body: dict[str, object] = {
            "node": node.config.node_name,
            "services": list(node.config.services),
            "db": node.backend.name,
        }
        if node.config.clock_skew_file is not None:  # the clock-skew failpoint is armed: say where it stands
            body["clock_skew_s"] = clock_of(node.config).skew
        if node.peers is not None:
            body["peers"] = node.peers.summary()
        try:
            await node.backend.ping()
            response = http.json({"status": "ready", **body})
        except StorageUnavailable as exc:  # the members and the error go to the log, not to the caller
            log.warning("not ready: DB unreachable", extra={"fields": {"error": str(exc)}})
            response = http.error(503, "not_ready", "the DB is unreachable from this node")
        self._ready = (time.monotonic(), response)
        return response

    async def ca(self, request: Request) -> Response:
        return Response(self.node.cert.ca_pem, media_type="application/x-pem-file")

    async def renew(self, request: Request) -> Response:
        """A member renews its own certificate: the one it presents on this connection, for
        the key in the signing request it sends. Only nodes holding the CA key answer."""
        issuer = self.node.issuer
        if issuer is None:
            return http.error(404, "not_an_issuer", "this node does not hold the CA key; ask an auth node")
        presented = request.scope.get("extensions", {}).get("tls", {}).get("client_cert_der")
        if not presented:
            return http.error(403, "members_only", "renewal needs the certificate being renewed (mutual TLS)")
        body = await _read_body(request)
        try:
            issued = issuer.certify(x509.load_der_x509_certificate(presented), body)
        except NotRenewable as exc:
            log.warning("renewal refused", extra={"fields": {"reason": str(exc)}})
            return http.error(403, "not_renewable", str(exc))
        except ValueError as exc:
            return http.error(400, "invalid", str(exc))
        return Response(issued, media_type="application/x-pem-file")

    async def metrics(self, request: Request) -> Response:
        return Response(self.node.metrics.render(), media_type="text/plain; version=0.0.4")

    async def openapi(self, request: Request) -> Response:
        return Response(self._openapi, media_type="application/json")


def _member_certificate(request: Request) -> bool:
    tls = request.scope.get("extensions", {}).get("tls", {})
    return bool(tls.get("client_cert"))


def _client(request: Request, member: bool) -> str:
    """Who the client is: the connection's peer, or, when a member (Envoy, an ingress node)
    forwarded the request, the last X-Forwarded-For entry, which that member appended (Envoy
    with use_remote_address, runtime/proxy.py). Entries before it are whatever the client
    wrote, and a client must not choose the address it is throttled and logged by."""
    forwarded = request.headers.get("x-forwarded-for")
    if member and forwarded:
        return forwarded.rsplit(",", 1)[-1].strip() or "unknown"
    return request.client.host if request.client else "unknown"


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > VALUE_MAX_BYTES:
        raise ValueTooLarge(f"body is {declared} bytes, the limit is {VALUE_MAX_BYTES}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > VALUE_MAX_BYTES:
            raise ValueTooLarge(f"body is over the limit of {VALUE_MAX_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


PROXY_HEADERS = frozenset({"x-forwarded-for", "forwarded", "via"})
RETRY_AFTER = {"Retry-After": "1"}
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


def metric_method(method: str) -> str:
    """A method as a metrics label: one of the known seven, else ``OTHER``, so a client
    cannot grow /metrics by sending made-up methods.

    >>> metric_method("GET"), metric_method("BREW")
    ('GET', 'OTHER')
    """
    return method if method in KNOWN_METHODS else "OTHER"


def unavailable(exc: StorageUnavailable) -> Response:
    """503 that tells a client whether sending the request again is safe: ``not_applied``
    (it had no effect: retry anywhere) or ``outcome_unknown`` (it may have taken effect).
    Which members failed, and how, is the node's log's, never the caller's (it named them).

    >>> unavailable(StorageUnavailable("https://10.0.0.5:2379: refused", applied=False)).body
    b'{"error":"not_applied","detail":"the DB is unavailable; nothing was applied"}'
    >>> unavailable(StorageFull("SQLite db: database or disk is full")).status_code
    507
    """
    if isinstance(exc, StorageFull):  # another node's disk may have room: the caller decides
        log.warning("disk full: write refused", extra={"fields": {"error": str(exc)}})
        return http.error(507, "insufficient_storage", "this node's disk is full; nothing was applied", RETRY_AFTER)
    log.warning("DB unavailable", extra={"fields": {"error": str(exc), "applied": exc.applied}})
    if exc.applied is False:
        return http.error(503, "not_applied", "the DB is unavailable; nothing was applied", RETRY_AFTER)
    return http.error(503, "outcome_unknown", "the DB did not confirm in time; it may have applied it", RETRY_AFTER)

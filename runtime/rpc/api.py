"""The gRPC servicers of kv and queue, and the server that hosts them beside the HTTP API.

Each call goes the way an HTTP request does (runtime/dispatch.py): member gate -> bearer
token -> the mirrored route's permission -> the same service operation, in the service's own
namespace. Errors become status codes (see modematrix.proto); UNAVAILABLE is only ever sent
when nothing was applied, so a client or Envoy may send the call again.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from runtime.exceptions import (
    Conflict,
    InvalidInput,
    InvalidToken,
    LeaseLost,
    NotFound,
    StorageFull,
    StorageUnavailable,
    ValueTooLarge,
)
from runtime.jsonbody import strict_loads
from runtime.routing import GrpcMethod, grpc_method
from runtime.rpc import STREAMS_PER_CONNECTION, pb, pb_grpc
from runtime.security import Decision, Principal, decide
from runtime.security.keystore import KeyStore
from runtime.services.kv import KvService
from runtime.services.queue import QueueService
from runtime.storage.keys import VALUE_MAX_BYTES

log = logging.getLogger("runtime.rpc")
T = TypeVar("T")
DEFAULT_LEASE = 30.0
MAX_MESSAGE = VALUE_MAX_BYTES + 64 * 1024  # a full-size value and its key fit; the service says 413-like past that


class Failed(Exception):
    """A call's outcome other than OK: a status code, its text, trailing metadata."""

    def __init__(self, code: grpc.StatusCode, detail: str, trailers: tuple[tuple[str, str], ...] = ()) -> None:
        self.code, self.detail, self.trailers = code, detail, trailers
        super().__init__(detail)


class Gate:
    """Who may call: the member gate, the token and the permission, as on the HTTP side."""

    def __init__(self, keys: KeyStore, metrics: Any, *, members_only: bool) -> None:
        self.keys, self.metrics, self.members_only = keys, metrics, members_only

    async def run(self, context: grpc.aio.ServicerContext, path: str, op: Callable[[], Awaitable[T]]) -> T:
        method = grpc_method(path)
        assert method is not None, path  # every servicer method is in the table (tests/runtime/test_rpc.py)
        started = time.perf_counter()
        try:
            await self._admit(context, method)
            result = await op()
        except Exception as exc:
            failed = translate(exc)
            if failed is None:
                log.exception("unhandled error", extra={"fields": {"method": path}})
                failed = Failed(grpc.StatusCode.INTERNAL, "internal error; see the node's log")
        else:
            self.record(method, grpc.StatusCode.OK, started)
            return result
        self.record(method, failed.code, started)
        if failed.trailers:
            context.set_trailing_metadata(failed.trailers)
        await context.abort(failed.code, failed.detail)
        raise AssertionError("abort returns only by raising")  # pragma: no cover

    def record(self, method: GrpcMethod, code: grpc.StatusCode, started: float) -> None:
        self.metrics.requests.labels(method.route.name, "GRPC", code.name).inc()
        self.metrics.latency.labels(method.route.name, "GRPC").observe(time.perf_counter() - started)

    async def _admit(self, context: grpc.aio.ServicerContext, method: GrpcMethod) -> Principal | None:
        if self.members_only and not context.auth_context().get("x509_pem_cert"):
            raise Failed(
                grpc.StatusCode.PERMISSION_DENIED,
                "members_only: this node takes API calls only from cluster members (mutual TLS)",
            )
        principal = await self._authenticate(context)
        decision = decide(principal, method.route.permission)
        if decision is Decision.UNAUTHENTICATED:
            raise Failed(grpc.StatusCode.UNAUTHENTICATED, "a bearer token is required (metadata 'authorization')")
        if decision is Decision.FORBIDDEN:
            raise Failed(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{method.route.name} needs the {method.route.permission!r} permission",
            )
        return principal

    async def _authenticate(self, context: grpc.aio.ServicerContext) -> Principal | None:
        return await self.principal(context.invocation_metadata())

    async def principal(self, metadata: Any) -> Principal | None:
        header = dict(metadata or ()).get("authorization")
        if header is None:
            return None
        scheme, _, token = str(header).partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise InvalidToken("authorization: expected 'Bearer <token>'")
        return await self.keys.verify_fresh(token.strip())

    def interceptor(self) -> grpc.aio.ServerInterceptor:
        return _TokenFirst(self)


class _TokenFirst(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """The bearer token is checked from the call's headers before its message is read: a
    call without a valid one is refused by a handler that never reads the request (declared
    client-streaming, so gRPC does not buffer the message first), so nobody without a token
    can make a node hold megabytes of unfinished messages."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        method = grpc_method(details.method)
        try:
            if method is None or await self.gate.principal(details.invocation_metadata) is None:
                raise InvalidToken("a bearer token is required (metadata 'authorization')")
        except InvalidToken as exc:
            if method is not None:
                self.gate.record(method, grpc.StatusCode.UNAUTHENTICATED, time.perf_counter())
            return _refusal(f"unauthenticated: {exc}")
        return await continuation(details)


def _refusal(detail: str) -> grpc.RpcMethodHandler:
    async def refuse(requests: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, detail)

    return grpc.stream_unary_rpc_method_handler(refuse)


def translate(exc: Exception) -> Failed | None:
    """The runtime's errors as status codes; None for an error nobody raised on purpose."""
    if isinstance(exc, Failed):
        return exc
    if isinstance(exc, InvalidToken):
        return Failed(grpc.StatusCode.UNAUTHENTICATED, f"unauthenticated: {exc}")
    if isinstance(exc, Conflict):
        found = f"revision {exc.current}" if exc.current else "no such key"
        return Failed(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"precondition_failed: expected revision {exc.expected}, found {found}",
            (("modematrix-revision", str(exc.current)),),
        )
    if isinstance(exc, ValueTooLarge):
        return Failed(grpc.StatusCode.INVALID_ARGUMENT, f"too_large: {exc}")
    if isinstance(exc, InvalidInput):
        return Failed(grpc.StatusCode.INVALID_ARGUMENT, f"invalid: {exc}")
    if isinstance(exc, NotFound):
        return Failed(grpc.StatusCode.NOT_FOUND, f"not_found: {exc}")
    if isinstance(exc, LeaseLost):
        return Failed(grpc.StatusCode.FAILED_PRECONDITION, f"{exc.code}: {exc}")
    if isinstance(exc, StorageFull):
        log.warning("disk full: write refused", extra={"fields": {"error": str(exc)}})
        full = "insufficient_storage: this node's disk is full; nothing was applied"
        return Failed(grpc.StatusCode.RESOURCE_EXHAUSTED, full)
    if isinstance(exc, StorageUnavailable):  # which members failed is the log's, not the caller's
        log.warning("DB unavailable", extra={"fields": {"error": str(exc), "applied": exc.applied}})
        if exc.applied is False:
            return Failed(grpc.StatusCode.UNAVAILABLE, "not_applied: the DB is unavailable; nothing was applied")
        return Failed(
            grpc.StatusCode.UNKNOWN, "outcome_unknown: the DB did not confirm in time; it may have applied it"
        )
    return None


def _payload(raw: str) -> object:
    try:
        return strict_loads(raw.encode())
    except InvalidInput:
        raise
    except ValueError as exc:
        raise InvalidInput(f"payload_json: expected a JSON document ({exc})") from None


class KvServicer(pb_grpc.KvServicer):
    def __init__(self, kv: KvService, gate: Gate) -> None:
        self.kv, self.gate = kv, gate

    async def Get(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def op() -> Any:
            entry = await self.kv.read(request.key)
            return pb.Entry(key=entry.key, value=entry.value, revision=entry.revision)

        return await self.gate.run(context, "/modematrix.v1.Kv/Get", op)

    async def Put(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def op() -> Any:
            expected = request.if_revision if request.HasField("if_revision") else None
            if expected is not None and expected < 0:
                raise InvalidInput(f"if_revision: expected 0 (absent) or a revision, got {expected}")
            revision = await self.kv.write(request.key, request.value, if_revision=expected)
            return pb.PutReply(key=request.key, revision=revision)

        return await self.gate.run(context, "/modematrix.v1.Kv/Put", op)

    async def Delete(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def op() -> Any:
            expected = request.if_revision if request.HasField("if_revision") else None
            await self.kv.remove(request.key, if_revision=expected)
            return pb.DeleteReply()

        return await self.gate.run(context, "/modematrix.v1.Kv/Delete", op)

    async def List(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def op() -> Any:
            items, more = await self.kv.keys(request.prefix, request.after or None, request.limit or 100)
            return pb.ListReply(items=[pb.KeyRevision(key=e.key, revision=e.revision) for e in items], next=more or "")

        return await self.gate.run(context, "/modematrix.v1.Kv/List", op)


class QueueServicer(pb_grpc.QueueServicer):
    def __init__(self, queue: QueueService, gate: Gate) -> None:
        self.queue, self.gate = queue, gate

    async def Enqueue(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def op() -> Any:
            job = await self.queue.put_job(request.queue, _payload(request.payload_json))
            return pb.EnqueueReply(id=job, queue=request.queue)

        return await self.gate.run(context, "/modematrix.v1.Queue/Enqueue", op)

    async def Claim(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def op() -> Any:
            lease = request.lease_seconds or DEFAULT_LEASE
            if not 0.1 <= lease <= 3600:
                raise InvalidInput(f"lease_seconds: expected 0.1 to 3600, got {lease}")
            claimed = await self.queue.take(request.queue, lease)
            if claimed is None:
                return pb.ClaimReply(has_job=False)
            return pb.ClaimReply(
                has_job=True,
                id=claimed["id"],
                payload_json=json.dumps(claimed["payload"]),
                lease_id=claimed["lease_id"],
                lease_expires_at=claimed["lease_expires_at"],
                attempts=claimed["attempts"],
            )

        return await self.gate.run(context, "/modematrix.v1.Queue/Claim", op)

    async def Ack(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def op() -> Any:
            await self.queue.finish(request.queue, request.id, request.lease_id)
            return pb.AckReply()

        return await self.gate.run(context, "/modematrix.v1.Queue/Ack", op)

    async def GetJob(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def op() -> Any:
            state = await self.queue.state(request.queue, request.id)
            return pb.JobState(
                id=state["id"],
                queue=state["queue"],
                state=state["state"],
                attempts=state["attempts"],
                payload_json=json.dumps(state["payload"]),
            )

        return await self.gate.run(context, "/modematrix.v1.Queue/GetJob", op)

    async def DeleteJob(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def op() -> Any:
            await self.queue.remove(request.queue, request.id)
            return pb.DeleteJobReply()

        return await self.gate.run(context, "/modematrix.v1.Queue/DeleteJob", op)


@dataclass(frozen=True)
class Limits:
    """What one client can hold of a node's gRPC port, as on its HTTP port: connections (the
    cap is enforced before the TLS handshake), the handshake's deadline, an idle connection's
    life, streams per connection and calls in all, and the size of a message and of headers."""

    connections: int = 1024
    handshake_s: float = 10.0
    idle_s: float = 15.0
    streams_per_connection: int = STREAMS_PER_CONNECTION
    calls: int = 256
    message_bytes: int = MAX_MESSAGE
    metadata_bytes: int = 16 * 1024

    def options(self) -> list[tuple[str, int]]:
        return [
            ("grpc.max_allowed_incoming_connections", self.connections),
            ("grpc.server_handshake_timeout_ms", int(self.handshake_s * 1000)),
            ("grpc.max_connection_idle_ms", int(self.idle_s * 1000)),
            ("grpc.max_concurrent_streams", self.streams_per_connection),
            ("grpc.max_receive_message_length", self.message_bytes),
            ("grpc.max_send_message_length", self.message_bytes),
            ("grpc.max_metadata_size", self.metadata_bytes),
            ("grpc.so_reuseport", 0),
        ]


def build_server(
    services: dict[str, Any],
    gate: Gate,
    address: str,
    credentials: grpc.ServerCredentials | None,
    limits: Limits = Limits(),
) -> grpc.aio.Server | None:
    """A server with a servicer for each of kv and queue that runs here; None if neither does."""
    server = grpc.aio.server(
        interceptors=[gate.interceptor()], maximum_concurrent_rpcs=limits.calls, options=limits.options()
    )
    hosted = False
    if isinstance(services.get("kv"), KvService):
        pb_grpc.add_KvServicer_to_server(KvServicer(services["kv"], gate), server)
        hosted = True
    if isinstance(services.get("queue"), QueueService):
        pb_grpc.add_QueueServicer_to_server(QueueServicer(services["queue"], gate), server)
        hosted = True
    if not hosted:
        return None
    if credentials is None:
        server.add_insecure_port(address)
    else:
        server.add_secure_port(address, credentials)
    return server

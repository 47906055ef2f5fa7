"""The gRPC servicers of kv and queue, and the server that hosts them beside the HTTP API.

Each call goes the way an HTTP request does (runtime/dispatch.py): member gate -> bearer
token -> the mirrored route's permission -> the same service operation, in the service's own
namespace. Errors become status codes (see modematrix.proto); UNAVAILABLE is only ever sent
when nothing was applied, so a client or Envoy may send the call again.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent import futures
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
from runtime.rpc import STREAMS_PER_CONNECTION, pb
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
    """Who may call: the token, the member gate and the permission, as on the HTTP side; then
    the call's operation, run on the node's event loop.

    grpcio's threaded server calls :meth:`serve` in one of its threads for each call: the
    token is checked there from the call's headers before its message is read (the handlers
    are declared client-streaming, so gRPC does not buffer the message first, and nobody
    without a token can make a node hold megabytes of unfinished messages); then the message
    is read, and the operation (a coroutine, as every service's) is handed to the loop and
    waited for. One hop to the loop a call: grpcio's threaded server, even so, served 1.2-1.6x
    the calls of its asyncio server here (docs/measurements.md)."""

    def __init__(
        self, keys: KeyStore, metrics: Any, *, members_only: bool, loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        self.keys, self.metrics, self.members_only = keys, metrics, members_only
        self.loop = loop or asyncio.get_running_loop()

    def serve(
        self,
        path: str,
        op: Callable[[Any], Coroutine[Any, Any, T]],
        requests: Iterator[Any],
        context: grpc.ServicerContext,
    ) -> T:
        method = grpc_method(path)
        assert method is not None, path  # every servicer method is in the table (tests/runtime/test_rpc.py)
        started = time.perf_counter()
        try:
            self._admit(context, method)
            request = next(requests, None)  # only now: a call without a token never had its message read
            if request is None:
                raise Failed(grpc.StatusCode.INVALID_ARGUMENT, "invalid: the call carried no request message")
            running = asyncio.run_coroutine_threadsafe(op(request), self.loop)
            context.add_callback(running.cancel)  # a call that ends first (cancelled, past its deadline)
            result = running.result()
        except Exception as exc:
            if not context.is_active():  # the caller is gone (or the server stopping): nobody to answer
                context.abort(grpc.StatusCode.CANCELLED, "the call ended before its answer")
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
        context.abort(failed.code, failed.detail)
        raise AssertionError("abort returns only by raising")  # pragma: no cover

    def record(self, method: GrpcMethod, code: grpc.StatusCode, started: float) -> None:
        self.metrics.requests.labels(method.route.name, "GRPC", code.name).inc()
        self.metrics.latency.labels(method.route.name, "GRPC").observe(time.perf_counter() - started)

    def _admit(self, context: grpc.ServicerContext, method: GrpcMethod) -> Principal:
        principal = self.principal(context.invocation_metadata())
        if self.members_only and not context.auth_context().get("x509_pem_cert"):
            raise Failed(
                grpc.StatusCode.PERMISSION_DENIED,
                "members_only: this node takes API calls only from cluster members (mutual TLS)",
            )
        if decide(principal, method.route.permission) is Decision.FORBIDDEN:
            raise Failed(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{method.route.name} needs the {method.route.permission!r} permission",
            )
        return principal

    def principal(self, metadata: Any) -> Principal:
        """The caller the bearer token names, verified in this thread (a token verified before
        is in the key store's cache); a token of a key this node has not loaded yet is checked
        again on the loop, after the keys are reloaded from the DB."""
        header = dict(metadata or ()).get("authorization")
        if header is None:
            raise InvalidToken("a bearer token is required (metadata 'authorization')")
        scheme, _, token = str(header).partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise InvalidToken("authorization: expected 'Bearer <token>'")
        try:
            return self.keys.verify(token.strip())
        except InvalidToken as exc:
            if "does not know" not in str(exc):
                raise
        return asyncio.run_coroutine_threadsafe(self.keys.verify_fresh(token.strip()), self.loop).result()


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


class KvServicer:
    """kv's methods: each takes its request message and returns its reply, on the node's loop."""

    def __init__(self, kv: KvService) -> None:
        self.kv = kv

    async def Get(self, request: Any) -> Any:
        entry = await self.kv.read(request.key)
        return pb.Entry(key=entry.key, value=entry.value, revision=entry.revision)

    async def Put(self, request: Any) -> Any:
        expected = request.if_revision if request.HasField("if_revision") else None
        if expected is not None and expected < 0:
            raise InvalidInput(f"if_revision: expected 0 (absent) or a revision, got {expected}")
        revision = await self.kv.write(request.key, request.value, if_revision=expected)
        return pb.PutReply(key=request.key, revision=revision)

    async def Delete(self, request: Any) -> Any:
        expected = request.if_revision if request.HasField("if_revision") else None
        await self.kv.remove(request.key, if_revision=expected)
        return pb.DeleteReply()

    async def List(self, request: Any) -> Any:
        items, more = await self.kv.keys(request.prefix, request.after or None, request.limit or 100)
        return pb.ListReply(items=[pb.KeyRevision(key=e.key, revision=e.revision) for e in items], next=more or "")


class QueueServicer:
    """queue's methods, as :class:`KvServicer`'s."""

    def __init__(self, queue: QueueService) -> None:
        self.queue = queue

    async def Enqueue(self, request: Any) -> Any:
        job = await self.queue.put_job(request.queue, _payload(request.payload_json))
        return pb.EnqueueReply(id=job, queue=request.queue)

    async def Claim(self, request: Any) -> Any:
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

    async def Ack(self, request: Any) -> Any:
        await self.queue.finish(request.queue, request.id, request.lease_id)
        return pb.AckReply()

    async def GetJob(self, request: Any) -> Any:
        state = await self.queue.state(request.queue, request.id)
        return pb.JobState(
            id=state["id"],
            queue=state["queue"],
            state=state["state"],
            attempts=state["attempts"],
            payload_json=json.dumps(state["payload"]),
        )

    async def DeleteJob(self, request: Any) -> Any:
        await self.queue.remove(request.queue, request.id)
        return pb.DeleteJobReply()


def handlers(service: str, servicer: object, gate: Gate) -> grpc.GenericRpcHandler:
    """Every method of ``service`` (of modematrix.proto) served by ``servicer`` through the
    gate, each declared client-streaming (see :class:`Gate`); on the wire a unary call."""
    described = pb.DESCRIPTOR.services_by_name[service]
    methods = {
        m.name: grpc.stream_unary_rpc_method_handler(
            functools.partial(gate.serve, f"/{described.full_name}/{m.name}", getattr(servicer, m.name)),
            request_deserializer=getattr(pb, m.input_type.name).FromString,
            response_serializer=getattr(pb, m.output_type.name).SerializeToString,
        )
        for m in described.methods
    }
    return grpc.method_handlers_generic_handler(described.full_name, methods)


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
) -> grpc.Server | None:
    """A server with kv's and queue's methods for each that runs here; None if neither does.
    Its threads are as many as the calls it takes at once (each waits on the loop)."""
    served = []
    if isinstance(services.get("kv"), KvService):
        served.append(handlers("Kv", KvServicer(services["kv"]), gate))
    if isinstance(services.get("queue"), QueueService):
        served.append(handlers("Queue", QueueServicer(services["queue"]), gate))
    if not served:
        return None
    pool = futures.ThreadPoolExecutor(max_workers=limits.calls, thread_name_prefix="grpc-call")
    server = grpc.server(pool, handlers=served, maximum_concurrent_rpcs=limits.calls, options=limits.options())
    if credentials is None:
        server.add_insecure_port(address)
    else:
        server.add_secure_port(address, credentials)
    return server


async def stop(server: grpc.Server, grace: float) -> None:
    """Stop taking calls; those in flight have ``grace`` seconds to finish (their operations
    run on this loop, which keeps running meanwhile)."""
    stopped = server.stop(grace)
    await asyncio.to_thread(stopped.wait)

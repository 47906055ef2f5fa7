"""The aggregated discovery service (ADS, state of the world) that serves snapshots to Envoys.

One stream per Envoy carries all four kinds. Per kind the stream keeps what was last sent
(version, nonce) and what Envoy asked for (resource names, for routes and endpoints):

- a request whose nonce is not the last one sent is stale: ignored (Envoy repeats itself);
- an ACK (the last nonce, no error) records the version Envoy now runs;
- a NACK (an ``error_detail``) is logged with Envoy's reason; that version is not sent again,
  and Envoy keeps running its last accepted config;
- a new snapshot, or a new set of names, is sent at once to every stream that asked for
  that kind, with the snapshot's content digest as its version.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import grpc.aio
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from runtime.xds.snapshot import TYPE, Snapshot

log = logging.getLogger("runtime.xds")
KIND_OF = {url: kind for kind, url in TYPE.items()}
WILDCARD = ("listener", "cluster")  # Envoy asks for all of these; routes and endpoints by name


@dataclass
class _Kind:
    names: frozenset[str] = frozenset()
    asked: bool = False
    sent_version: str = ""
    sent_nonce: str = ""
    acked_version: str = ""
    nacked_version: str = ""


@dataclass
class StreamState:
    node: str = ""
    kinds: dict[str, _Kind] = field(default_factory=lambda: {k: _Kind() for k in TYPE})


@dataclass(frozen=True)
class Nack:
    node: str
    kind: str
    version: str
    reason: str


class AdsServer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    max_streams = 64  # two Envoys per mode; room for restarts and for more, not for a flood

    def __init__(self, *, require_identity: str | None = None) -> None:
        """``require_identity``: the certificate common name a caller must present (``envoy``)."""
        self.require_identity = require_identity
        self.snapshot: Snapshot | None = None
        self.streams: dict[int, StreamState] = {}
        self.nacks: list[Nack] = []
        self._wakers: set[asyncio.Event] = set()
        self._nonces = itertools.count(1)
        self._stream_ids = itertools.count(1)

    def publish(self, snapshot: Snapshot) -> bool:
        """Serve ``snapshot`` from now on; True if it differs from the one served."""
        if self.snapshot is not None and self.snapshot.version == snapshot.version:
            return False
        self.snapshot = snapshot
        log.info("new config", extra={"fields": {"version": snapshot.version, "streams": len(self.streams)}})
        for waker in self._wakers:
            waker.set()
        return True

    def acked(self) -> dict[str, dict[str, str]]:
        """Per Envoy, the version it runs of each kind (what ``modematrix status`` shows)."""
        return {s.node: {k: v.acked_version for k, v in s.kinds.items()} for s in self.streams.values()}

    async def StreamAggregatedResources(
        self, requests: AsyncIterator[discovery_pb2.DiscoveryRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        refused = self._refused(context)
        if refused:
            log.warning("ADS stream refused", extra={"fields": {"reason": refused}})
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, refused)
        stream_id, state, wake = next(self._stream_ids), StreamState(), asyncio.Event()
        self.streams[stream_id] = state
        self._wakers.add(wake)
        inbox: asyncio.Queue[discovery_pb2.DiscoveryRequest | None] = asyncio.Queue()

        async def read() -> None:
            try:
                async for request in requests:
                    await inbox.put(request)
            finally:
                await inbox.put(None)

        reader = asyncio.ensure_future(read())
        try:
            while True:
                getter = asyncio.ensure_future(inbox.get())
                waiter = asyncio.ensure_future(wake.wait())
                done, pending = await asyncio.wait({getter, waiter}, return_when=asyncio.FIRST_COMPLETED)
                for task in pending:
                    task.cancel()
                if getter in done:
                    request = getter.result()
                    if request is None:
                        return
                    self._take(state, request)
                wake.clear()
                for response in self._due(state):
                    yield response
        finally:
            reader.cancel()
            self._wakers.discard(wake)
            self.streams.pop(stream_id, None)

    def _refused(self, context: grpc.aio.ServicerContext) -> str:
        """Why this caller gets no configuration (empty: it does). Over TLS only an Envoy's
        identity is served (the configuration lists every node's address): another
        certificate of the cluster's CA is refused; and at most ``max_streams`` at once."""
        if len(self.streams) >= self.max_streams:
            return f"too many ADS streams (at most {self.max_streams})"
        if self.require_identity is None:
            return ""
        names = [bytes(n).decode(errors="replace") for n in context.auth_context().get("x509_common_name", [])]
        if names != [self.require_identity]:
            return f"only {self.require_identity!r} identities are served, not {names or 'none'}"
        return ""

    def _take(self, state: StreamState, request: discovery_pb2.DiscoveryRequest) -> None:
        kind = KIND_OF.get(request.type_url)
        if kind is None:
            log.warning("unknown type requested", extra={"fields": {"type_url": request.type_url}})
            return
        state.node = state.node or request.node.id
        entry = state.kinds[kind]
        if request.response_nonce and request.response_nonce != entry.sent_nonce:
            return  # stale: answers a response we have since replaced
        if request.response_nonce and request.HasField("error_detail"):
            nack = Nack(state.node, kind, entry.sent_version, request.error_detail.message)
            entry.nacked_version = entry.sent_version
            self.nacks.append(nack)
            del self.nacks[:-100]
            log.error(
                "Envoy rejected a config; it keeps its last accepted one",
                extra={"fields": {"node": nack.node, "kind": kind, "version": nack.version, "reason": nack.reason}},
            )
        elif request.response_nonce:
            entry.acked_version = request.version_info
        entry.asked = True
        names = frozenset(request.resource_names)
        if names != entry.names:
            entry.names = names
            entry.sent_version = ""  # a new set of names is answered even at the same version

    def _due(self, state: StreamState) -> list[discovery_pb2.DiscoveryResponse]:
        snapshot = self.snapshot
        if snapshot is None:
            return []
        due = []
        for kind, entry in state.kinds.items():
            if not entry.asked or snapshot.version in (entry.sent_version, entry.nacked_version):
                continue
            if kind not in WILDCARD and not entry.names:
                continue
            entry.sent_version, entry.sent_nonce = snapshot.version, str(next(self._nonces))
            due.append(
                discovery_pb2.DiscoveryResponse(
                    version_info=snapshot.version,
                    resources=snapshot.of(TYPE[kind], () if kind in WILDCARD else entry.names),
                    type_url=TYPE[kind],
                    nonce=entry.sent_nonce,
                )
            )
        return due


async def serve(ads: AdsServer, address: str, credentials: grpc.ServerCredentials | None = None) -> grpc.aio.Server:
    """Start a gRPC server for ``ads`` on ``address`` (``0.0.0.0:18000``); mutual TLS when
    ``credentials`` are given (Envoys present their node certificates)."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_allowed_incoming_connections", ads.max_streams),
            ("grpc.server_handshake_timeout_ms", 10_000),
            ("grpc.max_concurrent_streams", 8),
        ]
    )
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(ads, server)
    if credentials is None:
        server.add_insecure_port(address)
    else:
        server.add_secure_port(address, credentials)
    await server.start()
    return server

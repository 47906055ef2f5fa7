"""Forwarding from an ingress to the peers that run a service (the scaled mode).

Peers are a static list of fixed addresses per service. A background loop checks each
peer's ``/readyz``; requests go round-robin over the healthy ones, falling back to the
others only when none is healthy. Retrying is :func:`runtime.retry.may_retry`:

- the connection was never made: nothing was sent, try the next peer whatever the method;
- it failed after the request left: only an idempotent route is retried; otherwise the
  client gets 503 ``outcome_unknown``, because the peer may have applied it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
from starlette.requests import Request
from starlette.responses import Response

from runtime import http
from runtime.metrics import Metrics
from runtime.retry import Outcome, may_retry

log = logging.getLogger("runtime.proxy")
FORWARD_HEADERS = ("authorization", "content-type", "if-match", "if-none-match", "x-request-id")
RETURN_HEADERS = ("content-type", "etag", "retry-after", "www-authenticate", "allow", "x-request-id")


@dataclass
class Peer:
    service: str
    address: str
    healthy: bool = True
    last_error: str = ""


def order(peers: list[Peer], start: int) -> list[Peer]:
    """Healthy peers first, rotated by ``start`` for round-robin, then the rest.

    >>> ps = [Peer("kv", "a:1"), Peer("kv", "b:1", healthy=False), Peer("kv", "c:1")]
    >>> [p.address for p in order(ps, 1)]
    ['c:1', 'a:1', 'b:1']
    """
    healthy = [p for p in peers if p.healthy]
    rest = [p for p in peers if not p.healthy]
    if healthy:
        k = start % len(healthy)
        healthy = healthy[k:] + healthy[:k]
    return healthy + rest


class PeerPool:
    def __init__(
        self,
        peers: Mapping[str, tuple[str, ...]],
        *,
        scheme: str,
        ssl_context: ssl.SSLContext | None,
        metrics: Metrics,
        timeout: float = 10.0,
    ) -> None:
        self.peers = {s: [Peer(s, a) for a in addresses] for s, addresses in peers.items()}
        self.scheme, self.metrics = scheme, metrics
        self._counters = {s: itertools.count() for s in peers}
        # aiohttp keeps one queue of idle connections per peer: a request's cost does not grow
        # with the pool (httpx checked every pooled connection on every request).
        connector = aiohttp.TCPConnector(ssl=ssl_context or False, limit=256, keepalive_timeout=30)
        self._client = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=1.0),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
        )
        # aiohttp resends a PUT or DELETE once when a pooled connection drops, with no public
        # switch (aio-libs/aiohttp#10790): a write a peer applied could be applied twice, and
        # the resend's refused connection then read as "nothing sent". Retrying is decided here.
        if not hasattr(self._client, "_retry_connection"):
            raise RuntimeError("aiohttp no longer has _retry_connection; check that it does not resend writes")
        self._client._retry_connection = False

    async def close(self) -> None:
        await self._client.close()

    def summary(self) -> dict[str, dict[str, int]]:
        return {s: {"healthy": sum(p.healthy for p in ps), "total": len(ps)} for s, ps in self.peers.items()}

    async def forward(self, service: str, request: Request, body: bytes, *, idempotent: bool, client: str) -> Response:
        headers = {h: request.headers[h] for h in FORWARD_HEADERS if h in request.headers}
        headers["x-forwarded-for"] = client
        target = _raw_target(request)
        failures: list[str] = []
        for peer in order(self.peers[service], next(self._counters[service])):
            url = f"{self.scheme}://{peer.address}{target}"
            try:
                async with self._client.request(request.method, url, headers=headers, data=body) as reply:
                    content = await reply.read()
                    status, returned = reply.status, {h: reply.headers[h] for h in RETURN_HEADERS if h in reply.headers}
            except (aiohttp.ClientError, TimeoutError) as exc:
                failures.append(f"{peer.address}: {type(exc).__name__}")
                peer.healthy = False
                sent = not isinstance(exc, aiohttp.ClientConnectorError)
                if not may_retry(Outcome.LOST if sent else Outcome.NOT_SENT, idempotent=idempotent):
                    self.metrics.forwarded.labels(service, "unknown").inc()
                    return http.error(
                        503,
                        "outcome_unknown",
                        f"{service} peer {peer.address} failed after the request was sent; "
                        "it may or may not have been applied",
                        {"Retry-After": "1"},
                    )
                continue
            self.metrics.forwarded.labels(service, "ok").inc()
            return Response(content, status_code=status, headers=returned)
        self.metrics.forwarded.labels(service, "unavailable").inc()
        return http.error(
            503, "not_applied", f"no {service} peer took the request: {'; '.join(failures)}", {"Retry-After": "1"}
        )

    async def check_once(self) -> None:
        async def check(peer: Peer) -> None:
            try:
                url = f"{self.scheme}://{peer.address}/readyz"
                async with self._client.get(url, timeout=aiohttp.ClientTimeout(total=2.0)) as reply:
                    await reply.read()
                    healthy, error = reply.status == 200, "" if reply.status == 200 else f"HTTP {reply.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                healthy, error = False, type(exc).__name__
            if healthy != peer.healthy:
                log.info(
                    "peer health changed",
                    extra={
                        "fields": {"peer": peer.address, "service": peer.service, "healthy": healthy, "error": error}
                    },
                )
            peer.healthy, peer.last_error = healthy, error

        await asyncio.gather(*(check(p) for ps in self.peers.values() for p in ps))
        for service, peers in self.peers.items():
            self.metrics.peers_healthy.labels(service).set(sum(p.healthy for p in peers))

    async def check_forever(self, interval: float = 1.0) -> None:
        while True:
            await self.check_once()
            await asyncio.sleep(interval)


def _raw_target(request: Request) -> str:
    """The path as the client sent it, still percent-encoded, so the peer decodes it once,
    exactly as a node that serves the call itself does (``dd%2541`` is the key ``dd%41`` in
    every mode, not ``ddA`` behind an ingress)."""
    raw = request.scope.get("raw_path") or request.url.path.encode()
    query = request.scope.get("query_string") or b""
    return raw.decode("latin-1") + (f"?{query.decode('latin-1')}" if query else "")

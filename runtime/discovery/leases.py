"""Discovery through the DB: each service node registers itself under a lease, and
:class:`DbLeaseSource` turns the registrations into endpoints for the xDS control plane.

A registration is ``/modematrix/_discovery/<service>/<node>`` = ``{"node", "service", "host",
"port", "version", "ready"}``, written with a lease of :data:`TTL` seconds that the node renews
every second. A node that dies stops renewing, and its keys vanish within the TTL. A node
that drains revokes its lease first (its keys vanish at once), waits until the balancers
have heard, then stops taking work.

The Kubernetes mode's source is :mod:`runtime.discovery.endpointslices`, with the same output.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable

from runtime.discovery.base import Endpoint, parse, record
from runtime.exceptions import StorageUnavailable
from runtime.storage.etcd import EtcdBackend

log = logging.getLogger("runtime.discovery")
NAMESPACE = "_discovery"
TTL = 3  # seconds: a dead node is out of every balancer within this (plus one health check)
RENEW_EVERY = 1.0


class Registrar:
    """Keeps this node's registrations alive for as long as it runs; withdraws them on drain."""

    def __init__(self, backend: EtcdBackend, endpoints: Iterable[Endpoint], ttl: int = TTL) -> None:
        self.backend, self.endpoints, self.ttl = backend, list(endpoints), ttl
        self.lease: int | None = None
        self.withdrawn = asyncio.Event()

    async def run(self) -> None:
        while not self.withdrawn.is_set():
            try:
                await self._register()
                while not self.withdrawn.is_set():
                    await asyncio.sleep(RENEW_EVERY)
                    if self.lease is None or await self.backend.keep_alive(self.lease) == 0:
                        log.warning("registration lease expired; registering again")
                        break
            except StorageUnavailable as exc:
                log.warning("could not renew this node's registration", extra={"fields": {"error": str(exc)}})
                await asyncio.sleep(0.5)

    async def _register(self) -> None:
        lease = await self.backend.grant(self.ttl)
        for endpoint in self.endpoints:
            await self.backend.put_leased(NAMESPACE, f"{endpoint.service}/{endpoint.node}", record(endpoint), lease)
        self.lease = lease
        log.info(
            "registered", extra={"fields": {"lease": f"{lease:x}", "services": [e.service for e in self.endpoints]}}
        )

    async def withdraw(self) -> None:
        """Revoke the lease: every registration of this node is gone at once."""
        self.withdrawn.set()
        if self.lease is None:
            return
        try:
            await self.backend.revoke(self.lease)
            log.info("withdrew this node's registrations", extra={"fields": {"lease": f"{self.lease:x}"}})
        except StorageUnavailable as exc:  # they expire within the TTL anyway
            log.warning("could not withdraw; registrations expire by themselves", extra={"fields": {"error": str(exc)}})


class DbLeaseSource:
    """Registrations under the DB's leases, re-read on every change under the prefix."""

    def __init__(self, backend: EtcdBackend) -> None:
        self.backend = backend

    async def current(self) -> list[Endpoint]:
        entries = await self.backend.range(NAMESPACE, "", None, 10_000)
        found = [parse(e.value) for e in entries]
        return [e for e in found if e is not None]

    async def watch(self) -> AsyncIterator[list[Endpoint]]:
        last: list[Endpoint] | None = None
        async for _ in self.backend.prefix_changes(NAMESPACE, ""):
            try:
                now = await self.current()
            except StorageUnavailable as exc:
                log.warning("could not read registrations", extra={"fields": {"error": str(exc)}})
                continue
            if now != last:
                last = now
                yield now

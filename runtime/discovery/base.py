"""Which service nodes exist, as the xDS control plane needs them: the :class:`Endpoint`,
its record in the DB, and the :class:`EndpointSource` seam that the DB's leases
(:mod:`runtime.discovery.leases`) and Kubernetes' EndpointSlices
(:mod:`runtime.discovery.endpointslices`) both implement, with the same output.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("runtime.discovery")


@dataclass(frozen=True)
class Endpoint:
    """One service node as discovery knows it."""

    node: str
    service: str
    host: str
    port: int
    ready: bool = True
    version: str = ""
    grpc_port: int = 0  # 0: no gRPC API on this node
    tls_name: str = ""  # the name its certificate carries, which Envoy checks (empty: ``node``)

    @property
    def verified_as(self) -> str:
        return self.tls_name or self.node


def record(endpoint: Endpoint) -> bytes:
    """One registration's value, keys sorted (the same endpoint, the same bytes).

    >>> record(Endpoint("kv-1", "kv", "10.0.0.5", 8443, True, "0.1.0", 8445))[:38]
    b'{"grpc_port": 8445, "host": "10.0.0.5"'
    """
    fields = {
        "node": endpoint.node,
        "service": endpoint.service,
        "host": endpoint.host,
        "port": endpoint.port,
        "version": endpoint.version,
        "ready": endpoint.ready,
        "grpc_port": endpoint.grpc_port,
    }
    return json.dumps(fields, sort_keys=True).encode()


def parse(value: bytes) -> Endpoint | None:
    """A registration, or None for one this version cannot read (logged, skipped)."""
    try:
        data = json.loads(value)
        return Endpoint(
            str(data["node"]),
            str(data["service"]),
            str(data["host"]),
            int(data["port"]),
            bool(data.get("ready", True)),
            str(data.get("version", "")),
            int(data.get("grpc_port", 0)),
        )
    except (ValueError, KeyError, TypeError):
        log.warning(
            "unreadable registration skipped", extra={"fields": {"value": value[:200].decode(errors="replace")}}
        )
        return None


class EndpointSource(Protocol):
    def watch(self) -> AsyncIterator[list[Endpoint]]:
        """The current endpoints, then again after every change."""

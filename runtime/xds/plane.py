"""The ``xds`` role: discovery's endpoints in, snapshots out, served to every Envoy over ADS
with mutual TLS (Envoys present their node certificates; a renewed certificate of this node
is picked up for new connections)."""

from __future__ import annotations

import logging
from pathlib import Path

from runtime.discovery import EndpointSource
from runtime.security.grpc_tls import server_credentials
from runtime.xds.server import AdsServer, serve
from runtime.xds.snapshot import Tls, build, inconsistencies

log = logging.getLogger("runtime.xds")
ENVOY_IDENTITY = "envoy"  # an Envoy node's certificate common name (its service set, runtime.storage.etcd_auth)


async def run_control_plane(
    source: EndpointSource,
    *,
    port: int,
    envoy_port: int,
    tls_directory: Path | None,
    ads: AdsServer | None = None,
) -> None:
    """Serve until cancelled. ``tls_directory``: this node's certificate files; the same path
    holds each Envoy's own on its node (one image, one layout)."""
    credentials = None
    tls = None
    if tls_directory is not None:
        credentials = server_credentials(tls_directory, require_client_auth=True)
        tls = Tls(str(tls_directory))
    ads = ads or AdsServer(require_identity=ENVOY_IDENTITY if tls is not None else None)
    server = await serve(ads, f"0.0.0.0:{port}", credentials)
    log.info("xDS control plane listening", extra={"fields": {"port": port, "tls": tls is not None}})
    try:
        async for endpoints in source.watch():
            made = build(endpoints, port=envoy_port, tls=tls)
            missing = inconsistencies(made)
            if missing:  # a bug of ours: Envoys keep their last config rather than take a broken one
                log.error("inconsistent snapshot not served", extra={"fields": {"problems": missing}})
                continue
            ads.publish(made)
    finally:
        await server.stop(1)

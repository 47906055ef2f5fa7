"""The ``xds`` role: discovery's endpoints in, snapshots out, served to every Envoy over ADS
with mutual TLS (Envoys present their node certificates; a renewed certificate of this node
is picked up for new connections)."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc

from runtime.discovery import EndpointSource
from runtime.xds.server import AdsServer, serve
from runtime.xds.snapshot import Tls, build

log = logging.getLogger("runtime.xds")


def _credentials(cert_file: Path, key_file: Path, ca_file: Path) -> grpc.ServerCredentials:
    """Server credentials that re-read the files when they change (certificate renewal)."""
    state = {"stamp": 0.0}

    def configuration() -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(key_file.read_bytes(), cert_file.read_bytes())], root_certificates=ca_file.read_bytes()
        )

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        stamp = cert_file.stat().st_mtime
        if stamp == state["stamp"]:
            return None
        state["stamp"] = stamp
        return configuration()

    state["stamp"] = cert_file.stat().st_mtime
    return grpc.dynamic_ssl_server_credentials(configuration(), fetch, require_client_authentication=True)


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
    ads = ads or AdsServer()
    credentials = None
    tls = None
    if tls_directory is not None:
        credentials = _credentials(tls_directory / "node.pem", tls_directory / "node-key.pem", tls_directory / "ca.pem")
        tls = Tls(str(tls_directory))
    server = await serve(ads, f"0.0.0.0:{port}", credentials)
    log.info("xDS control plane listening", extra={"fields": {"port": port, "tls": tls is not None}})
    try:
        async for endpoints in source.watch():
            ads.publish(build(endpoints, port=envoy_port, tls=tls))
    finally:
        await server.stop(1)

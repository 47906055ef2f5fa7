"""gRPC server credentials from a node's certificate files, for every gRPC server of the
runtime (the xDS control plane, the kv and queue API)."""

from __future__ import annotations

from pathlib import Path

import grpc


def server_credentials(directory: Path, *, require_client_auth: bool) -> grpc.ServerCredentials:
    """TLS with ``directory``'s node.pem / node-key.pem, clients checked against its ca.pem.
    The files are re-read when the certificate changes (renewal): new connections get the new
    certificate, nothing restarts. ``require_client_auth``: a client certificate of the CA is
    required (gRPC's Python API cannot ask for one without requiring it)."""
    cert_file, key_file, ca_file = directory / "node.pem", directory / "node-key.pem", directory / "ca.pem"
    state = {"stamp": cert_file.stat().st_mtime}

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

    return grpc.dynamic_ssl_server_credentials(
        configuration(), fetch, require_client_authentication=require_client_auth
    )

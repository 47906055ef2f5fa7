"""This node's certificate: issued from the cluster CA, written to disk, renewed in place.

The same two ``SSLContext`` objects live for the whole process; renewal calls
``load_cert_chain`` on them, which affects new handshakes only, so open connections keep
going and nothing restarts.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from runtime.files import write_atomic
from runtime.security import tls

log = logging.getLogger("runtime.security")


class NodeCertificate:
    def __init__(
        self,
        ca: tls.KeyPair,
        node_name: str,
        names: list[str],
        lifetime: float,
        directory: Path,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ca, self.node_name, self.names = ca, node_name, names
        self.lifetime = timedelta(seconds=lifetime)
        self.directory, self._clock = directory, clock
        self.ca_file = directory / "ca.pem"
        self.cert_file = directory / "node.pem"
        self.key_file = directory / "node-key.pem"
        self.current: tls.KeyPair | None = None
        self.server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)

    def issue(self) -> tls.KeyPair:
        """Issue a fresh certificate and make both contexts use it for new handshakes."""
        now = datetime.fromtimestamp(self._clock(), UTC)
        pair = tls.issue_node_cert(self.ca, self.node_name, self.names, now, self.lifetime)
        write_atomic(self.ca_file, self.ca.cert_pem, mode=0o644)  # certificates are public
        write_atomic(self.cert_file, pair.cert_pem + self.ca.cert_pem, mode=0o644)
        write_atomic(self.key_file, pair.key_pem, mode=0o600)
        first = self.current is None
        if first:
            self._configure_contexts()
        for context in (self.server_context, self.client_context):
            context.load_cert_chain(self.cert_file, self.key_file)
        self.current = pair
        log.info(
            "issued node certificate",
            extra={
                "fields": {
                    "serial": f"{pair.cert.serial_number:x}",
                    "not_after": pair.cert.not_valid_after_utc.isoformat(),
                    "renew_at": tls.renewal_time(pair.cert).isoformat(),
                }
            },
        )
        return pair

    def _configure_contexts(self) -> None:
        server = self.server_context
        server.minimum_version = ssl.TLSVersion.TLSv1_2
        server.load_verify_locations(self.ca_file)
        server.verify_mode = ssl.CERT_OPTIONAL  # clients may present a member certificate
        client = self.client_context
        client.minimum_version = ssl.TLSVersion.TLSv1_2
        client.load_verify_locations(self.ca_file)
        client.check_hostname = True
        client.verify_mode = ssl.CERT_REQUIRED

    def seconds_until_renewal(self) -> float:
        if self.current is None:
            return 0.0
        return max(0.0, tls.renewal_time(self.current.cert).timestamp() - self._clock())

    async def renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.seconds_until_renewal())
            try:
                self.issue()
            except Exception:  # keep serving on the old certificate; try again soon
                log.exception("certificate renewal failed; retrying in 5 s")
                await asyncio.sleep(5)

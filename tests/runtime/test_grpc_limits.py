"""What one client can hold of a node's gRPC port, against a real node over TLS: a cap on
connections, a deadline for the TLS handshake, an idle connection's end, streams per
connection, and a call without a token refused before its message is read (a raw HTTP/2
client, so the test controls every frame)."""

from __future__ import annotations

import socket
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest

from tests.conftest import RuntimeProcess
from topologies.wait import wait_until

pytestmark = pytest.mark.timeout(120)
LIMITS = {"RUNTIME_MAX_CONNECTIONS": "8", "RUNTIME_HANDSHAKE_TIMEOUT": "1s", "RUNTIME_IDLE_TIMEOUT": "2s"}


@pytest.fixture(scope="module")
def node() -> Iterator[RuntimeProcess]:
    with tempfile.TemporaryDirectory() as root:
        proc = RuntimeProcess(Path(root) / "node", env=LIMITS).start().wait_ready()
        try:
            yield proc
        finally:
            proc.terminate()


def closed(sock: socket.socket) -> bool:
    """True once the peer has closed (EOF or reset); False while it keeps the connection."""
    sock.settimeout(0.05)
    try:
        return sock.recv(65536) == b""
    except TimeoutError:
        return False
    except (ConnectionResetError, ssl.SSLError, OSError):
        return True


class H2:
    """A TLS + HTTP/2 client connection that the test drives frame by frame."""

    def __init__(self, node: RuntimeProcess) -> None:
        context = ssl.create_default_context(cafile=str(node.ca_file))
        context.set_alpn_protocols(["h2"])
        raw = socket.create_connection(("127.0.0.1", node.grpc_port), timeout=5)
        self.sock = context.wrap_socket(raw, server_hostname="localhost")
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.flush()
        self.events: list[h2.events.Event] = []

    def flush(self) -> None:
        self.sock.sendall(self.conn.data_to_send())

    def read(self) -> list[h2.events.Event]:
        self.sock.settimeout(0.2)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return self.events
        self.events += self.conn.receive_data(data)
        self.flush()
        return self.events

    def close(self) -> None:
        self.sock.close()


def test_a_call_without_a_token_is_refused_before_its_message_arrives(node: RuntimeProcess) -> None:
    """The message is declared 1,000,000 bytes long and only 16 KiB of it is ever sent: the
    node answers UNAUTHENTICATED (16) from the headers alone. Before, it waited for the whole
    message (and held it) before it looked at the token."""
    client = H2(node)
    try:
        headers = [
            (":method", "POST"),
            (":scheme", "https"),
            (":path", "/modematrix.v1.Kv/Put"),
            (":authority", "localhost"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
        client.conn.send_headers(1, headers)
        client.conn.send_data(1, b"\x00" + (1_000_000).to_bytes(4, "big") + b"\x00" * 16_000)
        client.flush()

        def refused() -> str | None:
            for event in client.read():
                if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                    found = dict((bytes(k), bytes(v)) for k, v in event.headers)
                    if b"grpc-status" in found:
                        return found[b"grpc-status"].decode()
            return None

        assert wait_until(refused, timeout=10, interval=0.05, message="the call refused") == "16"
    finally:
        client.close()


def test_streams_per_connection_are_capped(node: RuntimeProcess) -> None:
    client = H2(node)
    try:

        def advertised() -> int | None:
            for event in client.read():
                if isinstance(event, h2.events.RemoteSettingsChanged):
                    changed = event.changed_settings.get(h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS)
                    if changed is not None:
                        return int(changed.new_value)
            return None

        assert wait_until(advertised, timeout=10, interval=0.05, message="the node's SETTINGS") == 32
    finally:
        client.close()


def test_a_silent_connection_is_closed_at_the_handshake_deadline(node: RuntimeProcess) -> None:
    sock = socket.create_connection(("127.0.0.1", node.grpc_port), timeout=5)  # TCP only, no TLS hello
    try:
        wait_until(lambda: closed(sock), timeout=15, interval=0.1, message="the silent connection closed")
    finally:
        sock.close()


def test_an_idle_connection_is_closed(node: RuntimeProcess) -> None:
    client = H2(node)  # handshake and HTTP/2 preface done, then no call
    try:
        wait_until(lambda: closed(client.sock), timeout=20, interval=0.1, message="the idle connection closed")
    finally:
        client.close()


def test_connections_over_the_cap_are_refused(node: RuntimeProcess) -> None:
    held = [H2(node) for _ in range(8)]  # the cap (RUNTIME_MAX_CONNECTIONS)
    try:
        extra = socket.create_connection(("127.0.0.1", node.grpc_port), timeout=5)
        try:
            wait_until(lambda: closed(extra), timeout=5, interval=0.05, message="the ninth connection refused")
        finally:
            extra.close()
    finally:
        for client in held:
            client.close()

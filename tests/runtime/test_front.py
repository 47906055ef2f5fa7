"""The balancers' port (PROXY protocol v2, then TLS) and the handshake deadline, against a
real runtime process: which client address the runtime sees, and who may claim one."""

from __future__ import annotations

import json
import socket
import ssl
import struct
from collections.abc import Iterator

import pytest

from runtime.front import SIGNATURE, ProxyHeaderError, parse_v2
from tests.conftest import RuntimeProcess, free_port, running, trust


def header(source: str, port: int, *, local: bool = False) -> bytes:
    if local:
        return SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", 0)
    body = socket.inet_aton(source) + socket.inet_aton("127.0.0.1") + struct.pack("!HH", port, 8443)
    return SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body


def test_headers_that_are_not_a_balancers_are_refused() -> None:
    assert parse_v2(header("198.51.100.4", 5000)) == ("198.51.100.4", 5000)
    for bad in (
        b"GET / HTTP/1.1\r\n\r\n",
        SIGNATURE + bytes([0x11, 0x11, 0, 0]),
        SIGNATURE + bytes([0x21, 0x31, 0, 0]),
    ):
        with pytest.raises(ProxyHeaderError):
            parse_v2(bad)
    with pytest.raises(ProxyHeaderError, match="shorter than its length"):
        parse_v2(SIGNATURE + bytes([0x21, 0x11, 0, 12]) + b"\x01\x02")


@pytest.fixture(scope="module")
def behind() -> Iterator[RuntimeProcess]:
    """A node that trusts loopback as its balancer, with a 1 s handshake deadline."""
    port = free_port()
    env = {"RUNTIME_PROXY_PORT": str(port), "RUNTIME_TRUSTED_PROXIES": "127.0.0.1", "RUNTIME_HANDSHAKE_TIMEOUT": "1s"}
    with running(env, prefix="rt-front-") as proc:
        proc.proxy_port = port  # type: ignore[attr-defined]
        yield proc


def _get_via_proxy(proc: RuntimeProcess, prefix: bytes, path: str) -> bytes:
    context = trust(proc.ca_file)
    with socket.create_connection(("127.0.0.1", proc.proxy_port), timeout=10) as raw:  # type: ignore[attr-defined]
        raw.sendall(prefix)
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
            reply = b""
            while chunk := tls.recv(65536):
                reply += chunk
    return reply


def _logged_clients(proc: RuntimeProcess) -> list[str]:
    records = [json.loads(line) for line in proc.log_file.read_text().splitlines() if line.startswith("{")]
    return [r["client"] for r in records if r.get("msg") == "request" and r.get("status") == 404]


def test_the_client_address_comes_from_the_balancers_header(behind: RuntimeProcess) -> None:
    reply = _get_via_proxy(behind, header("203.0.113.7", 40000), "/no-such-path-1")
    assert reply.startswith(b"HTTP/1.1 404"), reply[:100]
    assert "203.0.113.7" in _logged_clients(behind)
    local = _get_via_proxy(behind, header("", 0, local=True), "/no-such-path-2")  # a health check: its own address
    assert local.startswith(b"HTTP/1.1 404")
    assert _logged_clients(behind)[-1] == "127.0.0.1"


def test_the_api_port_never_reads_a_header_so_no_client_can_claim_an_address(behind: RuntimeProcess) -> None:
    with socket.create_connection(("127.0.0.1", behind.port), timeout=10) as raw:
        raw.sendall(header("192.0.2.66", 1))
        with pytest.raises((ssl.SSLError, ConnectionError)):
            trust(behind.ca_file).wrap_socket(raw, server_hostname="localhost").sendall(b"GET / HTTP/1.1\r\n\r\n")
    assert "192.0.2.66" not in _logged_clients(behind)


def test_a_trusted_connection_without_a_header_is_closed(behind: RuntimeProcess) -> None:
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _get_via_proxy(behind, b"", "/x")


def test_the_balancers_port_refuses_untrusted_addresses() -> None:
    port = free_port()
    env = {"RUNTIME_PROXY_PORT": str(port), "RUNTIME_TRUSTED_PROXIES": "10.255.255.1"}
    with running(env, prefix="rt-front-") as proc:
        proc.proxy_port = port  # type: ignore[attr-defined]
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _get_via_proxy(proc, header("203.0.113.9", 1), "/x")
        assert "203.0.113.9" not in _logged_clients(proc)
        assert "not a trusted proxy" in proc.log_file.read_text()


def test_a_connection_that_never_starts_its_handshake_is_closed(behind: RuntimeProcess) -> None:
    """1 s here; the event loop's default, before this setting, was 60 s."""
    with socket.create_connection(("127.0.0.1", behind.port), timeout=30) as raw:
        assert raw.recv(1) == b""  # closed by the server

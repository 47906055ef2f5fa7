"""Connections cannot pile up: a cap on open connections and an idle timer from the start
(1,000 idle TLS connections once held 322 MiB of a node), and deadlines for a request's
headers and body (300 connections that sent half a request line once held every slot)."""

from __future__ import annotations

import socket
import ssl
import tempfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest

from tests.conftest import RuntimeProcess, trust
from topologies.wait import wait_until


@pytest.fixture(scope="module")
def server() -> Iterator[RuntimeProcess]:
    env = {
        "RUNTIME_MAX_CONNECTIONS": "10",
        "RUNTIME_IDLE_TIMEOUT": "1s",
        "RUNTIME_HEADER_TIMEOUT": "1s",
        "RUNTIME_BODY_TIMEOUT": "2s",
    }
    with tempfile.TemporaryDirectory(prefix="rt-conn-") as root:
        proc = RuntimeProcess(Path(root) / "node", env=env).start().wait_ready()
        yield proc
        proc.kill()


def _idle_tls(server: RuntimeProcess, context: ssl.SSLContext) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    tls = context.wrap_socket(raw, server_hostname="127.0.0.1")
    tls.setblocking(False)
    return tls


def _closed(tls: ssl.SSLSocket) -> bool:
    try:
        return tls.recv(1) == b""
    except (ssl.SSLWantReadError, BlockingIOError):
        return False
    except OSError:
        return True


def test_connections_over_the_cap_and_idle_ones_are_closed(server: RuntimeProcess) -> None:
    context = trust(server.ca_file)
    idle = [_idle_tls(server, context) for _ in range(15)]
    try:
        wait_until(
            lambda: sum(_closed(t) for t in idle) >= 5,
            timeout=5,
            interval=0.05,
            message="the 5 connections over the cap of 10 are closed",
        )
        wait_until(
            lambda: all(_closed(t) for t in idle),
            timeout=10,
            interval=0.1,
            message="connections that never sent a request are closed after the 1 s idle timeout",
        )
    finally:
        for tls in idle:
            tls.close()
    reply = httpx.get(server.url + "/readyz", verify=context, timeout=10)
    assert reply.status_code == 200, "the node still serves"


def _sent(server: RuntimeProcess, context: ssl.SSLContext, data: bytes) -> ssl.SSLSocket:
    tls = _idle_tls(server, context)
    tls.setblocking(True)
    tls.sendall(data)
    tls.setblocking(False)
    return tls


def test_a_request_that_never_finishes_its_headers_or_body_is_closed(server: RuntimeProcess) -> None:
    """Half a request line (slowloris), and a body that stops short of its Content-Length: each
    connection is closed at its deadline while a normal client is still served."""
    context = trust(server.ca_file)
    half_line = _sent(server, context, b"GET /readyz HT")
    half_body = _sent(server, context, b'POST /v1/auth/login HTTP/1.1\r\nHost: n\r\nContent-Length: 100\r\n\r\n{"user')
    try:
        for name, tls in (("half a request line", half_line), ("a body short of its length", half_body)):
            wait_until(partial(_closed, tls), timeout=10, interval=0.05, message=f"{name}: closed")
    finally:
        half_line.close()
        half_body.close()
    assert httpx.get(server.url + "/readyz", verify=context, timeout=10).status_code == 200

"""The ingress hop against a real peer socket: a write is sent once, whatever the client
library would like to do, and what the peer may have applied is reported as unknown."""

from __future__ import annotations

import asyncio

import pytest
from starlette.requests import Request

from runtime.metrics import Metrics
from runtime.proxy import PeerPool

pytestmark = pytest.mark.anyio


async def _peer_that_applies_and_hangs_up() -> tuple[asyncio.Server, list[bytes], int]:
    """Answers the first request (so the connection is pooled), then reads each later request
    and closes the connection without a response: the write was received, the answer lost."""
    received: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(
                next((h.split(b":")[1] for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")), b"0")
            )
            await reader.readexactly(length)
            received.append(head.split(b" ", 2)[0])
            if len(received) == 1:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
                continue
            writer.close()
            return

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, received, server.sockets[0].getsockname()[1]


def _request(method: str, path: str) -> Request:
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [],
    }
    return Request(scope)


async def test_a_put_the_peer_took_and_never_answered_is_sent_once_and_unknown() -> None:
    server, received, port = await _peer_that_applies_and_hangs_up()
    pool = PeerPool({"kv": (f"127.0.0.1:{port}",)}, scheme="http", ssl_context=None, metrics=Metrics())
    try:
        first = await pool.forward("kv", _request("PUT", "/v1/kv/a"), b"1", idempotent=False, client="c")
        assert first.status_code == 200
        second = await pool.forward("kv", _request("PUT", "/v1/kv/a"), b"2", idempotent=False, client="c")
        assert second.status_code == 503 and b"outcome_unknown" in second.body
        assert received == [b"PUT", b"PUT"], f"the peer saw {received}: a write was sent twice"
    finally:
        await pool.close()
        server.close()

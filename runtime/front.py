"""The balancers' port: the PROXY protocol header, then TLS, then uvicorn's HTTP protocol.

A TCP balancer (HAProxy in pass-through) hides the client's address: every connection comes
from the balancer. With ``send-proxy-v2`` it sends the client's address first, in a binary
header, before the client's TLS bytes. This port (``proxy_port``) takes connections only
from ``trusted_proxies``, and each must start with that header; the API port never reads
one, so no client can claim an address. The header is read with exact-size buffers
(``BufferedProtocol``), and reading pauses inside the callback that completes it, so not
one byte of the TLS stream is consumed before the handshake starts on the same transport.
The header and the handshake together have a deadline (``handshake_timeout``).

    >>> parse_v2(SIGNATURE + bytes([0x21, 0x11, 0, 12]) + bytes([203, 0, 113, 7, 10, 0, 0, 5, 0x1F, 0x90, 0x20, 0xFB]))
    ('203.0.113.7', 8080)
    >>> parse_v2(SIGNATURE + bytes([0x20, 0x00, 0, 0])) is None   # LOCAL: a health check, no client
    True
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("runtime.http")
SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_FIXED = 16  # signature (12), version and command, family, length (2)
_MAX_HEADER = 2048  # addresses and a few TLVs; anything longer is not a balancer's header


class ProxyHeaderError(ValueError):
    pass


def parse_v2(header: bytes) -> tuple[str, int] | None:
    """The client's (address, port) from a complete PROXY v2 header, or None for LOCAL
    (the balancer's own connection, such as a health check). Raises ProxyHeaderError."""
    if len(header) < _FIXED or header[:12] != SIGNATURE:
        raise ProxyHeaderError("not a PROXY protocol v2 header")
    version, command = header[12] >> 4, header[12] & 0x0F
    if version != 2 or command not in (0, 1):
        raise ProxyHeaderError(f"PROXY v2: version {version} command {command}")
    length = int.from_bytes(header[14:16], "big")
    body = header[_FIXED : _FIXED + length]
    if len(body) != length:
        raise ProxyHeaderError("PROXY v2: header shorter than its length")
    if command == 0:
        return None
    family = header[13] >> 4
    if family == 1 and length >= 12:
        return str(ipaddress.IPv4Address(body[0:4])), int.from_bytes(body[8:10], "big")
    if family == 2 and length >= 36:
        return str(ipaddress.IPv6Address(body[0:16])), int.from_bytes(body[32:34], "big")
    raise ProxyHeaderError(f"PROXY v2: unsupported address family {family}")


def trusted_networks(entries: Iterable[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(e, strict=False) for e in entries)


class _Addressed:
    """The TLS transport, reporting the client's address from the PROXY header as its peer."""

    def __init__(self, transport: asyncio.Transport, peer: tuple[str, int]) -> None:
        self._transport, self._peer = transport, peer

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._peer
        if name == "socket":
            return None  # uvicorn would ask the socket, which knows only the balancer
        return self._transport.get_extra_info(name, default)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _Handshaking(asyncio.Protocol):
    """The TLS layer's protocol until the handshake is done: keeps whatever the client sends
    in the meantime, and whether the connection was lost."""

    def __init__(self) -> None:
        self.early = bytearray()
        self.lost = False

    def data_received(self, data: bytes) -> None:
        self.early.extend(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


class ConnectionFront(asyncio.BufferedProtocol):
    """One connection on the balancers' port; ``make_http()`` builds uvicorn's HTTP protocol
    for it once TLS is up. Subclassed per server with the settings below (:func:`front_for`)."""

    make_http: Any = None
    ssl_context: ssl.SSLContext | None = None
    trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    handshake_timeout: float = 10.0
    max_connections: int = 1024
    pending: set[ConnectionFront]  # connections still in their first moments, per server

    def __init__(self) -> None:
        self.inner = type(self).make_http()
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self._header = bytearray(_FIXED)
        self._got = 0
        self._reading_header = True
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    # -- asyncio ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport: create_server
        if len(self.pending) + len(self.inner.server_state.connections) >= self.max_connections:
            transport.close()
            return
        self.pending.add(self)
        self._timer = self.loop.call_later(self.handshake_timeout, self._too_slow)
        peer = transport.get_extra_info("peername")
        self.peer = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else ("", 0)
        if not self._from_trusted():
            log.info("connection refused: not a trusted proxy", extra={"fields": {"peer": self.peer[0]}})
            self._close()

    def get_buffer(self, sizehint: int) -> memoryview:
        if not self._reading_header:  # reading is paused once the header is in: never here
            self._close()
            return memoryview(bytearray(1024))
        return memoryview(self._header)[self._got :]

    def buffer_updated(self, nbytes: int) -> None:
        if not self._reading_header:
            return
        self._got += nbytes
        if self._got < len(self._header):
            return
        try:
            if len(self._header) == _FIXED:
                if bytes(self._header[:12]) != SIGNATURE:
                    raise ProxyHeaderError("a trusted proxy's connection did not start with a PROXY v2 header")
                length = int.from_bytes(self._header[14:16], "big")
                if _FIXED + length > _MAX_HEADER:
                    raise ProxyHeaderError(f"PROXY v2 header of {length} bytes")
                if length:
                    self._header = self._header + bytes(length)  # a new array: the loop holds a view of the old
                    return
            client = parse_v2(bytes(self._header))
        except ProxyHeaderError as exc:
            log.info("connection refused", extra={"fields": {"peer": self.peer[0], "reason": str(exc)}})
            self._close()
            return
        self._begin(client or self.peer)

    def eof_received(self) -> bool:
        self._close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._done()
        if self._task is not None:
            self._task.cancel()

    # -- steps ------------------------------------------------------------------------------

    def _from_trusted(self) -> bool:
        if not self.peer[0]:
            return False
        address = ipaddress.ip_address(self.peer[0])
        return any(address in network for network in self.trusted)

    def _begin(self, client: tuple[str, int]) -> None:
        assert self.transport is not None
        self._reading_header = False
        self.transport.pause_reading()  # honoured here: this runs inside a read callback
        self._task = self.loop.create_task(self._establish(client))

    async def _establish(self, client: tuple[str, int]) -> None:
        transport = self.transport
        assert transport is not None
        if transport.is_closing():
            self._done()
            return
        early = b""
        if self.ssl_context is not None:
            handshaking = _Handshaking()
            try:
                tls = await self.loop.start_tls(
                    transport,
                    handshaking,
                    self.ssl_context,
                    server_side=True,
                    ssl_handshake_timeout=self.handshake_timeout,
                )
            except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
                log.debug("TLS handshake failed", extra={"fields": {"peer": client[0], "error": str(exc)}})
                self._close()
                return
            if tls is None or handshaking.lost:  # the connection closed during the handshake
                self._close()
                return
            transport, early = tls, bytes(handshaking.early)
        transport.set_protocol(self.inner)
        self._done()
        self.inner.connection_made(_Addressed(transport, client) if client != self.peer else transport)
        if early:
            self.inner.data_received(early)
        if self.ssl_context is None:
            transport.resume_reading()

    def _too_slow(self) -> None:
        log.debug(
            "connection closed: no PROXY header or TLS handshake in time", extra={"fields": {"peer": self.peer[0]}}
        )
        self._close()

    def _close(self) -> None:
        self._done()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _done(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.pending.discard(self)


def front_for(
    make_http: Any,
    *,
    ssl_context: ssl.SSLContext | None,
    trusted: Iterable[str],
    handshake_timeout: float,
    max_connections: int,
) -> type[ConnectionFront]:
    """A ConnectionFront class with these settings (the event loop takes a factory)."""
    settings: dict[str, object] = {
        "make_http": staticmethod(make_http),
        "ssl_context": ssl_context,
        "trusted": trusted_networks(trusted),
        "handshake_timeout": handshake_timeout,
        "max_connections": max_connections,
        "pending": set(),
    }
    return type("NodeFront", (ConnectionFront,), settings)

"""Process entry: check the data dir, host the DB member, open the node, serve HTTP(S).

Exit codes: 0 after SIGTERM/SIGINT (in-flight requests drained), 2 when starting could
corrupt data (``runtime.cli`` prints the one-line reason). A DB member that exits is started
again (a full disk, for one, makes etcd exit; it comes back once there is room), while the
node serves through the other members.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import signal
import socket
import ssl
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from runtime import children
from runtime.app import Node, data_dir_owner, open_node, prepare_certificate
from runtime.config import Config
from runtime.dispatch import RuntimeApp
from runtime.exceptions import RefusedToStart
from runtime.files import private_dir, write_atomic
from runtime.front import front_for
from runtime.storage.etcd_member import start_member
from runtime.xds.bootstrap import envoy_binary

log = logging.getLogger("runtime")


def check_data_dir(config: Config) -> bool:
    """Refuse a data dir that belongs to another service set. True if it is new. Writes nothing."""
    owner = data_dir_owner(config)
    if config.data_dir.exists() and not config.data_dir.is_dir():
        raise RefusedToStart(f"data_dir: {config.data_dir} exists and is not a directory")
    if not owner.exists():
        return True
    try:
        stored = json.loads(owner.read_text())["services"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RefusedToStart(f"data_dir: {owner} is unreadable ({exc}); expected the runtime's own record") from exc
    if list(stored) != list(config.services):
        raise RefusedToStart(
            f"data_dir: {config.data_dir} belongs to services {','.join(stored)}, "
            f"expected {','.join(config.services)}; give this service set its own data dir"
        )
    return False


def claim_data_dir(config: Config) -> None:
    try:
        private_dir(config.data_dir)
    except OSError as exc:
        raise RefusedToStart(
            f"data_dir: cannot create {config.data_dir}: {exc.strerror}; expected a writable directory"
        ) from exc
    owner = data_dir_owner(config)
    if not owner.exists():
        write_atomic(owner, json.dumps({"services": list(config.services), "node": config.node_name}).encode())


class MemberAwareHttp(HttpToolsProtocol):
    """uvicorn's httptools protocol (the C parser), plus the verified client certificate in
    ``scope["extensions"]["tls"]``, a cap on open connections and an idle timer from the start.

    The server context verifies a client certificate against the cluster CA when one is
    presented (CERT_OPTIONAL), so a non-empty ``client_cert`` means "a cluster member".
    A connection over ``max_connections`` is closed at once; one that sends no request within
    ``timeout_keep_alive`` of connecting is closed (uvicorn's timer only starts after a
    response, so an idle connection used to be held for ever).
    """

    max_connections = 1024
    header_timeout = 5.0  # from a request's first byte to the end of its headers
    body_timeout = 30.0  # from the end of the headers to the end of the body
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            transport.close()
            return
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)
        ssl_object = transport.get_extra_info("ssl_object")
        peer = ssl_object.getpeercert() if ssl_object is not None else None
        if not peer:
            return
        inner = self.app
        subject = dict(item[0] for item in peer.get("subject", ()))
        der = ssl_object.getpeercert(binary_form=True)

        async def app(scope: Any, receive: Any, send: Any) -> None:
            scope.setdefault("extensions", {})["tls"] = {"client_cert": subject, "client_cert_der": der}
            await inner(scope, receive, send)

        self.app = app

    # A request has a deadline for its headers and then for its body: uvicorn's idle timer
    # ends at a request's first byte, and a client that trickles the rest (slowloris) would
    # otherwise hold its connection slot for as long as it likes.

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm(self.header_timeout)

    def on_headers_complete(self) -> None:
        self._arm(self.body_timeout)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            log.info("connection closed: request not complete in time", extra={"fields": {"client": self.client}})
            self.transport.close()


class NodeServer(uvicorn.Server):
    """uvicorn's server on our listeners: the API port, TLS by the event loop with a handshake
    deadline (uvicorn has none: the loop's default is 60 s), and, when configured, the
    balancers' port (:mod:`runtime.front`: PROXY protocol, then TLS)."""

    drain_grace = 1.5  # after withdrawing: long enough for every Envoy to drop this node

    def __init__(self, config: uvicorn.Config, node: Node) -> None:
        super().__init__(config)
        self.node = node
        self._draining: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: Any) -> None:
        """Drain: withdraw from discovery first, so the balancers stop sending new requests,
        then let uvicorn finish the ones in flight and stop. A second signal stops at once."""
        registrar = self.node.registrar
        if registrar is None or self._draining is not None:
            super().handle_exit(sig, frame)
            return

        async def drain() -> None:
            await registrar.withdraw()
            await asyncio.sleep(self.drain_grace)
            self.should_exit = True

        self._captured_signals.append(sig)
        loop = asyncio.get_running_loop()
        self._draining = loop.create_task(drain())
        loop.call_soon_threadsafe(lambda: None)  # wake the loop from inside the signal handler

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        config, settings = self.config, self.node.config
        context: ssl.SSLContext | None = None if settings.insecure_http else self.node.cert.server_context

        def create_protocol(_loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
            made: asyncio.Protocol = config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state, _loop=_loop
            )
            return made

        loop = asyncio.get_running_loop()
        self.servers = [
            await loop.create_server(
                create_protocol,
                host=config.host,
                port=config.port,
                backlog=config.backlog,
                ssl=context,
                ssl_handshake_timeout=settings.handshake_timeout if context else None,
            )
        ]
        if settings.proxy_port:
            front = front_for(
                create_protocol,
                ssl_context=context,
                trusted=settings.trusted_proxies,
                handshake_timeout=settings.handshake_timeout,
                max_connections=settings.max_connections,
            )
            self.servers.append(
                await loop.create_server(front, host=config.host, port=settings.proxy_port, backlog=config.backlog)
            )
        ports = [settings.listen_port, *([settings.proxy_port] if settings.proxy_port else [])]
        log.info("listening", extra={"fields": {"host": config.host, "ports": ports, "tls": context is not None}})
        self.started = True


def _uvicorn_config(node: Node) -> uvicorn.Config:
    config = node.config
    limits = {
        "max_connections": config.max_connections,
        "header_timeout": config.header_timeout,
        "body_timeout": config.body_timeout,
    }
    protocol = type("NodeHttp", (MemberAwareHttp,), limits)
    return uvicorn.Config(
        RuntimeApp(node),
        host=config.listen_host,
        port=config.listen_port,
        http=protocol,
        loop="none",  # the caller's loop: uvloop, from runtime.cli
        lifespan="off",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=8,  # in-flight requests end within the DB deadline; 8 + 5 (member) < Docker's 20 s
        timeout_keep_alive=math.ceil(config.idle_timeout),
        server_header=False,
        proxy_headers=False,  # client addresses are never taken from headers a client can send
    )


def check_roles(config: Config) -> None:
    """Refuse a role this image cannot take: ``envoy`` needs Envoy's binary, which only the
    runtime's envoy image carries (``modematrix/runtime:TAG-envoy``; images/Dockerfile)."""
    if "envoy" in config.services:
        try:
            envoy_binary()
        except FileNotFoundError as exc:
            raise RefusedToStart(
                f"services: the envoy role needs Envoy's binary, and {exc}; run it from the runtime's envoy image"
            ) from None


async def serve(config: Config) -> int:
    check_roles(config)
    check_data_dir(config)
    claim_data_dir(config)
    if config.insecure_http:
        log.warning("serving plain HTTP (--insecure-http): tokens and data cross the network unencrypted")
    cert = prepare_certificate(config)  # a DB member's etcd needs its certificate files first
    member = await start_member(config) if config.db_member_name else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        opening = asyncio.ensure_future(open_node(config, cert=cert))
        await asyncio.wait([opening, asyncio.ensure_future(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        if not opening.done():
            opening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await opening
            return 0
        node = opening.result()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        return await _run(node, member)
    finally:
        if member is not None:  # not yet supervised (the node never opened), or already stopped
            await children.stop(member)


def _already_handled(signum: int, frame: object) -> None:
    """uvicorn re-raises the signal that stopped it once it has drained; by then we are done."""


async def _run(node: Node, member: asyncio.subprocess.Process | None) -> int:
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _already_handled)
    server = NodeServer(_uvicorn_config(node), node)
    try:
        rpc = await node.start_grpc()
    except RuntimeError as exc:  # grpc's "Failed to bind": the port is taken
        await node.close()
        raise RefusedToStart(f"grpc_port {node.config.grpc_port}: cannot listen ({exc})") from None
    tasks = [asyncio.ensure_future(job) for job in node.background()]
    # the member outlives the node's close (which withdraws it from discovery through the DB)
    restart = functools.partial(start_member, node.config)
    keeper = asyncio.ensure_future(children.supervise("the DB member", restart, member)) if member else None
    try:
        await server.serve()
    finally:
        if rpc is not None:
            from runtime.rpc.api import stop as grpc_stop  # loaded where a gRPC server runs

            await grpc_stop(rpc, 5)  # calls in flight finish; the node withdrew from discovery before
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await node.close()
        if keeper is not None:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
    log.info("stopped", extra={"fields": {"exit_code": 0}})
    return 0

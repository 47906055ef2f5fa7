"""One server of a mode on a container engine: a name, its services, a fixed address and
port, and the engine's handle through which it is started, stopped and broken. Faults and
scenarios go through here, never through the engine's own API.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial

import httpx

from topologies import service
from topologies.constants import GRPC_PORT
from topologies.engines import PAUSED, RUNNING, Engine, Handle
from topologies.exceptions import StartTimeout
from topologies.service import Probe, ServiceSpec
from topologies.spec import NodeSpec
from topologies.wait import WaitTimeout, wait_until


class Node:
    def __init__(
        self, spec: NodeSpec, ip: str, host_port: int, handle: Handle, engine: Engine, role: str = "node"
    ) -> None:
        self.spec, self.ip, self.host_port, self.role = spec, ip, host_port, role
        self.handle, self.engine = handle, engine

    def __repr__(self) -> str:
        return f"Node({self.name!r}, {self.ip}, {self.status})"

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def container(self) -> str:
        """The engine's name for it (``mm-<run>-<node>``)."""
        return self.handle.name

    @property
    def services(self) -> tuple[str, ...]:
        return self.spec.services

    @property
    def db_member(self) -> bool:
        return self.spec.db_member

    @property
    def url(self) -> str:
        """How the host reaches this node: a fixed loopback port, stable across restarts."""
        return f"https://127.0.0.1:{self.host_port}"

    @property
    def grpc_target(self) -> str | None:
        """``127.0.0.1:PORT`` of this node's gRPC API on the host (Envoy's: its API port, which
        takes gRPC too), or None where there is none."""
        if self.spec.is_envoy:
            return f"127.0.0.1:{self.host_port}"
        port = self.handle.ports.get(GRPC_PORT)
        return f"127.0.0.1:{port}" if port else None

    @property
    def status(self) -> str:
        return self.engine.state(self.handle)

    @property
    def running(self) -> bool:
        return self.status == RUNNING

    @property
    def paused(self) -> bool:
        return self.status == PAUSED

    def kill(self) -> None:
        self.engine.kill(self.handle)

    def stop(self, timeout: int = 20) -> None:
        self.engine.stop(self.handle, timeout)

    def start(self) -> None:
        self.engine.start(self.handle)

    def restart(self, timeout: int = 20) -> None:
        self.engine.restart(self.handle, timeout)

    def pause(self) -> None:
        self.engine.pause(self.handle)

    def unpause(self) -> None:
        self.engine.unpause(self.handle)

    def logs(self, tail: int = 30) -> str:
        return self.engine.logs(self.handle, tail)

    def exec(self, command: Sequence[str], user: str = "") -> tuple[int, str]:
        return self.engine.exec(self.handle, command, user)


READY_POLL = 0.2  # seconds between /readyz polls while starting (faster than Docker's health interval)


def probe(
    node: Node, answer: Probe, port_of: Mapping[str, int], timeout: float = 2.0, context: ssl.SSLContext | None = None
) -> tuple[bool, str]:
    """Ask ``node`` a service file's probe (readiness, leader): (yes, what it said). HTTPS is
    verified against ``context`` when given (the run's CA), else not, as the kubelet's HTTPS
    probes do not verify."""
    if answer.exec:
        code, out = node.exec(list(answer.exec))
        return code == 0, f"exit {code}: {out.strip()[-300:]}"
    port = node.handle.ports.get(port_of[answer.http or answer.tcp or ""])
    if port is None:
        return False, "its port is not published"
    if answer.tcp:  # at its own address: Docker's proxy on the published port accepts on its own
        try:
            with socket.create_connection((node.ip, port_of[answer.tcp]), timeout=timeout):
                return True, "connected"
        except OSError as exc:
            return False, f"{type(exc).__name__}: {exc}"
    scheme = "https" if answer.tls else "http"
    try:
        reply = httpx.get(f"{scheme}://127.0.0.1:{port}{answer.path}", verify=context or False, timeout=timeout)
    except httpx.HTTPError as exc:
        return False, f"{type(exc).__name__}: {exc}"
    return reply.status_code == 200, f"{reply.status_code} {reply.text[:300]}"


def wait_members(
    nodes: Sequence[Node], spec: ServiceSpec, timeout: float, context: ssl.SSLContext | None = None
) -> None:
    """Return when every member's readiness probe (its service file's ``ready``) says yes;
    StartTimeout with its last answer and log lines when one stops, or at the deadline."""
    ask = partial(_ask_ready, spec=spec, context=context)
    wait_each(nodes, ask, timeout=timeout, asked=f"its probe ({spec.ready.describe()}) said")


def _ask_ready(node: Node, *, spec: ServiceSpec, context: ssl.SSLContext | None) -> tuple[bool, str]:
    return probe(node, spec.ready, spec.ports, timeout=1.0, context=context)


def wait_ready(nodes: Sequence[Node], context: ssl.SSLContext, timeout: float = 120.0) -> None:
    """The runtime's nodes (and a balancer in front of them) ready as the runtime's service
    file says (``/readyz`` over TLS), verified against the run's CA: :func:`wait_members`."""
    wait_members(nodes, service.runtime(), timeout, context)


def wait_each(nodes: Sequence[Node], ask: Callable[[Node], tuple[bool, str]], *, timeout: float, asked: str) -> None:
    """Return when ``ask`` has said yes of each node, within ``timeout`` for all of them;
    StartTimeout naming the node, its last answer (``asked``) and its log lines at the
    deadline, or as soon as a node that has not said yes is not running."""
    ends = time.monotonic() + timeout
    for node in nodes:
        last = [""]

        def ready(node: Node = node, last: list[str] = last) -> bool:
            yes, last[0] = ask(node)
            if not yes and not node.running:  # why it ended, and its last words
                said = node.logs(8).strip()[-1000:]
                raise StartTimeout(f"{node.name} is {node.engine.exit_reason(node.handle)}; last log lines: {said!r}")
            return yes

        try:
            wait_until(
                ready,
                timeout=max(1.0, ends - time.monotonic()),
                interval=READY_POLL,
                message=f"{node.name} ready",
                ignore=(OSError,),
            )
        except (WaitTimeout, StartTimeout) as exc:
            when = f"after {timeout:.0f} s" if isinstance(exc, WaitTimeout) else "and stopped"
            raise StartTimeout(
                f"node {node.name} ({node.container}) not ready {when}: {exc}; {asked}: {last[0]}",
                node=node.name,
                logs=node.logs(30),
            ) from exc

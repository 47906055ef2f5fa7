"""One server of a topology: a name, its services, a fixed address and port, and the platform
handle through which it is started, stopped and broken. Faults and scenarios go through here,
never through the platform's own API.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence

import httpx

from topologies.constants import GRPC_PORT
from topologies.platforms import PAUSED, RUNNING, Handle, Platform
from topologies.spec import NodeSpec


class Node:
    def __init__(
        self, spec: NodeSpec, ip: str, host_port: int, handle: Handle, platform: Platform, role: str = "node"
    ) -> None:
        self.spec, self.ip, self.host_port, self.role = spec, ip, host_port, role
        self.handle, self.platform = handle, platform

    def __repr__(self) -> str:
        return f"Node({self.name!r}, {self.ip}, {self.status})"

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def container(self) -> str:
        """The platform's name for it (``mm-<run>-<node>``)."""
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
        return self.platform.state(self.handle)

    @property
    def running(self) -> bool:
        return self.status == RUNNING

    @property
    def paused(self) -> bool:
        return self.status == PAUSED

    def kill(self) -> None:
        self.platform.kill(self.handle)

    def stop(self, timeout: int = 20) -> None:
        self.platform.stop(self.handle, timeout)

    def start(self) -> None:
        self.platform.start(self.handle)

    def restart(self, timeout: int = 20) -> None:
        self.platform.restart(self.handle, timeout)

    def pause(self) -> None:
        self.platform.pause(self.handle)

    def unpause(self) -> None:
        self.platform.unpause(self.handle)

    def logs(self, tail: int = 30) -> str:
        return self.platform.logs(self.handle, tail)

    def exec(self, command: Sequence[str], user: str = "") -> tuple[int, str]:
        return self.platform.exec(self.handle, command, user)

    def readiness(self, context: ssl.SSLContext | None, timeout: float = 2.0) -> tuple[int, str]:
        """(HTTP status, body) of /readyz; (0, why) when it could not be reached."""
        try:
            reply = httpx.get(self.url + "/readyz", verify=context or False, timeout=timeout)
        except httpx.HTTPError as exc:
            return 0, f"{type(exc).__name__}: {exc}"
        return reply.status_code, reply.text[:500]

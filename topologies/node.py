"""One server of a topology: a container with a name, services, a fixed address and port.

Every Docker call about a single container goes through here, so faults and scenarios
never touch the Docker API.
"""

from __future__ import annotations

import ssl

import docker.errors
import httpx
from docker.models.containers import Container

from topologies.spec import NodeSpec


class Node:
    def __init__(self, spec: NodeSpec, ip: str, host_port: int, container: Container, role: str = "node") -> None:
        self.spec, self.ip, self.host_port, self.container, self.role = spec, ip, host_port, container, role

    def __repr__(self) -> str:
        return f"Node({self.name!r}, {self.ip}, {self.status})"

    @property
    def name(self) -> str:
        return self.spec.name

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
    def status(self) -> str:
        try:
            self.container.reload()
        except docker.errors.NotFound:
            return "removed"
        return str(self.container.status)

    @property
    def running(self) -> bool:
        return self.status == "running"

    def kill(self) -> None:
        self.container.kill(signal="SIGKILL")

    def stop(self, timeout: int = 20) -> None:
        self.container.stop(timeout=timeout)

    def start(self) -> None:
        self.container.start()

    def restart(self, timeout: int = 20) -> None:
        self.container.restart(timeout=timeout)

    def pause(self) -> None:
        self.container.pause()

    def unpause(self) -> None:
        self.container.unpause()

    def logs(self, tail: int = 30) -> str:
        try:
            return str(self.container.logs(tail=tail).decode(errors="replace"))
        except docker.errors.APIError as exc:
            return f"(no logs: {exc})"

    def exec(self, command: list[str], user: str = "") -> tuple[int, str]:
        result = self.container.exec_run(command, user=user)
        return int(result.exit_code), result.output.decode(errors="replace")

    def readiness(self, context: ssl.SSLContext | None, timeout: float = 2.0) -> tuple[int, str]:
        """(HTTP status, body) of /readyz; (0, why) when it could not be reached."""
        try:
            reply = httpx.get(self.url + "/readyz", verify=context or False, timeout=timeout)
        except httpx.HTTPError as exc:
            return 0, f"{type(exc).__name__}: {exc}"
        return reply.status_code, reply.text[:500]

"""Start a mode's containers, wait until every node is ready, hand out a :class:`Cluster`.

    with topologies.start("ha") as cluster:
        with cluster.client() as api:
            api.put("/v1/kv/x", content=b"1")

Every container, network and volume carries ``modematrix.run=<id>``, ``modematrix.mode`` and
``modematrix.node`` labels, plus testcontainers' session label, which the reaper uses to
remove them if this process dies without cleaning up.
"""

from __future__ import annotations

import json
import shutil
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import docker
import docker.errors
from testcontainers.core.labels import LABEL_SESSION_ID, SESSION_ID

import images
from topologies import spec
from topologies.client import ClusterClient, Credentials
from topologies.exceptions import FaultError, NotFound, StartTimeout
from topologies.node import Node
from topologies.wait import WaitTimeout, wait_until

LABEL_RUN, LABEL_MODE, LABEL_NODE, LABEL_ROLE = (
    "modematrix.run",
    "modematrix.mode",
    "modematrix.node",
    "modematrix.role",
)
READY_POLL = 0.2  # seconds between /readyz polls while starting (faster than Docker's health interval)


class Cluster:
    def __init__(
        self,
        run_id: str,
        mode: spec.ModeSpec,
        image: str,
        client: docker.DockerClient,
        workdir: Path,
        admin: Credentials,
    ) -> None:
        self.run_id, self.spec, self.image, self.docker = run_id, mode, image, client
        self.workdir, self.admin = workdir, admin
        self.nodes: list[Node] = []
        self.lb: Node | None = None
        self.network: Any = None

    # -- what users reach -----------------------------------------------------------------

    @property
    def mode(self) -> str:
        return self.spec.mode

    @property
    def ca_file(self) -> Path:
        return self.workdir / "ca.pem"

    @property
    def endpoints(self) -> list[str]:
        """The front door: the load balancer if the mode has one, else every edge node."""
        if self.lb is not None:
            return [self.lb.url]
        return [n.url for n in self.nodes if n.spec.is_edge]

    @property
    def ips(self) -> dict[str, str]:
        found = {n.name: n.ip for n in self.nodes}
        if self.lb is not None:
            found[self.lb.name] = self.lb.ip
        return found

    def node(self, name: str) -> Node:
        for node in [*self.nodes, *([self.lb] if self.lb else [])]:
            if node.name == name:
                return node
        raise NotFound(f"no node {name!r} in run {self.run_id}; nodes: {', '.join(n.name for n in self.nodes)}")

    def tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def client(
        self,
        credentials: Credentials | None = None,
        *,
        timeout: float = 5.0,
        endpoints: Sequence[str] | None = None,
        first: int = 0,
    ) -> ClusterClient:
        """A client of the front door; ``first`` picks which endpoint it tries first."""
        return ClusterClient(
            list(endpoints or self.endpoints), self.ca_file, credentials or self.admin, timeout=timeout, first=first
        )

    def db_leader(self) -> Node:
        """The node whose etcd member is the leader, asked of the members themselves."""
        if self.spec.db != "etcd":
            raise NotFound(f"mode {self.mode} has no replicated DB, so no leader")
        answers = []
        for node in self.spec.members:
            member = self.node(node.name)
            if not member.running:
                continue
            code, out = member.exec(
                [
                    "etcdctl",
                    "--endpoints",
                    "http://127.0.0.1:2379",
                    "--command-timeout=2s",
                    "endpoint",
                    "status",
                    "-w",
                    "json",
                ]
            )
            answers.append(f"{member.name}: {out.strip()[:200]}")
            if code == 0:
                status = json.loads(out)[0]["Status"]
                if status["leader"] == status["header"]["member_id"]:
                    return member
        raise NotFound("no etcd member reports itself leader: " + "; ".join(answers))

    def describe(self) -> dict[str, Any]:
        """What ``modematrix up --json`` prints."""
        return {
            "mode": self.mode,
            "run_id": self.run_id,
            "endpoints": self.endpoints,
            "ca_file": str(self.ca_file),
            "admin": {"username": self.admin.username, "password": self.admin.password},
            "nodes": [
                {
                    "name": n.name,
                    "container": n.container.name,
                    "services": list(n.services),
                    "db_member": n.db_member,
                    "url": n.url,
                    "ip": n.ip,
                }
                for n in self.nodes
            ],
        }

    # -- readiness ------------------------------------------------------------------------

    def wait_ready(self, nodes: Sequence[Node] | None = None, timeout: float = 120.0) -> None:
        """Return when every given (default: every running) node answers /readyz 200."""
        context = self.tls_context()
        for node in nodes if nodes is not None else [n for n in self.nodes if n.running]:
            last: dict[str, tuple[int, str]] = {}

            def ready(node: Node = node, last: dict[str, tuple[int, str]] = last) -> bool:
                last["answer"] = node.readiness(context, timeout=1.0)
                if last["answer"][0] == 0 and not node.running:
                    raise StartTimeout(f"{node.name} is {node.status}")
                return last["answer"][0] == 200

            try:
                wait_until(ready, timeout=timeout, interval=READY_POLL, message=f"{node.name} ready", ignore=(OSError,))
            except (WaitTimeout, StartTimeout) as exc:
                raise StartTimeout(
                    f"node {node.name} ({node.container.name}) not ready after {timeout:.0f} s: {exc}; "
                    f"last /readyz answer: {last.get('answer')}\n--- last log lines ---\n{node.logs(25)}"
                ) from exc

    def wait_healthy(self, timeout: float = 120.0) -> None:
        """Every node running and ready, and the front door answering."""
        stopped = [n.name for n in self.nodes if not n.running]
        if stopped:
            raise FaultError(f"nodes not running: {', '.join(stopped)}")
        self.wait_ready(timeout=timeout)
        if self.lb is not None:
            self.wait_ready([self.lb], timeout=timeout)

    # -- faults need a shell in a node's network namespace -------------------------------

    def in_netns(self, node: Node, commands: Sequence[str]) -> str:
        """Run shell commands as root in ``node``'s network namespace, from a helper container
        of the same image with NET_ADMIN: the node itself never gets that capability."""
        script = " && ".join(commands) if commands else "true"
        helper = self.docker.containers.run(
            self.image,
            entrypoint=["sh", "-c", script],
            network_mode=f"container:{node.container.id}",
            cap_add=["NET_ADMIN"],
            user="root",
            detach=True,
            labels={**self.reaped_labels(f"{node.name}-netns"), LABEL_ROLE: "helper"},
        )
        try:
            code = helper.wait(timeout=60)["StatusCode"]
            output = helper.logs().decode(errors="replace")
        finally:
            helper.remove(force=True)
        if code != 0:
            raise FaultError(f"on {node.name}: `{script}` exited {code}: {output.strip()[-500:]}")
        return str(output)

    def labels(self, node: str) -> dict[str, str]:
        """Our labels. testcontainers adds its session label to the containers it starts."""
        return {LABEL_RUN: self.run_id, LABEL_MODE: self.mode, LABEL_NODE: node}

    def reaped_labels(self, node: str) -> dict[str, str]:
        """For what testcontainers does not create (networks, volumes, helpers): with the
        session label, so the reaper removes them too if this process dies."""
        return {**self.labels(node), LABEL_SESSION_ID: SESSION_ID}

    # -- teardown -------------------------------------------------------------------------

    def stop(self) -> None:
        remove_run(self.docker, self.run_id)
        shutil.rmtree(self.workdir, ignore_errors=True)


def run_dir(run_id: str) -> Path:
    """Where a run keeps its CA file: outlives the process that started it (``modematrix up``)."""
    path = images.cache_dir() / "runs" / run_id
    path.mkdir(parents=True, exist_ok=True)
    return path


def runs(client: docker.DockerClient) -> dict[str, list[Any]]:
    """run id -> its containers, for every run Docker knows of."""
    found: dict[str, list[Any]] = {}
    for container in client.containers.list(all=True, filters={"label": LABEL_RUN}):
        found.setdefault(container.labels[LABEL_RUN], []).append(container)
    return found


def remove_run(client: docker.DockerClient, run_id: str | None) -> dict[str, int]:
    """Remove every container, network and volume of a run (``None``: of every run)."""
    selector = {"label": f"{LABEL_RUN}={run_id}" if run_id else LABEL_RUN}
    removed = {"containers": 0, "networks": 0, "volumes": 0}
    for container in client.containers.list(all=True, filters=selector):
        try:
            container.remove(force=True, v=True)
            removed["containers"] += 1
        except docker.errors.NotFound:
            pass
    for kind, collection in (("networks", client.networks), ("volumes", client.volumes)):
        for item in collection.list(filters=selector):
            try:
                item.remove(force=True) if kind == "volumes" else item.remove()
                removed[kind] += 1
            except docker.errors.NotFound:
                pass
    return removed

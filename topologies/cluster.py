"""A started mode: its nodes, its front door, readiness, and the way to remove it.

    with topologies.start("ha") as cluster:
        with cluster.client() as api:
            api.put("/v1/kv/x", content=b"1")

Every node, network and volume carries ``modematrix.run=<id>``, ``modematrix.mode`` and
``modematrix.node`` labels, which the platform's reaper uses to remove them if this process
dies without cleaning up. The cluster talks to its nodes only through the Platform protocol.
"""

from __future__ import annotations

import json
import shutil
import ssl
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

import images
from runtime.files import write_atomic
from topologies import spec
from topologies.client import ClusterClient, Credentials
from topologies.constants import DATA_DIR, DB_CLIENT_PORT, GRPC_PORT, LABEL_MODE, LABEL_NODE, LABEL_RUN
from topologies.exceptions import FaultError, NotFound, StartTimeout, TopologyError
from topologies.node import Node
from topologies.plan import Secrets
from topologies.platforms import Platform

if TYPE_CHECKING:
    from topologies.scale import ScalePlan
from topologies.wait import WaitTimeout, wait_until

READY_POLL = 0.2  # seconds between /readyz polls while starting (faster than Docker's health interval)


class Cluster:
    def __init__(
        self,
        run_id: str,
        mode: spec.ModeSpec,
        image: str,
        platform: Platform,
        workdir: Path,
        admin: Credentials,
    ) -> None:
        self.run_id, self.spec, self.image, self.platform = run_id, mode, image, platform
        self.workdir, self.admin = workdir, admin
        self.nodes: list[Node] = []
        self.lb: Node | None = None
        self.network = f"mm-{run_id}"
        self.facts: dict[str, str | None] = {}  # what was probed once about the platform (netem)
        self.cpuset: str | None = None  # host cores every container of the run is pinned to

    # -- what users reach -----------------------------------------------------------------

    @property
    def mode(self) -> str:
        return self.spec.mode

    @property
    def ca_file(self) -> Path:
        return self.workdir / "ca.pem"

    @property
    def secrets(self) -> Secrets:
        """The run's cluster secret and admin password, from the launching machine's run folder."""
        return read_secrets(self.workdir)

    @property
    def endpoints(self) -> list[str]:
        """The front door: the load balancer if the mode has one (every Envoy), else every edge node."""
        if self.lb is not None:
            return [self.lb.url]
        envoys = [n.url for n in self.nodes if n.spec.is_envoy]
        if envoys:
            return envoys
        return [n.url for n in self.nodes if n.spec.is_edge]

    @property
    def grpc_endpoints(self) -> list[str]:
        """The gRPC front door (``HOST:PORT``, TLS with the run's CA): the HAProxy's gRPC
        frontend, every Envoy, or every edge node's gRPC port, as :attr:`endpoints` does."""
        if self.lb is not None:
            port = self.lb.handle.ports.get(GRPC_PORT)
            return [f"127.0.0.1:{port}"] if port else []
        envoys = [n for n in self.nodes if n.spec.is_envoy]
        found = [n.grpc_target for n in envoys or [n for n in self.nodes if n.spec.is_edge]]
        return [t for t in found if t]

    def grpc_channel(self, endpoint: str | None = None) -> grpc.Channel:
        """A gRPC channel to ``endpoint`` (default: the first of :attr:`grpc_endpoints`),
        TLS verified against the run's CA; stubs: ``runtime.rpc.pb_grpc.KvStub(channel)``."""
        target = endpoint or next(iter(self.grpc_endpoints), None)
        if target is None:
            raise NotFound(f"run {self.run_id} ({self.mode}) has no gRPC endpoint")
        credentials = grpc.ssl_channel_credentials(root_certificates=self.ca_file.read_bytes())
        return grpc.secure_channel(target, credentials)

    @property
    def ips(self) -> dict[str, str]:
        found = {n.name: n.ip for n in self.nodes}
        if self.lb is not None:
            found[self.lb.name] = self.lb.ip
        return found

    def scale(self, **counts: int) -> ScalePlan:
        """``cluster.scale(kv=4, queue=1)``: start or drain service nodes until each service
        has that many (modes behind Envoy only; see :mod:`topologies.scale`)."""
        from topologies.scale import apply

        return apply(self, counts)

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
        resend_idempotent: bool = True,
        budget: float | None = None,
    ) -> ClusterClient:
        """A client of the front door; ``first`` picks which endpoint it tries first (see
        :class:`ClusterClient` for ``resend_idempotent``)."""
        return ClusterClient(
            list(endpoints or self.endpoints),
            self.ca_file,
            credentials or self.admin,
            timeout=timeout,
            first=first,
            resend_idempotent=resend_idempotent,
            budget=budget,
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
            code, out = member.exec([*ETCDCTL, "endpoint", "status", "-w", "json"])
            answers.append(f"{member.name}: {out.strip()[:200]}")
            if code == 0 and out.lstrip().startswith("["):
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
            "grpc_endpoints": self.grpc_endpoints,
            "ca_file": str(self.ca_file),
            "admin": {"username": self.admin.username, "password": self.admin.password},
            "nodes": [
                {
                    "name": n.name,
                    "container": n.container,
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
                logs = node.logs(30)
                raise StartTimeout(
                    f"node {node.name} ({node.container}) not ready after {timeout:.0f} s: {exc}; "
                    f"last /readyz answer: {last.get('answer')}",
                    node=node.name,
                    logs=logs,
                ) from exc

    def wait_healthy(self, timeout: float = 120.0) -> None:
        """Every node running and ready, every DB member healthy, and the front door answering.

        A node is ready as soon as it reaches *some* DB member, so readiness alone can call a
        cluster healthy while a restarted member is still catching up; the next fault then
        takes the quorum with it (CI saw a 7.4 s write outage from exactly that)."""
        stopped = [n for n in self.nodes if not n.running]
        if stopped:
            why = "; ".join(
                f"{n.name} ({n.platform.exit_reason(n.handle)}; last log lines: {n.logs(5).strip()[-600:]!r})"
                for n in stopped
            )
            raise FaultError(f"nodes not running: {why}")
        self.wait_ready(timeout=timeout)
        self.wait_db_members(timeout=timeout)
        if self.lb is not None:
            self.wait_ready([self.lb], timeout=timeout)

    def wait_db_members(self, timeout: float = 120.0) -> None:
        """Return when every etcd member answers ``endpoint health`` (a committed read)."""
        if self.spec.db != "etcd":
            return
        for spec_node in self.spec.members:
            member = self.node(spec_node.name)
            wait_until(
                partial(_member_healthy, member),
                timeout=timeout,
                interval=READY_POLL,
                message=f"the DB member on {member.name} healthy",
                ignore=(TopologyError,),
            )

    # -- faults need a shell in a node's network namespace -------------------------------

    def in_netns(self, node: Node, commands: Sequence[str]) -> str:
        """Run shell commands as root in ``node``'s network namespace, with network-admin
        rights that the node itself never holds (the platform uses a helper)."""
        script = " && ".join(commands) if commands else "true"
        code, output = self.platform.netns_exec(node.handle, script, self.image)
        if code != 0:
            raise FaultError(f"on {node.name}: `{script}` exited {code}: {output.strip()[-500:]}")
        return output

    def labels(self, node: str) -> dict[str, str]:
        return {LABEL_RUN: self.run_id, LABEL_MODE: self.mode, LABEL_NODE: node}

    # -- teardown -------------------------------------------------------------------------

    def stop(self) -> None:
        self.platform.remove_run(self.run_id)
        shutil.rmtree(self.workdir, ignore_errors=True)


# etcdctl inside a member's container, as that node's own DB user (its certificate)
ETCDCTL = (
    "etcdctl",
    f"--endpoints=https://127.0.0.1:{DB_CLIENT_PORT}",
    f"--cacert={DATA_DIR}/tls/ca.pem",
    f"--cert={DATA_DIR}/tls/node.pem",
    f"--key={DATA_DIR}/tls/node-key.pem",
    "--command-timeout=2s",
)


def _member_healthy(member: Node) -> bool:
    return member.exec([*ETCDCTL, "endpoint", "health"])[0] == 0


SECRETS_FILE = "secrets.json"


def write_secrets(workdir: Path, secrets: Secrets) -> None:
    """The run's shared secrets, on the launching machine only (mode 0600, as its CA key):
    what a later ``modematrix scale`` or ``fault`` of the run needs. Nodes never carry them in
    their settings, so they cannot be read back from the platform."""
    body = {"cluster_secret": secrets.cluster_secret, "admin_password": secrets.admin_password}
    write_atomic(workdir / SECRETS_FILE, json.dumps(body).encode(), mode=0o600)


def read_secrets(workdir: Path) -> Secrets:
    path = workdir / SECRETS_FILE
    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise NotFound(
            f"the run's secrets are not in {path} ({exc}): scale and attach work on the machine that started the run"
        ) from None
    return Secrets(str(body["cluster_secret"]), str(body["admin_password"]))


def run_dir(run_id: str) -> Path:
    """Where a run keeps its CA file: outlives the process that started it (``modematrix up``)."""
    path = images.cache_dir() / "runs" / run_id
    path.mkdir(parents=True, exist_ok=True)
    return path

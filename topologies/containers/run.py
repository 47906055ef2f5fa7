"""A mode started as containers on an engine: its nodes, its front door, readiness, healing,
and the way to remove it. It is built whole by :mod:`topologies.containers.start` (or
:mod:`.attach`, from another process); scaling changes it through :meth:`ContainerRun.add`
and :meth:`ContainerRun.remove` only.

    with topologies.start("ha") as run:
        with run.client() as api:
            api.put("/v1/kv/x", content=b"1")

Every container, network and volume carries ``modematrix.run=<id>``, ``modematrix.mode`` and
``modematrix.node`` labels, which the engine's reaper uses to remove them if this process
dies without cleaning up.
"""

from __future__ import annotations

import json
import shutil
import ssl
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Self

from topologies.constants import (
    BALLAST_FILE,
    CLOCK_FILE,
    DATA_DIR,
    DB_CLIENT_PORT,
    GRPC_PORT,
    LABEL_DATA_SIZE,
    LABEL_LAZY_FS,
    LABEL_MODE,
    LABEL_NODE,
    LABEL_RUN,
    LAZYFS_BIN,
)
from topologies.containers import plan
from topologies.containers.node import READY_POLL, Node, wait_ready
from topologies.engines import PAUSED, RUNNING, STOPPED, Engine
from topologies.exceptions import FaultError, NotFound, TopologyError
from topologies.run import Footprint, RunFolder, with_envoy_apart
from topologies.spec import ModeSpec
from topologies.wait import wait_until

TARGET = "containers"
# nodes healed at once, a helper container each: fewer than docker-py's 10 pooled connections
HEAL_WORKERS = 8


class ContainerRun(RunFolder):
    def __init__(
        self,
        run_id: str,
        spec: ModeSpec,
        *,
        image: str,
        engine: Engine,
        workdir: Path,
        nodes: Sequence[Node],
        lb: Node | None = None,
        cpuset: str | None = None,
    ) -> None:
        super().__init__(run_id, workdir)
        self._spec, self.image, self.engine, self.cpuset = spec, image, engine, cpuset
        self._nodes, self.lb = list(nodes), lb
        self._facts: dict[str, str | None] = {}  # what was probed once about the engine's host (netem)

    def __repr__(self) -> str:
        return f"ContainerRun({self.run_id!r}, {self.mode!r}, {len(self._nodes)} nodes)"

    # -- the Run protocol ---------------------------------------------------------------------

    @property
    def mode(self) -> str:
        return self._spec.mode

    @property
    def spec(self) -> ModeSpec:
        """The mode as it runs now (scaling adds and removes nodes)."""
        return self._spec.with_nodes(tuple(n.spec for n in self._nodes))

    @property
    def nodes(self) -> list[Node]:
        return list(self._nodes)

    @property
    def network(self) -> str:
        return f"mm-{self.run_id}"

    @property
    def endpoints(self) -> list[str]:
        """The front door: the load balancer if the mode has one (every Envoy), else every edge node."""
        if self.lb is not None:
            return [self.lb.url]
        envoys = [n.url for n in self._nodes if n.spec.is_envoy]
        return envoys or [n.url for n in self._nodes if n.spec.is_edge]

    @property
    def grpc_endpoints(self) -> list[str]:
        """The gRPC front door (``HOST:PORT``, TLS with the run's CA): the HAProxy's gRPC
        frontend, every Envoy, or every edge node's gRPC port, as :attr:`endpoints` does."""
        if self.lb is not None:
            port = self.lb.handle.ports.get(GRPC_PORT)
            return [f"127.0.0.1:{port}"] if port else []
        envoys = [n for n in self._nodes if n.spec.is_envoy]
        found = [n.grpc_target for n in envoys or [n for n in self._nodes if n.spec.is_edge]]
        return [t for t in found if t]

    def describe(self) -> dict[str, Any]:
        """What ``modematrix up --json`` prints (docs/cli.md)."""
        return {
            "mode": self.mode,
            "target": TARGET,
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
                    "state": n.status,
                }
                for n in self.all_nodes
            ],
        }

    def wait_healthy(self, timeout: float = 120.0) -> None:
        """Every node running and ready, every DB member healthy, and the front door answering.

        A node is ready as soon as it reaches *some* DB member, so readiness alone can call a
        cluster healthy while a restarted member is still catching up; the next fault then
        takes the quorum with it (CI saw a 7.4 s write outage from exactly that)."""
        stopped = [n for n in self._nodes if not n.running]
        if stopped:
            why = "; ".join(
                f"{n.name} ({n.engine.exit_reason(n.handle)}; last log lines: {n.logs(5).strip()[-600:]!r})"
                for n in stopped
            )
            raise FaultError(f"nodes not running: {why}")
        wait_ready([n for n in self._nodes if n.running], self.tls_context(), timeout)
        self.wait_db_members(timeout=timeout)
        if self.lb is not None:
            wait_ready([self.lb], self.tls_context(), timeout)

    def heal_all(self) -> None:
        """Undo every fault on every node: thaw, start, flush rules, remove the ballast, set the
        clock right, end lazyfs's I/O faults. Every node at once (each flush is a helper
        container: one after another they took 2.2-4.5 s of every cycle in scaled); tries
        everything, then raises one FaultError listing whatever could not be healed."""
        heal_each(self._nodes, self._heal_node)

    def _heal_node(self, node: Node) -> None:
        if self.member_removed(node.name).exists():  # a restart would bring back a removed member
            raise FaultError("its DB member was removed; ReplaceMember's heal starts a new one")
        status = node.status
        if status == PAUSED:
            node.unpause()
        elif status in STOPPED:
            node.start()
        if node.running:
            self.in_netns(node, plan.HEAL_RULES)
            clock = f'[ "$(cat {CLOCK_FILE} 2>/dev/null)" = +0 ] || echo +0 > {CLOCK_FILE}'
            lazy = node.handle.labels.get(LABEL_LAZY_FS) == "true"
            disk = f"; {LAZYFS_BIN} ctl ok >/dev/null" if lazy else ""
            node.exec(["sh", "-c", f"rm -f {BALLAST_FILE}; {clock}{disk}"])

    def status(self) -> dict[str, Any]:
        """What ``modematrix status RUN`` shows: each node's state, and what each Envoy routes
        to (its admin API, asked inside its node: it listens on loopback only)."""
        nodes = [
            {"name": n.name, "ip": n.ip, "state": n.status, "services": list(n.services), "db_member": n.db_member}
            for n in self.all_nodes
        ]
        report: dict[str, Any] = {
            "run_id": self.run_id,
            "mode": self.mode,
            "target": TARGET,
            "endpoints": self.endpoints,
            "nodes": nodes,
            "envoys": {n.name: envoy_routes(n) for n in self._nodes if n.spec.is_envoy and n.running},
        }
        if self.data_size is not None:
            report["data_size"] = self.data_size
        if self.lazy_fs:
            report["lazy_fs"] = True
        return report

    def parts(self) -> list[str]:
        """What ``logs`` and ``exec`` can name: every container of the run."""
        return [n.name for n in self.all_nodes]

    def logs(self, part: str, tail: int = 100) -> str:
        return self.node(part).logs(tail)

    def memory(self) -> list[Footprint]:
        parts = [
            Footprint(n.name, _role(n, self.lb), self.engine.memory(n.handle))
            for n in self.all_nodes
            if n.status == RUNNING
        ]
        return with_envoy_apart(parts, self.exec)

    def cpu(self) -> dict[str, float]:
        """CPU seconds each running container of the run has used so far (an Envoy node's
        counts its Envoy and the runtime that supervises it together)."""
        return {n.name: self.engine.cpu_seconds(n.handle) for n in self.all_nodes if n.status == RUNNING}

    def follow(self, part: str, tail: int = 100) -> Iterator[str]:
        """The node's log lines as they come, until it stops (or the caller does)."""
        return self.engine.follow_logs(self.node(part).handle, tail)

    def exec(self, part: str, command: Sequence[str]) -> tuple[int, str]:
        return self.node(part).exec(command)

    def stop(self) -> None:
        self.engine.remove_run(self.run_id)
        shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what only containers have -------------------------------------------------------------

    @property
    def all_nodes(self) -> list[Node]:
        """The mode's nodes and, if it has one, its load balancer's container."""
        return [*self._nodes, *([self.lb] if self.lb else [])]

    @property
    def ips(self) -> dict[str, str]:
        return {n.name: n.ip for n in self.all_nodes}

    def node(self, name: str) -> Node:
        for node in self.all_nodes:
            if node.name == name:
                return node
        raise NotFound(f"no node {name!r} in run {self.run_id}; nodes: {', '.join(n.name for n in self.all_nodes)}")

    def tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    @property
    def data_size(self) -> int | None:
        """Bytes: the size of the nodes' data dirs when the run was started with one (each
        node's label says it, so a run attached from another process knows it); else None."""
        sizes = {n.handle.labels.get(LABEL_DATA_SIZE) for n in self._nodes}
        known = [int(size) for size in sizes if size]
        return known[0] if known else None

    @property
    def lazy_fs(self) -> bool:
        """Whether the nodes' data dirs are on lazyfs (started with ``lazy_fs``; their labels say so)."""
        return any(n.handle.labels.get(LABEL_LAZY_FS) == "true" for n in self._nodes)

    def add(self, nodes: Sequence[Node]) -> None:
        """Scaling: nodes started for this run (:mod:`topologies.containers.scale`)."""
        self._nodes.extend(nodes)

    def member_removed(self, name: str) -> Path:
        """A note, present while ``name``'s DB member has been removed from the cluster and not
        yet replaced (:class:`topologies.containers.faults.ReplaceMember`)."""
        return self.workdir / "faults" / f"replace-member-{name}"

    def replace(self, node: Node) -> None:
        """A node started again in a new container under its old name (a replaced DB member):
        it takes the old one's place in the order of the run's nodes."""
        index = next(i for i, n in enumerate(self._nodes) if n.name == node.name)
        self._nodes[index] = node

    def remove(self, name: str) -> Node:
        """Scaling: a node that leaves the run (its container is the caller's to remove)."""
        node = self.node(name)
        self._nodes.remove(node)
        return node

    def labels(self, node: str) -> dict[str, str]:
        return {LABEL_RUN: self.run_id, LABEL_MODE: self.mode, LABEL_NODE: node}

    @property
    def has_leader(self) -> bool:
        """Whether its members elect a leader (``db_leader`` names it): an etcd mode's do."""
        return self._spec.db == "etcd"

    def db_leader(self) -> Node:
        """The node whose etcd member is the leader, asked of the members themselves."""
        if self._spec.db != "etcd":
            raise NotFound(f"mode {self.mode} has no replicated DB, so no leader")
        answers = []
        for member in (n for n in self._nodes if n.db_member and n.running):
            code, out = member.exec([*ETCDCTL, "endpoint", "status", "-w", "json"])
            answers.append(f"{member.name}: {out.strip()[:200]}")
            if code == 0 and out.lstrip().startswith("["):
                status = json.loads(out)[0]["Status"]
                if status["leader"] == status["header"]["member_id"]:
                    return member
        raise NotFound("no etcd member reports itself leader: " + "; ".join(answers))

    def wait_db_members(self, timeout: float = 120.0) -> None:
        """Return when every etcd member answers ``endpoint health`` (a committed read)."""
        for member in (n for n in self._nodes if n.db_member and self._spec.db == "etcd"):
            wait_until(
                partial(_member_healthy, member),
                timeout=timeout,
                interval=READY_POLL,
                message=f"the DB member on {member.name} healthy",
                ignore=(TopologyError,),
            )

    def in_netns(self, node: Node, commands: Sequence[str]) -> str:
        """Run shell commands as root in ``node``'s network namespace, with network-admin
        rights that the node itself never holds (the engine uses a helper)."""
        script = " && ".join(commands) if commands else "true"
        code, output = self.engine.netns_exec(node.handle, script, self.image)
        if code != 0:
            raise FaultError(f"on {node.name}: `{script}` exited {code}: {output.strip()[-500:]}")
        return output

    def netem_missing(self) -> str | None:
        """None when tc netem works on this host; else why not (probed once per run)."""
        if "netem" not in self._facts:
            node = next(n for n in self._nodes if n.running)
            try:
                self.in_netns(node, ["tc qdisc add dev lo root netem delay 1ms", "tc qdisc del dev lo root"])
                self._facts["netem"] = None
            except FaultError as exc:
                self._facts["netem"] = f"tc netem is not available in this host's kernel (sch_netem): {exc}"
        return self._facts["netem"]


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


ENVOY_CLUSTERS = (
    "import urllib.request; "
    "print(urllib.request.urlopen('http://127.0.0.1:{port}/clusters?format=json', timeout=3).read().decode())"
)


def envoy_routes(node: Node, admin_port: int = 9901) -> dict[str, list[str]]:
    """Per Envoy cluster, each endpoint as ``address healthy|<failed checks>``, from the
    node's Envoy admin API."""
    code, out = node.exec(["/opt/venv/bin/python", "-c", ENVOY_CLUSTERS.format(port=admin_port)])
    if code != 0:
        return {"(admin API)": [out.strip()[-200:]]}
    clusters = {}
    for entry in json.loads(out).get("cluster_statuses", []):
        hosts = []
        for host in entry.get("host_statuses", []):
            address = host["address"]["socket_address"]
            flags = [k for k, v in host.get("health_status", {}).items() if v is True and k != "eds_health_status"]
            state = host.get("health_status", {}).get("eds_health_status", "HEALTHY").lower()
            hosts.append(f"{address['address']}:{address['port_value']} {state}{' ' if flags else ''}{','.join(flags)}")
        clusters[entry["name"]] = hosts
    return clusters


def _role(node: Node, lb: Node | None) -> str:
    if node is lb:
        return "haproxy"
    if node.spec.is_envoy:
        return "envoy"
    return "runtime + etcd member" if node.db_member else "runtime"


def heal_each(nodes: Sequence[Node], heal: Callable[[Node], None]) -> None:
    """``heal`` every node at once; one FaultError naming each node that could not be healed,
    in the nodes' order, after every node was tried."""

    def outcome(node: Node) -> str | None:
        try:
            heal(node)
        except TopologyError as exc:  # keep healing the others
            return f"{node.name}: {exc}"
        return None

    with ThreadPoolExecutor(max_workers=max(1, min(HEAL_WORKERS, len(nodes)))) as pool:
        failures = [f for f in pool.map(outcome, nodes) if f]
    if failures:
        raise FaultError("could not heal: " + "; ".join(failures))

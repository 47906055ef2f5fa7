"""A service of a service file (:mod:`topologies.service`) started as containers: N members
on a network of the run, at fixed addresses, each told every member's address (static
peers); ready when its readiness probe says so. The run is a :class:`ContainerRun`, so every
container fault (kill, stop, pause, restart, partition, loss, delay) and the scenario runner
work on it unchanged; network faults run from a helper container of the runtime's image in
the member's network namespace, so the service's image needs no iptables.

    spec = service.load("etcd")
    with start_service(spec, 3, DockerEngine()) as run:   # a ServiceRun, mode "etcd-3"
        run.endpoints                                     # ["http://127.0.0.1:PORT", ...]
        run.db_leader().name                              # "etcd-2", asked with the leader probe
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from images import service as service_image
from images.build import ROOT
from topologies.constants import LABEL_MODE, LABEL_NODE, LABEL_ROLE, LABEL_RUN
from topologies.containers import plan
from topologies.containers.node import Node, probe, wait_members
from topologies.containers.run import TARGET, ContainerRun, heal_each
from topologies.engines import Engine, Launch
from topologies.exceptions import FaultError, NotFound, StartTimeout
from topologies.runs import RunRecord, Secrets, new_run_id, run_dir
from topologies.service import ServiceSpec
from topologies.spec import SERVICE_DB, ModeSpec, NodeSpec

LABEL_SERVICE = "modematrix.service"


def mode_name(spec: ServiceSpec, members: int) -> str:
    """``etcd-3``: what the run's mode is called in results and reports."""
    return f"{spec.name}-{members}"


def member_names(spec: ServiceSpec, members: int) -> list[str]:
    return [f"{spec.name}-{i + 1}" for i in range(members)]


def image_of(spec: ServiceSpec, engine: Engine, *, quiet: bool = True) -> str:
    """The image to run: its tag, or built from its folder on the project's base; the
    runtime's own folder (``images/``) is the runtime image, built as every mode builds it."""
    if spec.image is not None:
        return spec.image
    assert spec.build is not None
    if spec.build == ROOT / "images":
        return engine.image(quiet=quiet)
    return service_image.build(spec.build, f"modematrix/svc-{spec.name}", quiet=quiet)


class ServiceRun(ContainerRun):
    """A service file's members as containers; everything of :class:`ContainerRun` that is
    about containers, with the service's own readiness, leader, and front door (its members'
    client ports: the workload's clients know every member, as etcd's do)."""

    def __init__(self, *args: Any, service: ServiceSpec, helper_image: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.service, self.helper_image = service, helper_image

    def __repr__(self) -> str:
        return f"ServiceRun({self.run_id!r}, {self.mode!r}, {len(self.nodes)} members)"

    @property
    def endpoints(self) -> list[str]:
        """Every member's client port from the host, ``http://127.0.0.1:PORT``."""
        port = self.service.ports[self.service.client_port]
        return [f"http://127.0.0.1:{n.handle.ports[port]}" for n in self.nodes]

    @property
    def grpc_endpoints(self) -> list[str]:
        return []

    def client(self, *args: Any, **kwargs: Any) -> Any:
        raise self.service.no_runtime_api(self.run_id)

    @property
    def secrets(self) -> Secrets:  # the runtime's admin and cluster secret: a service has neither
        raise self.service.no_runtime_api(self.run_id)

    def describe(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "mode": self.mode,
            "target": TARGET,
            "service": self.service.to_dict(),
            "image": self.image,
            "endpoints": self.endpoints,
            "grpc_endpoints": [],
            "nodes": [{"name": n.name, "ip": n.ip, "container": n.container} for n in self.nodes],
            "workdir": str(self.workdir),
        }

    def status(self) -> dict[str, Any]:
        nodes = [{"name": n.name, "ip": n.ip, "state": n.status} for n in self.nodes]
        return {"run_id": self.run_id, "mode": self.mode, "target": TARGET, "endpoints": self.endpoints, "nodes": nodes}

    def wait_healthy(self, timeout: float = 120.0) -> None:
        """Every member running and its readiness probe answered yes."""
        stopped = [n for n in self.nodes if not n.running]
        if stopped:
            why = "; ".join(
                f"{n.name} ({n.engine.exit_reason(n.handle)}; {n.logs(5).strip()[-400:]!r})" for n in stopped
            )
            raise FaultError(f"members not running: {why}")
        wait_members(self.nodes, self.service, timeout)

    @property
    def has_leader(self) -> bool:
        return self.service.leader is not None

    def db_leader(self) -> Node:
        """The member the leader probe says yes on; NotFound with every answer when none does."""
        if self.service.leader is None:
            raise NotFound(f"service {self.service.name} has no leader probe, so no leader")
        answers = []
        for node in (n for n in self.nodes if n.running):
            yes, said = probe(node, self.service.leader, self.service.ports)
            if yes:
                return node
            answers.append(f"{node.name}: {said}")
        raise NotFound("no member says it leads: " + "; ".join(answers))

    def wait_db_members(self, timeout: float = 120.0) -> None:
        wait_members(self.nodes, self.service, timeout)

    def heal_all(self) -> None:
        """Thaw, start, and flush the network rules of every member, all at once (the runtime's
        own faults, clock and disk, do not apply to a service it does not run)."""
        heal_each(self.nodes, self._heal_member)

    def _heal_member(self, node: Node) -> None:
        if node.paused:
            node.unpause()
        elif not node.running:
            node.start()
        if node.running:
            self.in_netns(node, plan.HEAL_RULES)

    def in_netns(self, node: Node, commands: Sequence[str]) -> str:
        script = " && ".join(commands) if commands else "true"
        code, output = self.engine.netns_exec(node.handle, script, self.helper_image)
        if code != 0:
            raise FaultError(f"on {node.name}: `{script}` exited {code}: {output.strip()[-500:]}")
        return output


def start_service(
    spec: ServiceSpec,
    members: int,
    engine: Engine,
    *,
    image: str | None = None,
    timeout: float = 120.0,
    quiet: bool = True,
    run_id: str | None = None,
) -> ServiceRun:
    """Start ``members`` members of ``spec`` on ``engine``; the run once every one is ready.
    On any failure whatever was started is removed, then the error raised."""
    spec.check_size(members)
    helper = engine.image(quiet=quiet)  # the runtime image: iptables and tc for network faults
    engine.guard(helper)  # the reaper is built on it (the service's image need not have Python)
    image = image or image_of(spec, engine, quiet=quiet)
    run_id = run_id or new_run_id()
    mode = mode_name(spec, members)
    names = member_names(spec, members)
    nodes_spec = tuple(NodeSpec(name, (spec.name,), db_member=True) for name in names)
    mode_spec = ModeSpec(mode, spec.description, SERVICE_DB, nodes_spec, spec.memory)
    folder = run_dir(run_id)
    details = {
        "engine": engine.name,
        "image": image,
        "helper": helper,
        "service": spec.to_dict(),
        "service_file": str(spec.path or ""),
        "members": members,
    }
    RunRecord(run_id, mode, TARGET, {"service": spec.name, "members": members}, details).write(folder)
    started = time.monotonic()
    try:
        prefix = engine.create_network(f"mm-{run_id}", {LABEL_RUN: run_id, LABEL_MODE: mode, LABEL_NODE: "network"})
        ips = {name: f"{prefix}.{11 + i}" for i, name in enumerate(names)}
        launches = [member_launch(spec, run_id, mode, name, index, ips, image) for index, name in enumerate(names)]
        with ThreadPoolExecutor(max_workers=members) as pool:
            handles = list(pool.map(engine.launch, launches))
        port = spec.ports[spec.client_port]
        nodes = [Node(s, ips[s.name], h.ports[port], h, engine) for s, h in zip(nodes_spec, handles, strict=True)]
        wait_members(nodes, spec, max(1.0, timeout - (time.monotonic() - started)))
        if spec.init:
            code, out = engine.run_once(
                image,
                list(
                    spec.init_command(
                        spec.context(name=names[0], ip=ips[names[0]], index=0, run_id=run_id, members=list(ips.items()))
                    )
                ),
                {},
                {LABEL_RUN: run_id, LABEL_MODE: mode, LABEL_NODE: "init"},
                network=f"mm-{run_id}",
            )
            if code != 0:
                raise StartTimeout(f"{spec.name}'s init exited {code}: {out.strip()[-300:]}", node="init", logs=out)
    except BaseException:
        engine.remove_run(run_id)
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return ServiceRun(
        run_id, mode_spec, image=image, engine=engine, workdir=folder, nodes=nodes, service=spec, helper_image=helper
    )


def attach_service(record: RunRecord, engine: Engine) -> ServiceRun:
    """A service's run started by another process, from its record (the service file it was
    started from) and what the engine knows of its containers; NotFound when none is left."""
    from topologies import service

    details = record.details
    spec = service.load(str(details.get("service_file") or details["service"]["service"]))
    handles = {
        h.labels.get(LABEL_NODE, ""): h for h in engine.list_run(record.run_id) if h.labels.get(LABEL_ROLE) == "node"
    }
    if not handles:
        raise NotFound(f"run {record.run_id} has no containers left; remove it with `modematrix down {record.run_id}`")
    names = member_names(spec, int(details["members"]))
    port = spec.ports[spec.client_port]
    nodes = [
        Node(
            NodeSpec(name, (spec.name,), db_member=True),
            handles[name].ip,
            handles[name].ports[port],
            handles[name],
            engine,
        )
        for name in names
        if name in handles
    ]
    layout = ModeSpec(record.mode, spec.description, SERVICE_DB, tuple(n.spec for n in nodes), spec.memory)
    helper = str(details.get("helper") or engine.image())
    return ServiceRun(
        record.run_id,
        layout,
        image=str(details["image"]),
        engine=engine,
        workdir=run_dir(record.run_id),
        nodes=nodes,
        service=spec,
        helper_image=helper,
    )


def member_launch(
    spec: ServiceSpec,
    run_id: str,
    mode: str,
    name: str,
    index: int,
    ips: Mapping[str, str],
    image: str,
    *,
    labels: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    publish: Sequence[str] | None = None,
    image_healthcheck: bool = False,
) -> Launch:
    """One member's container, as its service file says: its command and environment filled
    in, its ports published (``publish``: only these, by name), its data dir a volume of the
    run. Every member of every run is launched from here, the runtime's nodes too
    (:func:`topologies.containers.start.node_launch` adds its settings, secrets and lazyfs);
    ``env`` adds to the file's environment, ``labels`` to the run's. The image's own
    HEALTHCHECK is kept only when asked: an image may play another part than its own."""
    context = spec.context(name=name, ip=ips[name], index=index, run_id=run_id, members=list(ips.items()))
    return Launch(
        name=f"mm-{run_id}-{name}",
        image=image,
        labels={
            LABEL_RUN: run_id,
            LABEL_MODE: mode,
            LABEL_NODE: name,
            LABEL_ROLE: "node",
            LABEL_SERVICE: spec.name,
            **(labels or {}),
        },
        command=spec.member_command(context),
        env={**spec.member_environment(context), **(env or {})},
        network=f"mm-{run_id}",
        hostname=name,
        ip=ips[name],
        publish=tuple(spec.ports[p] for p in publish) if publish is not None else tuple(spec.ports.values()),
        memory=spec.memory,
        volume=f"mm-{run_id}-{name}",
        volume_path=spec.data_dir,
        healthcheck=image_healthcheck,
    )

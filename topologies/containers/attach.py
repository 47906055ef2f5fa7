"""A run started by another process (``modematrix up``), rebuilt whole from its record (the
mode it was started with, as data) and what the engine knows of its containers."""

from __future__ import annotations

from topologies.constants import API_PORT, LABEL_NODE, LABEL_ROLE
from topologies.containers.node import Node
from topologies.containers.run import ContainerRun
from topologies.engines import Engine, Handle
from topologies.exceptions import NotFound
from topologies.runs import RunRecord, run_dir
from topologies.spec import NodeSpec, parse


def attach(record: RunRecord, engine: Engine) -> ContainerRun:
    """The run of ``record``: its nodes in the mode's order (scaled ones after), each with its
    container; NotFound when none of its containers is left."""
    if "service" in record.spec:  # a service file's members (topologies.containers.service)
        from topologies.containers.service import attach_service

        return attach_service(record, engine)
    handles = engine.list_run(record.run_id)
    by_name = {h.labels.get(LABEL_NODE, ""): h for h in handles if h.labels.get(LABEL_ROLE) == "node"}
    if not by_name:
        raise NotFound(f"run {record.run_id} has no containers left; remove it with `modematrix down {record.run_id}`")
    spec = parse(record.spec, source=f"run {record.run_id}'s record")
    known = [n.name for n in spec.nodes]
    scaled = sorted((name for name in by_name if name not in known), key=_order)
    specs = [n for n in spec.nodes if n.name in by_name] + [_scaled_spec(by_name[name]) for name in scaled]
    nodes = [Node(s, by_name[s.name].ip, by_name[s.name].ports[API_PORT], by_name[s.name], engine) for s in specs]
    lb = next((h for h in handles if h.labels.get(LABEL_ROLE) == "lb"), None)
    balancer = Node(NodeSpec(lb.labels[LABEL_NODE], ()), lb.ip, lb.ports[API_PORT], lb, engine, "lb") if lb else None
    image = str(record.details.get("image") or handles[0].image)
    return ContainerRun(
        record.run_id, spec, image=image, engine=engine, workdir=run_dir(record.run_id), nodes=nodes, lb=balancer
    )


def _scaled_spec(handle: Handle) -> NodeSpec:
    """A node added by scaling: its services are in its labels (one service; never a DB member)."""
    return NodeSpec(handle.labels[LABEL_NODE], tuple(handle.labels.get("modematrix.services", "").split(",")))


def _order(name: str) -> tuple[str, int]:
    base, _, number = name.rpartition("-")
    return (base, int(number)) if number.isdigit() else (name, 0)

"""Rebuild a :class:`Cluster` from what the platform knows, for runs started by another process."""

from __future__ import annotations

from topologies import platforms, spec
from topologies.client import Credentials
from topologies.cluster import Cluster, read_secrets, run_dir
from topologies.constants import API_PORT, LABEL_DB_MEMBER, LABEL_MODE, LABEL_NODE, LABEL_ROLE, LABEL_SERVICES
from topologies.exceptions import NotFound
from topologies.node import Node
from topologies.platforms import Handle, Platform


def attach(run_id: str, platform: Platform | str = "docker") -> Cluster:
    """Rebuild a Cluster from labels, addresses and environment, so a run started by another
    process (``modematrix up``) can be inspected, faulted and removed."""
    where = platforms.get(platform, reaper=False) if isinstance(platform, str) else platform
    handles = where.list_run(run_id)
    if not handles:
        raise NotFound(f"no run {run_id!r}; `modematrix status` lists the runs")
    members = sorted((h for h in handles if h.labels.get(LABEL_ROLE) == "node"), key=_last_octet)
    lbs = [h for h in handles if h.labels.get(LABEL_ROLE) == "lb"]
    if not members:
        raise NotFound(f"run {run_id} has no node containers left; remove it with `modematrix down {run_id}`")
    node_specs = tuple(_node_spec(h) for h in members)
    env = members[0].env
    lb_spec = spec.LoadBalancerSpec(lbs[0].labels[LABEL_NODE]) if lbs else None
    db = "etcd" if env.get("RUNTIME_DB_BACKEND") == "etcd" else "sqlite"
    mode = spec.ModeSpec(members[0].labels[LABEL_MODE], "", db, node_specs, load_balancer=lb_spec)
    workdir = run_dir(run_id)
    admin = Credentials("admin", read_secrets(workdir).admin_password)
    cluster = Cluster(run_id, mode, members[0].image, where, workdir, admin)
    cluster.nodes = [Node(s, h.ip, h.ports[API_PORT], h, where) for s, h in zip(node_specs, members, strict=True)]
    if lbs and lb_spec is not None:
        cluster.lb = Node(spec.NodeSpec(lb_spec.name, ()), lbs[0].ip, lbs[0].ports[API_PORT], lbs[0], where, "lb")
    if not cluster.ca_file.exists():
        raise NotFound(f"run {run_id}: no CA certificate in {cluster.workdir}; attach works where the run started")
    return cluster


def _node_spec(handle: Handle) -> spec.NodeSpec:
    services = tuple(handle.labels.get(LABEL_SERVICES, "").split(","))
    return spec.NodeSpec(handle.labels[LABEL_NODE], services, handle.labels.get(LABEL_DB_MEMBER) == "true")


def _last_octet(handle: Handle) -> int:
    return int(handle.ip.rsplit(".", 1)[-1]) if handle.ip else 0

"""Rebuild a :class:`Cluster` from what Docker knows, for runs started by another process."""

from __future__ import annotations

from typing import Any

import docker

import images
from topologies import plan, spec
from topologies.client import Credentials
from topologies.cluster import LABEL_MODE, LABEL_NODE, LABEL_ROLE, Cluster, run_dir, runs
from topologies.exceptions import NotFound
from topologies.launch import fetch_ca
from topologies.node import Node


def attach(run_id: str, client: docker.DockerClient | None = None) -> Cluster:
    """Rebuild a Cluster from what Docker knows (labels, addresses, environment), so a run
    started by another process (``modematrix up``) can be inspected, faulted and removed."""
    client = client or images.docker_client()
    containers = runs(client).get(run_id)
    if not containers:
        raise NotFound(f"no run {run_id!r}; `modematrix status` lists the runs")
    members = [c for c in containers if c.labels.get(LABEL_ROLE) == "node"]
    lbs = [c for c in containers if c.labels.get(LABEL_ROLE) == "lb"]
    if not members:
        raise NotFound(f"run {run_id} has no node containers left")
    members.sort(key=lambda c: _ip(c).split(".")[-1].zfill(3))
    env = dict(e.split("=", 1) for e in members[0].attrs["Config"]["Env"])
    node_specs = tuple(
        spec.NodeSpec(
            c.labels[LABEL_NODE],
            tuple(c.labels.get("modematrix.services", "").split(",")),
            c.labels.get("modematrix.db_member") == "true",
        )
        for c in members
    )
    lb_spec = spec.LoadBalancerSpec(lbs[0].labels[LABEL_NODE]) if lbs else None
    mode = spec.ModeSpec(
        members[0].labels[LABEL_MODE],
        "",
        "etcd" if env.get("RUNTIME_DB_BACKEND") == "etcd" else "sqlite",
        node_specs,
        load_balancer=lb_spec,
    )
    cluster = Cluster(
        run_id,
        mode,
        members[0].image.tags[0] if members[0].image.tags else members[0].image.id,
        client,
        run_dir(run_id),
        Credentials("admin", env.get("RUNTIME_ADMIN_PASSWORD", "")),
    )
    cluster.nodes = [Node(s, _ip(c), _host_port(c), c) for s, c in zip(node_specs, members, strict=True)]
    if lbs and lb_spec is not None:
        cluster.lb = Node(spec.NodeSpec(lb_spec.name, ()), _ip(lbs[0]), _host_port(lbs[0]), lbs[0], role="lb")
    if not cluster.ca_file.exists():
        fetch_ca(cluster, timeout=10)
    return cluster


def _ip(container: Any) -> str:
    networks = container.attrs["NetworkSettings"]["Networks"]
    endpoint = next(iter(networks.values()))
    return str((endpoint.get("IPAMConfig") or {}).get("IPv4Address") or endpoint.get("IPAddress"))


def _host_port(container: Any) -> int:
    return int(container.attrs["HostConfig"]["PortBindings"][f"{plan.API_PORT}/tcp"][0]["HostPort"])

"""Starting a mode: network, nodes in parallel, the cluster CA, readiness, the balancer.

What each node gets is decided in :mod:`topologies.plan`; this module hands it to the
platform. Everything started is labelled with the run, so the platform's reaper removes it
if this process dies.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from topologies import plan, platforms, spec
from topologies.client import Credentials
from topologies.cluster import READY_POLL, Cluster, run_dir
from topologies.constants import (
    API_PORT,
    DATA_DIR,
    LABEL_DB_MEMBER,
    LABEL_MODE,
    LABEL_NODE,
    LABEL_ROLE,
    LABEL_RUN,
    LABEL_SERVICES,
)
from topologies.exceptions import PlatformError, StartTimeout
from topologies.node import Node
from topologies.platforms import Launch, Platform
from topologies.wait import WaitTimeout, wait_until


def _node_launch(cluster: Cluster, node: spec.NodeSpec, ip: str, env: Mapping[str, str]) -> Launch:
    labels = {
        **cluster.labels(node.name),
        LABEL_ROLE: "node",
        LABEL_SERVICES: ",".join(node.services),
        LABEL_DB_MEMBER: str(node.db_member).lower(),
    }
    return Launch(
        name=f"mm-{cluster.run_id}-{node.name}",
        image=cluster.image,
        labels=labels,
        command=("serve",),
        env=dict(env),
        network=cluster.network,
        hostname=node.name,
        ip=ip,
        publish=(API_PORT,),
        memory=cluster.spec.memory,
        cpuset=cluster.cpuset,
        volume=f"mm-{cluster.run_id}-{node.name}",
        volume_path=DATA_DIR,
    )


def _start_nodes(cluster: Cluster, prefix: str, secrets_: plan.Secrets, extra_env: Mapping[str, str]) -> None:
    ips = plan.addresses(cluster.spec, prefix)
    launches = [
        (n, _node_launch(cluster, n, ips[n.name], {**plan.node_env(cluster.spec, n, ips, secrets_), **extra_env}))
        for n in cluster.spec.nodes
    ]
    with ThreadPoolExecutor(max_workers=len(launches)) as pool:
        handles = list(pool.map(lambda item: cluster.platform.launch(item[1]), launches))
    cluster.nodes = [
        Node(n, ips[n.name], handle.ports[API_PORT], handle, cluster.platform)
        for (n, _), handle in zip(launches, handles, strict=True)
    ]


def fetch_ca(cluster: Cluster, timeout: float) -> None:
    """Copy the cluster CA, written by whichever node created it first, to the run's folder."""

    def read() -> str:
        running = [n for n in cluster.nodes if n.running]
        if not running:
            first = cluster.nodes[0]
            logs = first.logs(30)
            raise StartTimeout(
                f"every node exited before creating the cluster CA; {first.name} ({first.container}) exited first",
                node=first.name,
                logs=logs,
            )
        for node in running:
            code, out = node.exec(["cat", f"{DATA_DIR}/ca.pem"])
            if code == 0 and "BEGIN CERTIFICATE" in out:
                return out
        return ""

    try:
        pem = wait_until(
            read, timeout=timeout, interval=READY_POLL, message="a node wrote the cluster CA", ignore=(PlatformError,)
        )
    except WaitTimeout as exc:
        first = cluster.nodes[0]
        logs = first.logs(30)
        raise StartTimeout(
            f"no node created the cluster CA within {timeout:.0f} s ({exc})",
            node=first.name,
            logs=logs,
        ) from exc
    cluster.ca_file.write_text(pem)


def _start_load_balancer(cluster: Cluster, prefix: str) -> None:
    lb = cluster.spec.load_balancer
    if lb is None:
        return
    ips = plan.addresses(cluster.spec, prefix)
    script = (
        'printf "%s" "$CLUSTER_CA" > /tmp/ca.pem && printf "%s" "$HAPROXY_CONFIG" > /tmp/haproxy.cfg '
        "&& exec haproxy -W -db -f /tmp/haproxy.cfg"
    )
    handle = cluster.platform.launch(
        Launch(
            name=f"mm-{cluster.run_id}-{lb.name}",
            image=cluster.image,
            labels={**cluster.labels(lb.name), LABEL_ROLE: "lb"},
            entrypoint=("/usr/bin/tini", "--", "sh", "-c", script),
            env={
                "HAPROXY_CONFIG": plan.haproxy_config(lb, cluster.spec.edges, ips),
                "CLUSTER_CA": cluster.ca_file.read_text(),
            },
            network=cluster.network,
            hostname=lb.name,
            ip=ips[lb.name],
            publish=(API_PORT,),
            memory="64m",
            cpuset=cluster.cpuset,
        )
    )
    cluster.lb = Node(spec.NodeSpec(lb.name, ()), ips[lb.name], handle.ports[API_PORT], handle, cluster.platform, "lb")


@contextmanager
def start(
    mode: str | Path | spec.ModeSpec,
    *,
    image: str | None = None,
    reaper: bool = True,
    timeout: float = 180.0,
    keep: bool = False,
    quiet: bool = True,
    env: Mapping[str, str] | None = None,
    platform: Platform | str = "docker",
    cpuset: str | None = None,
) -> Iterator[Cluster]:
    """Start ``mode`` and yield the ready cluster; remove it on exit unless ``keep``.
    ``env`` adds runtime settings to every node (``{"RUNTIME_LOG_LEVEL": "debug"}``);
    ``cpuset`` pins every container to those host cores."""
    cluster = launch(
        mode, image=image, reaper=reaper, timeout=timeout, quiet=quiet, env=env, platform=platform, cpuset=cpuset
    )
    try:
        yield cluster
    finally:
        if not keep:
            cluster.stop()


def launch(
    mode: str | Path | spec.ModeSpec,
    *,
    image: str | None = None,
    reaper: bool = True,
    timeout: float = 180.0,
    quiet: bool = True,
    env: Mapping[str, str] | None = None,
    platform: Platform | str = "docker",
    cpuset: str | None = None,
) -> Cluster:
    """Start ``mode`` on ``platform`` and return it once every node is ready; on any failure
    remove whatever was started, then raise."""
    mode_spec = mode if isinstance(mode, spec.ModeSpec) else spec.load(mode)
    where = platforms.get(platform, reaper=reaper) if isinstance(platform, str) else platform
    image = image or where.image(quiet=quiet)
    where.guard(image)
    run_id = uuid.uuid4().hex[:8]
    secrets_ = plan.Secrets(secrets.token_urlsafe(32), secrets.token_urlsafe(16))
    admin = Credentials("admin", secrets_.admin_password)
    cluster = Cluster(run_id, mode_spec, image, where, run_dir(run_id), admin)
    cluster.cpuset = cpuset
    started = time.monotonic()
    try:
        prefix = where.create_network(cluster.network, cluster.labels("network"))
        _start_nodes(cluster, prefix, secrets_, env or {})
        fetch_ca(cluster, timeout)
        cluster.wait_ready(timeout=max(10.0, timeout - (time.monotonic() - started)))
        _start_load_balancer(cluster, prefix)
        if cluster.lb is not None:
            cluster.wait_ready([cluster.lb], timeout=60)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def run_image(
    args: Sequence[str],
    *,
    image: str | None = None,
    env: Mapping[str, str] | None = None,
    platform: Platform | str = "docker",
) -> tuple[int, str]:
    """Run the image once with ``args`` (after the entry point) and return (exit code, output)."""
    where = platforms.get(platform, reaper=False) if isinstance(platform, str) else platform
    image = image or where.image()
    run_id = uuid.uuid4().hex[:8]
    labels = {LABEL_RUN: run_id, LABEL_MODE: "oneshot", LABEL_NODE: "oneshot"}
    return where.run_once(image, args, env or {}, labels)

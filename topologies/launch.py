"""Starting a mode: network, nodes in parallel, the cluster CA, readiness, the balancer.

Everything started is labelled (see :mod:`topologies.cluster`); if this process dies, the
Ryuk-compatible reaper removes it.
"""

from __future__ import annotations

import random
import secrets
import socket
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.types import EndpointConfig, IPAMConfig, IPAMPool, Mount
from testcontainers.core.config import testcontainers_config
from testcontainers.core.container import DockerContainer
from testcontainers.core.labels import LABEL_SESSION_ID, SESSION_ID

import images
from topologies import plan, spec
from topologies.client import Credentials
from topologies.cluster import LABEL_MODE, LABEL_NODE, LABEL_ROLE, LABEL_RUN, READY_POLL, Cluster, run_dir
from topologies.exceptions import StartTimeout, TopologyError
from topologies.node import Node
from topologies.wait import WaitTimeout, wait_until


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def use_reaper(image: str, client: docker.DockerClient) -> None:
    """Point testcontainers at our own Ryuk-compatible reaper (built here, never pulled)."""
    testcontainers_config.ryuk_image = images.build_reaper(image, quiet=True, client=client)
    testcontainers_config.ryuk_disabled = False
    from testcontainers.core.container import Reaper

    Reaper.get_instance()


def no_reaper() -> None:
    testcontainers_config.ryuk_disabled = True


def _create_network(client: docker.DockerClient, cluster: Cluster) -> str:
    """A dedicated network on a free /24 of 10.213-10.252.x.0; returns the address prefix."""
    for _ in range(20):
        prefix = f"10.{random.randint(213, 252)}.{random.randint(0, 255)}"
        try:
            cluster.network = client.networks.create(
                f"mm-{cluster.run_id}",
                driver="bridge",
                labels=cluster.reaped_labels("network"),
                ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=f"{prefix}.0/24", gateway=f"{prefix}.1")]),
            )
            return prefix
        except docker.errors.APIError as exc:
            if "overlap" not in str(exc).lower():
                raise TopologyError(f"could not create the run's network: {exc}") from exc
    raise TopologyError("no free /24 found for the run's network after 20 tries")


def _on_network(cluster: Cluster, name: str, ip: str) -> dict[str, Any]:
    """Container settings for a fixed address and a name on the run's network."""
    network = cluster.network.name
    endpoint = EndpointConfig("1.41", aliases=[name], ipv4_address=ip)
    return {"hostname": name, "network": network, "networking_config": {network: endpoint}}


def _node_container(cluster: Cluster, node: spec.NodeSpec, ip: str, env: dict[str, str]) -> tuple[DockerContainer, int]:
    port = _free_port()
    volume = cluster.docker.volumes.create(f"mm-{cluster.run_id}-{node.name}", labels=cluster.reaped_labels(node.name))
    container = (
        DockerContainer(cluster.image)
        .with_command(["serve"])
        .with_name(f"mm-{cluster.run_id}-{node.name}")
        .with_kwargs(
            labels={
                **cluster.labels(node.name),
                LABEL_ROLE: "node",
                "modematrix.services": ",".join(node.services),
                "modematrix.db_member": str(node.db_member).lower(),
            },
            **_on_network(cluster, node.name, ip),
            mem_limit=cluster.spec.memory,
            mounts=[Mount(plan.DATA_DIR, volume.name, type="volume")],
        )
    )
    for key, value in env.items():
        container.with_env(key, value)
    container.ports = {f"{plan.API_PORT}/tcp": ("127.0.0.1", port)}
    return container, port


def _start_nodes(cluster: Cluster, prefix: str, secrets_: plan.Secrets, extra_env: Mapping[str, str]) -> None:
    ips = plan.addresses(cluster.spec, prefix)
    made = [
        (n, *_node_container(cluster, n, ips[n.name], {**plan.node_env(cluster.spec, n, ips, secrets_), **extra_env}))
        for n in cluster.spec.nodes
    ]
    with ThreadPoolExecutor(max_workers=len(made)) as pool:
        list(pool.map(lambda item: item[1].start(), made))
    cluster.nodes = [Node(n, ips[n.name], port, c.get_wrapped_container()) for n, c, port in made]


def fetch_ca(cluster: Cluster, timeout: float) -> None:
    def read() -> str | None:
        running = [n for n in cluster.nodes if n.running]
        if not running:
            first = cluster.nodes[0]
            raise StartTimeout(
                f"every node exited before creating the cluster CA; {first.name} "
                f"({first.container.name}) logs:\n{first.logs(25)}"
            )
        for node in running:
            code, out = node.exec(["cat", f"{plan.DATA_DIR}/ca.pem"])
            if code == 0 and "BEGIN CERTIFICATE" in out:
                return out
        return None

    try:
        pem = wait_until(
            read,
            timeout=timeout,
            interval=READY_POLL,
            message="a node wrote the cluster CA",
            ignore=(docker.errors.APIError,),
        )
    except WaitTimeout as exc:
        first = cluster.nodes[0]
        raise StartTimeout(
            f"no node created the cluster CA within {timeout:.0f} s ({exc}); {first.name} logs:\n{first.logs(25)}"
        ) from exc
    cluster.ca_file.write_text(pem)


def _start_load_balancer(cluster: Cluster, prefix: str) -> None:
    lb = cluster.spec.load_balancer
    if lb is None:
        return
    ips = plan.addresses(cluster.spec, prefix)
    config = plan.haproxy_config(lb, cluster.spec.edges, ips)
    lb_spec = spec.NodeSpec(lb.name, ())
    container, port = (DockerContainer(cluster.image), _free_port())
    container.with_name(f"mm-{cluster.run_id}-{lb.name}").with_env("HAPROXY_CONFIG", config).with_env(
        "CLUSTER_CA", cluster.ca_file.read_text()
    ).with_kwargs(
        entrypoint=[
            "/usr/bin/tini",
            "--",
            "sh",
            "-c",
            'printf "%s" "$CLUSTER_CA" > /tmp/ca.pem && printf "%s" "$HAPROXY_CONFIG" > /tmp/haproxy.cfg '
            "&& exec haproxy -W -db -f /tmp/haproxy.cfg",
        ],
        labels={**cluster.labels(lb.name), LABEL_ROLE: "lb"},
        **_on_network(cluster, lb.name, ips[lb.name]),
        mem_limit="64m",
    )
    container.ports = {f"{plan.API_PORT}/tcp": ("127.0.0.1", port)}
    container.start()
    cluster.lb = Node(lb_spec, ips[lb.name], port, container.get_wrapped_container(), role="lb")


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
) -> Iterator[Cluster]:
    """Start ``mode`` and yield the ready cluster; remove it on exit unless ``keep``.
    ``env`` adds runtime settings to every node (``{"RUNTIME_LOG_LEVEL": "debug"}``)."""
    cluster = launch(mode, image=image, reaper=reaper, timeout=timeout, quiet=quiet, env=env)
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
) -> Cluster:
    mode_spec = mode if isinstance(mode, spec.ModeSpec) else spec.load(mode)
    client = images.docker_client()
    image = image or images.build(quiet=quiet, client=client).tag
    use_reaper(image, client) if reaper else no_reaper()
    run_id = uuid.uuid4().hex[:8]
    workdir = run_dir(run_id)
    secrets_ = plan.Secrets(secrets.token_urlsafe(32), secrets.token_urlsafe(16))
    cluster = Cluster(run_id, mode_spec, image, client, workdir, Credentials("admin", secrets_.admin_password))
    started = time.monotonic()
    try:
        prefix = _create_network(client, cluster)
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
    args: Sequence[str], *, image: str | None = None, env: Mapping[str, str] | None = None, timeout: float = 60.0
) -> tuple[int, str]:
    """Run the image once with ``args`` (after the entry point) and return (exit code, output)."""
    client = images.docker_client()
    image = image or images.build(quiet=True, client=client).tag
    run_id = uuid.uuid4().hex[:8]
    labels = {LABEL_RUN: run_id, LABEL_MODE: "oneshot", LABEL_NODE: "oneshot", LABEL_SESSION_ID: SESSION_ID}
    container = client.containers.run(image, list(args), detach=True, labels=labels, environment=dict(env or {}))
    try:
        code = int(container.wait(timeout=timeout)["StatusCode"])
        return code, container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)

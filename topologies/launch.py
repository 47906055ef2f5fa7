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

from runtime.routing import GRPC_SERVICES
from topologies import pki, plan, platforms, spec
from topologies.client import Credentials
from topologies.cluster import Cluster, run_dir, write_secrets
from topologies.constants import (
    API_PORT,
    DATA_DIR,
    DB_CLIENT_PORT,
    GRPC_PORT,
    LABEL_DB_MEMBER,
    LABEL_MODE,
    LABEL_NODE,
    LABEL_ROLE,
    LABEL_RUN,
    LABEL_SERVICES,
    RUNTIME_UID,
    SECRETS_DIR,
)
from topologies.exceptions import StartTimeout
from topologies.node import Node
from topologies.platforms import Launch, Platform


def _node_launch(
    cluster: Cluster, node: spec.NodeSpec, ip: str, env: Mapping[str, str], files: Mapping[str, bytes]
) -> Launch:
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
        publish=(API_PORT, GRPC_PORT) if set(node.services) & set(GRPC_SERVICES) else (API_PORT,),
        memory=cluster.spec.memory,
        cpuset=cluster.cpuset,
        volume=f"mm-{cluster.run_id}-{node.name}",
        volume_path=DATA_DIR,
        files=files,
        files_owner=RUNTIME_UID,
    )


def _start_nodes(
    cluster: Cluster, prefix: str, secrets_: plan.Secrets, extra_env: Mapping[str, str], run_pki: pki.RunPki
) -> None:
    ips = plan.addresses(cluster.spec, prefix)
    launches = []
    for n in cluster.spec.nodes:
        bundle = run_pki.bundle(cluster.spec, n, ips[n.name]).dump()
        env = {**plan.node_env(cluster.spec, n, ips, secrets_, bundle), **extra_env}
        files = plan.node_secrets(n, secrets_, bundle)
        launches.append((n, _node_launch(cluster, n, ips[n.name], env, files)))
    with ThreadPoolExecutor(max_workers=len(launches)) as pool:
        handles = list(pool.map(lambda item: cluster.platform.launch(item[1]), launches))
    cluster.nodes = [
        Node(n, ips[n.name], handle.ports[API_PORT], handle, cluster.platform)
        for (n, _), handle in zip(launches, handles, strict=True)
    ]


def init_db(cluster: Cluster, prefix: str, run_pki: pki.RunPki) -> None:
    """As etcd's root, once the members are up: a DB user and role per service set, then
    authentication on (``runtime db-init``, from the same image, on the run's network)."""
    if cluster.spec.db != "etcd" or not cluster.spec.members:
        return  # without members the nodes refuse to start, and readiness says which and why
    ips = plan.addresses(cluster.spec, prefix)
    endpoints = ",".join(f"https://{ips[m.name]}:{DB_CLIENT_PORT}" for m in cluster.spec.members)
    files = {f"{SECRETS_DIR}/{plan.SECRET_FILES['tls_bundle']}": run_pki.root().dump().encode()}
    code, out = cluster.platform.run_once(
        cluster.image,
        ["db-init", "--endpoints", endpoints, "--service-sets", plan.service_sets(cluster.spec)],
        plan.secret_settings(files),
        {**cluster.labels("db-init"), LABEL_ROLE: "db-init"},
        network=cluster.network,
        files=files,
        files_owner=RUNTIME_UID,
    )
    if code != 0:
        first = cluster.spec.members[0].name
        raise StartTimeout(f"db-init exited {code}: {out.strip()[-300:]}", node=first, logs=out)


def _start_load_balancer(cluster: Cluster, prefix: str, run_pki: pki.RunPki) -> None:
    lb = cluster.spec.load_balancer
    if lb is None or lb.kind != "haproxy":
        return  # Envoys are nodes of the mode, started with the others
    ips = plan.addresses(cluster.spec, prefix)
    cert, key = run_pki.client(lb.name, [lb.name, ips[lb.name], "127.0.0.1", "localhost"]).pairs["node"]
    files = {
        f"{SECRETS_DIR}/haproxy.cfg": plan.haproxy_config(lb, cluster.spec, ips).encode(),
        f"{SECRETS_DIR}/ca.pem": cluster.ca_file.read_bytes(),
        f"{SECRETS_DIR}/lb.pem": cert + key,
    }
    handle = cluster.platform.launch(
        Launch(
            name=f"mm-{cluster.run_id}-{lb.name}",
            image=cluster.image,
            labels={**cluster.labels(lb.name), LABEL_ROLE: "lb"},
            entrypoint=("/usr/bin/tini", "--", "haproxy", "-W", "-db", "-f", f"{SECRETS_DIR}/haproxy.cfg"),
            files=files,
            files_owner=RUNTIME_UID,
            network=cluster.network,
            hostname=lb.name,
            ip=ips[lb.name],
            publish=(API_PORT, GRPC_PORT),
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
    write_secrets(cluster.workdir, secrets_)  # what attach and scale need later, on this machine only
    started = time.monotonic()
    try:
        prefix = where.create_network(cluster.network, cluster.labels("network"))
        run_pki = pki.RunPki.create(cluster.workdir, env)
        _start_nodes(cluster, prefix, secrets_, env or {}, run_pki)
        init_db(cluster, prefix, run_pki)
        cluster.wait_ready(cluster.nodes, timeout=max(10.0, timeout - (time.monotonic() - started)))
        _start_load_balancer(cluster, prefix, run_pki)
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

"""Starting a mode as containers: network, nodes in parallel, the cluster CA, the DB's users,
readiness, the balancer; then the run, built whole.

What each node gets is decided in :mod:`topologies.containers.plan`; this module hands it to
the engine. Everything started is labelled with the run, so the engine's reaper removes it if
this process dies; on any failure whatever was started is removed, then the error raised.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from images import envoy_image, golang
from images.exceptions import ImageError
from runtime.routing import GRPC_SERVICES
from topologies import pki, service
from topologies.constants import (
    API_PORT,
    DATA_DIR,
    DB_CLIENT_PORT,
    GRPC_PORT,
    LABEL_DATA_SIZE,
    LABEL_DB_MEMBER,
    LABEL_LAZY_FS,
    LABEL_MODE,
    LABEL_NODE,
    LABEL_ROLE,
    LABEL_RUN,
    LABEL_SERVICES,
    LAZY_VOLUME_DIR,
    LAZYFS_BIN,
    RUNTIME_UID,
    SECRETS_DIR,
)
from topologies.containers import plan
from topologies.containers.node import Node, wait_ready
from topologies.containers.run import TARGET, ContainerRun
from topologies.containers.service import image_of, member_launch
from topologies.engines import Engine, Launch
from topologies.exceptions import StartTimeout, UsageError
from topologies.runs import SECRET_FILES, RunRecord, Secrets, new_run_id, run_dir, secret_settings
from topologies.spec import ModeSpec, NodeSpec


@dataclass(frozen=True)
class Place:
    """Where a run's containers go: the engine, the run, its network's /24, the image, and
    the host cores they are pinned to (benchmarks)."""

    engine: Engine
    run_id: str
    mode: str
    prefix: str
    image: str
    memory: str
    cpuset: str | None = None
    data_size: int | None = None  # bytes: each node's data dir a file system this big
    lazyfs: str | None = None  # the host's lazyfs binary: each node's data dir on lazyfs

    @classmethod
    def of(cls, run: ContainerRun, prefix: str) -> Place:
        """Where more nodes of ``run`` go (scaling out, replacing a member): as its first ones."""
        lazy = lazyfs_binary() if run.lazy_fs else None
        memory, cpuset, size = run.spec.memory, run.cpuset, run.data_size
        return cls(run.engine, run.run_id, run.mode, prefix, run.image, memory, cpuset, size, lazy)

    @property
    def network(self) -> str:
        return f"mm-{self.run_id}"

    def labels(self, node: str) -> dict[str, str]:
        return {LABEL_RUN: self.run_id, LABEL_MODE: self.mode, LABEL_NODE: node}


def memory_with_data(memory: str, data_size: int | None) -> str:
    """A node's memory limit, plus its data dir when that is sized: a sized data dir is a tmpfs,
    whose pages count against the memory of the container that writes them (a filled 256 MiB
    data dir got an etcd member's node OOM-killed at its 320m).

    >>> memory_with_data("320m", None), memory_with_data("320m", 256 << 20), memory_with_data("1g", 1 << 20)
    ('320m', '576m', '1025m')
    """
    if data_size is None:
        return memory
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    total = int(memory[:-1]) * units[memory[-1]] + data_size
    return f"{-(-total // (1 << 20))}m"


# what lazyfs adds to a node's memory: itself, its journal's records and a second page cache
# (the mount's and the volume's); without it an ha node was OOM-killed after io-errors
LAZYFS_MEMORY = 64 << 20


def lazyfs_binary() -> str:
    """images/lazyfs, built on this host (Go) once per source version, for ``--lazy-fs``."""
    try:
        return str(golang.binary(golang.LAZYFS))
    except ImageError as exc:
        raise UsageError(f"--lazy-fs: {exc}") from exc


def lazy_entrypoint() -> tuple[str, ...]:
    """A lazy node's entry point: lazyfs (as root) mounts the volume's data/ at the data dir
    and runs the runtime under it as the image's user. tini stays PID 1, as in the image."""
    mount = [f"-volume={LAZY_VOLUME_DIR}", f"-mount={DATA_DIR}", f"-uid={RUNTIME_UID}", f"-gid={RUNTIME_UID}"]
    return ("/usr/bin/tini", "--", LAZYFS_BIN, "run", *mount, "--", "/usr/local/bin/runtime")


def node_launch(place: Place, node: NodeSpec, ip: str, env: Mapping[str, str], files: Mapping[str, bytes]) -> Launch:
    """One node's container: a member of the runtime's service file
    (:func:`topologies.containers.service.member_launch`, as every service's members are),
    with the runtime's own plan on top: its settings, secret files, the ports its services
    serve, the run's memory and cores, and lazyfs (:func:`lazy_entrypoint`) when asked for."""
    runtime = service.runtime()
    labels = {LABEL_SERVICES: ",".join(node.services), LABEL_DB_MEMBER: str(node.db_member).lower()}
    if place.data_size is not None:
        labels[LABEL_DATA_SIZE] = str(place.data_size)
    lazy = place.lazyfs is not None
    if lazy:
        labels[LABEL_LAZY_FS] = "true"
    member = member_launch(
        runtime,
        place.run_id,
        place.mode,
        node.name,
        0,
        {node.name: ip},  # the runtime's command names no peers: its settings do (plan.node_env)
        envoy_image(place.image) if node.is_envoy else place.image,  # only Envoy's nodes carry it
        labels=labels,
        env=env,
        publish=("api", "grpc") if set(node.services) & set(GRPC_SERVICES) else ("api",),
        image_healthcheck=True,  # the runtime image's HEALTHCHECK is the runtime's own
    )
    return replace(
        member,
        memory=memory_with_data(place.memory, (place.data_size or 0) + (LAZYFS_MEMORY if lazy else 0) or None),
        cpuset=place.cpuset,
        volume_path=LAZY_VOLUME_DIR if lazy else member.volume_path,
        volume_size=place.data_size,
        files=files,
        files_owner=RUNTIME_UID,
        entrypoint=lazy_entrypoint() if lazy else None,
        user="0" if lazy else None,
        fuse=lazy,
        binds={place.lazyfs: LAZYFS_BIN} if place.lazyfs else {},
    )


def start_nodes(
    place: Place,
    spec: ModeSpec,
    specs: Sequence[NodeSpec],
    ips: Mapping[str, str],
    secrets: Secrets,
    run_pki: pki.RunPki,
    extra_env: Mapping[str, str],
) -> list[Node]:
    """Start ``specs`` (nodes of ``spec``, whose addresses are ``ips``) in parallel."""
    launches = []
    for n in specs:
        bundle = run_pki.bundle(spec, n, ips[n.name]).dump()
        env = {**plan.node_env(spec, n, ips, secrets, bundle), **extra_env}
        launches.append((n, node_launch(place, n, ips[n.name], env, plan.node_secrets(n, secrets, bundle))))
    with ThreadPoolExecutor(max_workers=max(1, len(launches))) as pool:
        handles = list(pool.map(lambda item: place.engine.launch(item[1]), launches))
    return [
        Node(n, ips[n.name], handle.ports[API_PORT], handle, place.engine)
        for (n, _), handle in zip(launches, handles, strict=True)
    ]


def init_db(place: Place, spec: ModeSpec, ips: Mapping[str, str], run_pki: pki.RunPki) -> None:
    """As etcd's root, once the members are up: a DB user and role per service set, then
    authentication on (``runtime db-init``, from the same image, on the run's network)."""
    if spec.db != "etcd" or not spec.members:
        return  # without members the nodes refuse to start, and readiness says which and why
    endpoints = ",".join(f"https://{ips[m.name]}:{DB_CLIENT_PORT}" for m in spec.members)
    files = {f"{SECRETS_DIR}/{SECRET_FILES['tls_bundle']}": run_pki.root().dump().encode()}
    code, out = place.engine.run_once(
        place.image,
        ["db-init", "--endpoints", endpoints, "--service-sets", plan.service_sets(spec)],
        secret_settings(files),
        {**place.labels("db-init"), LABEL_ROLE: "db-init"},
        network=place.network,
        files=files,
        files_owner=RUNTIME_UID,
    )
    if code != 0:
        raise StartTimeout(f"db-init exited {code}: {out.strip()[-300:]}", node=spec.members[0].name, logs=out)


def start_balancer(place: Place, spec: ModeSpec, ips: Mapping[str, str], run_pki: pki.RunPki, ca: Path) -> Node | None:
    """HAProxy, when the mode has one (Envoys are nodes of the mode, started with the others)."""
    lb = spec.load_balancer
    if lb is None or lb.kind != "haproxy":
        return None
    cert, key = run_pki.client(lb.name, [lb.name, ips[lb.name], "127.0.0.1", "localhost"]).pairs["node"]
    files = {
        f"{SECRETS_DIR}/haproxy.cfg": plan.haproxy_config(lb, spec, ips).encode(),
        f"{SECRETS_DIR}/ca.pem": ca.read_bytes(),
        f"{SECRETS_DIR}/lb.pem": cert + key,
    }
    handle = place.engine.launch(
        Launch(
            name=f"mm-{place.run_id}-{lb.name}",
            image=place.image,
            labels={**place.labels(lb.name), LABEL_ROLE: "lb"},
            entrypoint=("/usr/bin/tini", "--", "haproxy", "-W", "-db", "-f", f"{SECRETS_DIR}/haproxy.cfg"),
            files=files,
            files_owner=RUNTIME_UID,
            network=place.network,
            hostname=lb.name,
            ip=ips[lb.name],
            publish=(API_PORT, GRPC_PORT),
            memory="64m",
            cpuset=place.cpuset,
        )
    )
    return Node(NodeSpec(lb.name, ()), ips[lb.name], handle.ports[API_PORT], handle, place.engine, "lb")


def start(
    spec: ModeSpec,
    engine: Engine,
    *,
    image: str | None = None,
    timeout: float = 180.0,
    quiet: bool = True,
    env: Mapping[str, str] | None = None,
    cpuset: str | None = None,
    run_id: str | None = None,
    data_size: int | None = None,
    lazy_fs: bool = False,
) -> ContainerRun:
    """Start ``spec`` on ``engine`` and return the run once every part is ready; on any
    failure remove whatever was started, then raise. ``env`` adds runtime settings to every
    node (``{"RUNTIME_LOG_LEVEL": "debug"}``); ``cpuset`` pins every container to host cores;
    ``data_size`` (bytes) makes each node's data dir a file system that small (a tmpfs, empty
    kept across restarts: for the full-disk scenario); ``lazy_fs`` puts each node's data dir on
    lazyfs, which loses every write no fsync covered when the node is killed (a power cut)."""
    image = image or image_of(service.runtime(), engine, quiet=quiet)  # its file's, as any service's
    engine.guard(image)
    run_id = run_id or new_run_id()
    folder, secrets = run_dir(run_id), Secrets.generate()
    RunRecord(run_id, spec.mode, TARGET, spec.to_dict(), {"engine": engine.name, "image": image}).write(folder, secrets)
    started = time.monotonic()
    try:
        prefix = engine.create_network(
            f"mm-{run_id}", {LABEL_RUN: run_id, LABEL_MODE: spec.mode, LABEL_NODE: "network"}
        )
        lazy = lazyfs_binary() if lazy_fs else None
        place = Place(engine, run_id, spec.mode, prefix, image, spec.memory, cpuset, data_size, lazy)
        ips = plan.addresses(spec, prefix)
        run_pki = pki.RunPki.create(folder, env)
        nodes = start_nodes(place, spec, spec.nodes, ips, secrets, run_pki, env or {})
        init_db(place, spec, ips, run_pki)
        context = run_pki.trust()
        wait_ready(nodes, context, timeout=max(1.0, timeout - (time.monotonic() - started)))
        lb = start_balancer(place, spec, ips, run_pki, folder / "ca.pem")
        if lb is not None:
            wait_ready([lb], context, timeout=60)
    except BaseException:
        engine.remove_run(run_id)
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return ContainerRun(run_id, spec, image=image, engine=engine, workdir=folder, nodes=nodes, lb=lb, cpuset=cpuset)


def run_image(
    args: Sequence[str], engine: Engine, *, image: str | None = None, env: Mapping[str, str] | None = None
) -> tuple[int, str]:
    """Run the image once with ``args`` (after the entry point): (exit code, output)."""
    image = image or engine.image()
    run_id = new_run_id()
    labels = {LABEL_RUN: run_id, LABEL_MODE: "oneshot", LABEL_NODE: "oneshot"}
    return engine.run_once(image, args, env or {}, labels)

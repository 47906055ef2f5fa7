"""Start a mode's containers, wait until every node is ready, hand out a :class:`Cluster`.

    with topologies.start("ha") as cluster:
        with cluster.client() as api:
            api.put("/v1/kv/x", content=b"1")

Every container, network and volume carries ``modematrix.run=<id>``, ``modematrix.mode`` and
``modematrix.node`` labels, plus testcontainers' session label, which the reaper uses to
remove them if this process dies without cleaning up.
"""

from __future__ import annotations

import json
import random
import secrets
import shutil
import socket
import ssl
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
from topologies.client import ClusterClient, Credentials
from topologies.exceptions import FaultError, NotFound, StartTimeout, TopologyError
from topologies.node import Node
from topologies.wait import WaitTimeout, wait_until

LABEL_RUN, LABEL_MODE, LABEL_NODE, LABEL_ROLE = (
    "modematrix.run",
    "modematrix.mode",
    "modematrix.node",
    "modematrix.role",
)
READY_POLL = 0.2  # seconds between /readyz polls while starting (faster than Docker's health interval)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    def __init__(
        self,
        run_id: str,
        mode: spec.ModeSpec,
        image: str,
        client: docker.DockerClient,
        workdir: Path,
        admin: Credentials,
    ) -> None:
        self.run_id, self.spec, self.image, self.docker = run_id, mode, image, client
        self.workdir, self.admin = workdir, admin
        self.nodes: list[Node] = []
        self.lb: Node | None = None
        self.network: Any = None

    # -- what users reach -----------------------------------------------------------------

    @property
    def mode(self) -> str:
        return self.spec.mode

    @property
    def ca_file(self) -> Path:
        return self.workdir / "ca.pem"

    @property
    def endpoints(self) -> list[str]:
        """The front door: the load balancer if the mode has one, else every edge node."""
        if self.lb is not None:
            return [self.lb.url]
        return [n.url for n in self.nodes if n.spec.is_edge]

    @property
    def ips(self) -> dict[str, str]:
        found = {n.name: n.ip for n in self.nodes}
        if self.lb is not None:
            found[self.lb.name] = self.lb.ip
        return found

    def node(self, name: str) -> Node:
        for node in [*self.nodes, *([self.lb] if self.lb else [])]:
            if node.name == name:
                return node
        raise NotFound(f"no node {name!r} in run {self.run_id}; nodes: {', '.join(n.name for n in self.nodes)}")

    def tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def client(
        self, credentials: Credentials | None = None, *, timeout: float = 5.0, endpoints: Sequence[str] | None = None
    ) -> ClusterClient:
        return ClusterClient(
            list(endpoints or self.endpoints), self.ca_file, credentials or self.admin, timeout=timeout
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
            code, out = member.exec(
                [
                    "etcdctl",
                    "--endpoints",
                    "http://127.0.0.1:2379",
                    "--command-timeout=2s",
                    "endpoint",
                    "status",
                    "-w",
                    "json",
                ]
            )
            answers.append(f"{member.name}: {out.strip()[:200]}")
            if code == 0:
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
            "ca_file": str(self.ca_file),
            "admin": {"username": self.admin.username, "password": self.admin.password},
            "nodes": [
                {
                    "name": n.name,
                    "container": n.container.name,
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
                raise StartTimeout(
                    f"node {node.name} ({node.container.name}) not ready after {timeout:.0f} s: {exc}; "
                    f"last /readyz answer: {last.get('answer')}\n--- last log lines ---\n{node.logs(25)}"
                ) from exc

    def wait_healthy(self, timeout: float = 120.0) -> None:
        """Every node running and ready, and the front door answering."""
        stopped = [n.name for n in self.nodes if not n.running]
        if stopped:
            raise FaultError(f"nodes not running: {', '.join(stopped)}")
        self.wait_ready(timeout=timeout)
        if self.lb is not None:
            self.wait_ready([self.lb], timeout=timeout)

    # -- faults need a shell in a node's network namespace -------------------------------

    def in_netns(self, node: Node, commands: Sequence[str]) -> str:
        """Run shell commands as root in ``node``'s network namespace, from a helper container
        of the same image with NET_ADMIN: the node itself never gets that capability."""
        script = " && ".join(commands) if commands else "true"
        helper = self.docker.containers.run(
            self.image,
            entrypoint=["sh", "-c", script],
            network_mode=f"container:{node.container.id}",
            cap_add=["NET_ADMIN"],
            user="root",
            detach=True,
            labels={**self.reaped_labels(f"{node.name}-netns"), LABEL_ROLE: "helper"},
        )
        try:
            code = helper.wait(timeout=60)["StatusCode"]
            output = helper.logs().decode(errors="replace")
        finally:
            helper.remove(force=True)
        if code != 0:
            raise FaultError(f"on {node.name}: `{script}` exited {code}: {output.strip()[-500:]}")
        return str(output)

    def labels(self, node: str) -> dict[str, str]:
        """Our labels. testcontainers adds its session label to the containers it starts."""
        return {LABEL_RUN: self.run_id, LABEL_MODE: self.mode, LABEL_NODE: node}

    def reaped_labels(self, node: str) -> dict[str, str]:
        """For what testcontainers does not create (networks, volumes, helpers): with the
        session label, so the reaper removes them too if this process dies."""
        return {**self.labels(node), LABEL_SESSION_ID: SESSION_ID}

    # -- teardown -------------------------------------------------------------------------

    def stop(self) -> None:
        remove_run(self.docker, self.run_id)
        shutil.rmtree(self.workdir, ignore_errors=True)


def run_dir(run_id: str) -> Path:
    """Where a run keeps its CA file: outlives the process that started it (``modematrix up``)."""
    path = images.cache_dir() / "runs" / run_id
    path.mkdir(parents=True, exist_ok=True)
    return path


def runs(client: docker.DockerClient) -> dict[str, list[Any]]:
    """run id -> its containers, for every run Docker knows of."""
    found: dict[str, list[Any]] = {}
    for container in client.containers.list(all=True, filters={"label": LABEL_RUN}):
        found.setdefault(container.labels[LABEL_RUN], []).append(container)
    return found


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
        _fetch_ca(cluster, timeout=10)
    return cluster


def _ip(container: Any) -> str:
    networks = container.attrs["NetworkSettings"]["Networks"]
    endpoint = next(iter(networks.values()))
    return str((endpoint.get("IPAMConfig") or {}).get("IPv4Address") or endpoint.get("IPAddress"))


def _host_port(container: Any) -> int:
    return int(container.attrs["HostConfig"]["PortBindings"][f"{plan.API_PORT}/tcp"][0]["HostPort"])


def remove_run(client: docker.DockerClient, run_id: str | None) -> dict[str, int]:
    """Remove every container, network and volume of a run (``None``: of every run)."""
    selector = {"label": f"{LABEL_RUN}={run_id}" if run_id else LABEL_RUN}
    removed = {"containers": 0, "networks": 0, "volumes": 0}
    for container in client.containers.list(all=True, filters=selector):
        try:
            container.remove(force=True, v=True)
            removed["containers"] += 1
        except docker.errors.NotFound:
            pass
    for kind, collection in (("networks", client.networks), ("volumes", client.volumes)):
        for item in collection.list(filters=selector):
            try:
                item.remove(force=True) if kind == "volumes" else item.remove()
                removed[kind] += 1
            except docker.errors.NotFound:
                pass
    return removed


# -- starting -----------------------------------------------------------------------------


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
            hostname=node.name,
            network=cluster.network.name,
            mem_limit=cluster.spec.memory,
            networking_config={cluster.network.name: EndpointConfig("1.41", aliases=[node.name], ipv4_address=ip)},
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


def _fetch_ca(cluster: Cluster, timeout: float) -> None:
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
        hostname=lb.name,
        network=cluster.network.name,
        mem_limit="64m",
        networking_config={cluster.network.name: EndpointConfig("1.41", aliases=[lb.name], ipv4_address=ips[lb.name])},
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
        _fetch_ca(cluster, timeout)
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

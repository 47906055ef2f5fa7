"""A Kubernetes cluster built here: node containers on a container engine (1 control plane,
N workers), with the components built from source (``modematrix k8s build``).

    with NodeCluster.create("r-1a2b", folder, engine, workers=3) as built:
        built.load_images([runtime_tag])      # into every worker's containerd, where missing
        built.kubeconfig_path                  # what a user's kubectl, or the k8s mode, is given

Node containers run the node image on a network of their own, privileged (containerd and
kubelet manage cgroups, mounts and iptables), with the run's labels: the engine's reaper
removes them like any container if this process dies. What each node is, its certificates
and configuration, is decided in :mod:`topologies.kubernetes.clusters.layout` and written to
the run's folder, which the node sees read-only at ``/etc/kubernetes``. No registry is
involved: the runtime image goes from the engine's archive into each node with
``ctr images import``.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Self

import httpx
from lightkube import Client
from lightkube.config.kubeconfig import KubeConfig
from lightkube.resources.core_v1 import Node as KubeNodeObject

import images
from runtime.files import write_atomic
from topologies.constants import LABEL_MODE, LABEL_NODE, LABEL_ROLE, LABEL_RUN
from topologies.engines import EXITED, PAUSED, STOPPED, Engine, Handle, Launch
from topologies.exceptions import EngineError, FaultError, NotFound, StartTimeout, UsageError
from topologies.kubernetes import apply
from topologies.kubernetes.clusters import layout
from topologies.kubernetes.clusters.layout import KubeNode
from topologies.pki import RunPki
from topologies.wait import WaitTimeout, wait_until

IMAGES_DIR = "/var/lib/mm-images"  # where nodes see saved images (read-only)
PARTITION_CHAIN = "MM-PARTITION"
ROLE = "k8s-node"
BALANCER_ROLE = "k8s-balancer"
Report = Callable[[str], None]


def _quiet(line: str) -> None:
    pass


class NodeCluster:
    """A running cluster of node containers; :meth:`stop` removes it."""

    def __init__(
        self,
        run_id: str,
        engine: Engine,
        workdir: Path,
        nodes: list[KubeNode],
        handles: dict[str, Handle],
        *,
        kubectl: Path,
        report: Report = _quiet,
        balancer: Handle | None = None,
    ) -> None:
        self.run_id, self.engine, self.workdir = run_id, engine, workdir
        self.nodes, self.handles, self.kubectl_path, self.report = nodes, handles, kubectl, report
        self.balancer = balancer  # with several control planes: HAProxy in front of them, and CoreDNS

    # -- what users reach -------------------------------------------------------------------------

    @property
    def kubeconfig_path(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def config(self) -> KubeConfig:
        return KubeConfig.from_file(self.kubeconfig_path)

    @property
    def workers(self) -> list[KubeNode]:
        return [n for n in self.nodes if not n.control_plane]

    @property
    def control_planes(self) -> list[KubeNode]:
        return layout.control_planes(self.nodes)

    def kubectl_argv(self) -> list[str]:
        return [str(self.kubectl_path), "--kubeconfig", str(self.kubeconfig_path)]

    def node_addresses(self) -> list[str]:
        """The workers' addresses on the engine's network: where a node port is dialled."""
        return [n.ip for n in self.workers]

    def kubectl(self, *args: str, timeout: float = 60) -> str:
        """Run the kubectl built here with the cluster's admin kubeconfig; its output."""
        done = subprocess.run(
            [*self.kubectl_argv(), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise EngineError(f"kubectl {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    # -- creating and finding -----------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        run_id: str,
        workdir: Path,
        engine: Engine,
        *,
        workers: int = 3,
        control_planes: int = 1,
        report: Report = _quiet,
        timeout: float = 300,
        cpuset: str | None = None,
        preload: Sequence[str] = (),
        image_store: str | None = None,
    ) -> NodeCluster:
        """Build (or reuse) the node image, start the nodes, wait until the API answers, the
        cluster's own objects are in and every node is Ready; on failure, say why (each
        node's state and last log lines) and remove what was started. The images of
        ``preload`` go into each worker's containerd while that happens (as soon as its
        containerd answers), and are in when this returns. ``image_store`` (``memory`` or
        ``disk``; default ``MODEMATRIX_K8S_IMAGE_STORE``, else memory) is where each node's
        containerd keeps them (:func:`layout.image_store`)."""
        try:
            store = layout.image_store({layout.IMAGE_STORE_ENV: image_store} if image_store else os.environ)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        started = time.monotonic()
        report("node image: building or reusing (modematrix k8s build)")
        node_image = engine.node_image()
        network = f"mm-{run_id}"
        prefix = engine.create_network(network, _labels(run_id, "network"))
        nodes = layout.plan(prefix, workers=workers, control_planes=control_planes)
        pki = RunPki.create(workdir)
        _record_images(workdir, store, preload)
        _write_files(workdir, nodes, pki, pause_image="docker.io/" + node_image.pause)
        cgroups = engine.cgroup_version()
        balancer = None
        if layout.balanced(nodes):
            report(f"starting the API's balancer (HAProxy, and CoreDNS) at {layout.balancer_ip(nodes)}")
            coredns = node_image.components.path("coredns")
            balancer = engine.launch(_balancer(run_id, workdir, nodes, engine.image(quiet=True), network, coredns))
        report(f"starting {len(nodes)} node containers on {prefix}.0/24 (cgroup v{cgroups} host)")
        handles = {}
        for node in nodes:
            launch = _launch(run_id, workdir, node, node_image.tag, network, cpuset, layout.cgroupns(cgroups), store)
            handles[node.name] = engine.launch(launch)
        built = cls(
            run_id,
            engine,
            workdir,
            nodes,
            handles,
            kubectl=node_image.components.path("kubectl"),
            report=report,
            balancer=balancer,
        )
        loading = ThreadPoolExecutor(max(len(built.workers), 1), thread_name_prefix="preload")
        try:
            # one archive, once, before the nodes ask: the images' shared layers in it once
            archive = engine.save_images(preload, _saved_dir()) if preload else None
            loads = [
                loading.submit(built._preload, node, preload, archive, timeout) for node in built.workers if archive
            ]
            built.wait_api(timeout=timeout)
            built._make_local_volumes()
            apply.apply(layout.bootstrap(nodes), built.config)
            built.wait_nodes_ready(timeout=timeout)
            built._label_roles()
            report(f"{len(nodes)} nodes Ready in {time.monotonic() - started:.1f} s")
            took = [load.result(timeout=timeout) for load in loads]
            if took:
                each = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in took)
                report(
                    f"{', '.join(preload)} in every worker's containerd at {time.monotonic() - started:.1f} s ({each})"
                )
        except BaseException:
            report(built.diagnose())
            built.stop()
            raise
        finally:
            loading.shutdown(wait=False, cancel_futures=True)
        return built

    def _preload(self, node: KubeNode, tags: Sequence[str], archive: Path, timeout: float) -> tuple[str, float]:
        """``tags`` (the engine's ``archive`` of them) into ``node``'s containerd once it
        answers; the node's name and the seconds the import took."""
        handle = self.handles[node.name]
        wait_until(
            lambda: self.engine.exec(handle, ["ctr", "version"])[0] == 0,
            timeout=timeout,
            interval=0.5,
            message=f"{node.name}'s containerd answers",
            ignore=(EngineError,),
        )
        started = time.monotonic()
        self._import(node, tags, archive)
        return node.name, time.monotonic() - started

    @classmethod
    def attach(
        cls,
        run_id: str,
        workdir: Path,
        engine: Engine,
        *,
        prefix: str,
        workers: int,
        kubectl: Path,
        control_planes: int = 1,
    ) -> Self:
        """The cluster of ``run_id``, from the engine's containers and the run's folder."""
        found = engine.list_run(run_id)
        handles = {h.labels.get(LABEL_NODE, ""): h for h in found if h.labels.get(LABEL_ROLE) == ROLE}
        if not handles:
            raise NotFound(f"run {run_id} has no node containers left; remove it with `modematrix down {run_id}`")
        balancer = next((h for h in found if h.labels.get(LABEL_ROLE) == BALANCER_ROLE), None)
        nodes = layout.plan(prefix, workers=workers, control_planes=control_planes)
        return cls(run_id, engine, workdir, nodes, handles, kubectl=kubectl, balancer=balancer)

    @property
    def prefix(self) -> str:
        return self.nodes[0].ip.rsplit(".", 1)[0]

    # -- waiting ---------------------------------------------------------------------------------

    def wait_api(self, timeout: float) -> None:
        def answers() -> bool:  # any answer; an error is retried until the timeout
            with Client(config=self.config) as client:
                list(client.list(KubeNodeObject))
            return True

        self._wait(answers, timeout, "the API server answers")

    def wait_nodes_ready(self, timeout: float) -> None:
        self._wait(lambda: not self.not_ready(), timeout, "every node Ready", lambda: f"not Ready: {self.not_ready()}")

    def _make_local_volumes(self) -> None:
        for node in self.workers:
            code, out = self.exec(node.name, layout.local_volume_script())
            if code != 0:
                raise EngineError(f"making {node.name}'s local volumes failed ({code}): {out.strip()[-300:]}")

    def _label_roles(self) -> None:
        with Client(config=self.config, field_manager=apply.FIELD_MANAGER) as client:
            for node in self.nodes:
                client.patch(KubeNodeObject, node.name, {"metadata": {"labels": layout.role_labels(node)}})

    def not_ready(self) -> dict[str, str]:
        """Nodes that are not Ready (or not registered), with the Ready condition's message."""
        found = {n.name: "not registered" for n in self.nodes}
        with Client(config=self.config) as client:
            for item in client.list(KubeNodeObject):
                name = (item.metadata.name if item.metadata else None) or ""
                for condition in (item.status.conditions if item.status else None) or []:
                    if condition.type == "Ready":
                        if condition.status == "True":
                            found.pop(name, None)
                        else:
                            found[name] = condition.message or condition.reason or "NotReady"
        return found

    def _wait(self, check: Callable[[], bool], timeout: float, what: str, why: Callable[[], str] | None = None) -> None:
        """Wait for ``check``; stop at once, with each node's state and last log lines, when
        every node container has exited (nothing will ever answer)."""

        last: list[Exception] = []

        def settled() -> bool:
            if all(self.engine.state(h) in (*STOPPED, EXITED) for h in self.handles.values()):
                raise StartTimeout(f"k8s cluster {self.run_id}: every node container has exited:\n{self.diagnose()}")
            try:
                return check()
            except Exception as exc:  # the API not up yet: asked again until the timeout
                last[:] = [exc]
                return False

        try:
            wait_until(settled, timeout=timeout, interval=1.0, message=what, ignore=())
        except WaitTimeout as exc:
            detail = f"(last: {last[0]})" if last else ""
            if why is not None:
                try:
                    detail = why()
                except Exception as error:  # the API itself may be what is down
                    detail = str(error)
            raise StartTimeout(
                f"k8s cluster {self.run_id}: {what}: not after {timeout:.0f} s {detail}".strip()
            ) from exc

    # -- images ---------------------------------------------------------------------------------

    def load_images(self, tags: Sequence[str]) -> float:
        """Put ``tags`` into the containerd of every worker that lacks one (the engine's one
        archive of them, ``ctr images import`` on each node, in parallel); seconds taken."""
        started = time.monotonic()
        store, loaded = _recorded_images(self.workdir)
        _record_images(self.workdir, store, [*loaded, *tags])  # a node restarted gets them again
        archive = self.engine.save_images(tags, _saved_dir())
        self.report(f"loading {', '.join(tags)} into {len(self.workers)} workers' containerd")
        with ThreadPoolExecutor(len(self.workers)) as pool:
            list(pool.map(lambda node: self._import(node, tags, archive), self.workers))
        return time.monotonic() - started

    def _import(self, node: KubeNode, tags: Sequence[str], archive: Path) -> None:
        """``ctr images import`` of the engine's archive of ``tags``, unless the node has each."""
        names = [_containerd_name(tag) for tag in tags]
        code, listed = self.engine.exec(self.handles[node.name], ["ctr", "-n", "k8s.io", "images", "ls", "-q"])
        if code == 0 and set(names) <= set(listed.split()):
            return  # the node has them already
        command = ["ctr", "-n", "k8s.io", "images", "import", f"{IMAGES_DIR}/{archive.name}"]
        code, out = self.engine.exec(self.handles[node.name], command)
        if code != 0:
            raise EngineError(
                f"ctr images import {', '.join(tags)} on {node.name} failed ({code}): {out.strip()[-400:]}"
            )

    def _restore_images(self, name: str) -> None:
        """After a restart: the run's images into ``name``'s containerd again, if it keeps
        them in memory (its tmpfs started empty); a control plane runs none of them."""
        store, tags = _recorded_images(self.workdir)
        node = next(n for n in self.nodes if n.name == name)
        if store != "memory" or not tags or node.control_plane:
            return
        archive = self.engine.save_images(tags, _saved_dir())  # the same archive, unless replaced since
        self._preload(node, tags, archive, timeout=120)

    @contextmanager
    def registry(self, push: Sequence[str] = ()) -> Iterator[str]:
        """A container registry on the cluster's network for the length of the block (Debian's
        docker-registry, plain HTTP), holding ``push`` and trusted by every node's containerd;
        yields its address as the nodes reach it (``IP:5000``). It carries the run's labels: the
        reaper and ``down`` remove it like a node."""
        handle = self.engine.launch(
            Launch(
                name=f"mm-{self.run_id}-registry",
                image=self.engine.registry_image(),
                labels=_labels(self.run_id, "registry"),
                network=f"mm-{self.run_id}",
                ip=f"{self.prefix}.{REGISTRY_HOST}",
                publish=(REGISTRY_PORT,),
            )
        )
        try:
            local = f"127.0.0.1:{handle.ports[REGISTRY_PORT]}"  # where this machine pushes
            wait_until(
                lambda: httpx.get(f"http://{local}/v2/", timeout=2).status_code == 200,
                timeout=60,
                interval=0.2,
                message="the registry answers",
                ignore=(httpx.HTTPError,),
            )
            for tag in push:
                self.report(f"pushing {tag} to the registry")
                self.engine.push(tag, local)
            address = f"{self.prefix}.{REGISTRY_HOST}:{REGISTRY_PORT}"
            self.trust_registry(address)
            yield address
        finally:
            self.engine.remove(handle)

    def trust_registry(self, address: str) -> None:
        """Every node's containerd pulls from ``address`` over plain HTTP (a hosts.toml under
        containerd's registry config path, read at each pull: nothing restarts)."""
        hosts = f'server = "http://{address}"\n[host."http://{address}"]\n  capabilities = ["pull", "resolve"]\n'
        folder = f"{layout.REGISTRY_HOSTS}/{address}"
        for node in self.nodes:
            code, out = self.exec(node.name, f"mkdir -p '{folder}' && printf '%s' '{hosts}' > '{folder}/hosts.toml'")
            if code != 0:
                raise EngineError(f"trusting registry {address} on {node.name} failed ({code}): {out.strip()[-300:]}")

    # -- faults (node containers) ---------------------------------------------------------------

    def exec(self, node: str, script: str) -> tuple[int, str]:
        """Run a shell script as root in the node container (its own network namespace)."""
        return self.engine.exec(self.handles[node], ["sh", "-c", script])

    def partition_node(self, node: str) -> None:
        """Drop every packet on the node's link (eth0), in its own network namespace."""
        chain = PARTITION_CHAIN
        script = (
            f"iptables -N {chain} 2>/dev/null; iptables -F {chain} && "
            f"iptables -A {chain} -i eth0 -j DROP && iptables -A {chain} -o eth0 -j DROP && "
            + " && ".join(f"iptables -I {hook} -j {chain}" for hook in ("INPUT", "OUTPUT", "FORWARD"))
        )
        code, out = self.exec(node, script)
        if code != 0:
            raise FaultError(f"partitioning {node}: {out.strip()}")

    def heal_node(self, node: str) -> None:
        """Whatever a fault did to the node container: thaw it, start it, lift a partition."""
        handle = self.handles[node]
        state = self.engine.state(handle)
        if state == PAUSED:
            self.engine.unpause(handle)
        elif state in STOPPED:
            self.engine.start(handle)
            self._restore_images(node)
        chain = PARTITION_CHAIN
        lift = " ; ".join(
            f"while iptables -D {h} -j {chain} 2>/dev/null; do :; done" for h in ("INPUT", "OUTPUT", "FORWARD")
        )
        code, out = self.exec(node, f"{lift} ; iptables -F {chain} 2>/dev/null; iptables -X {chain} 2>/dev/null; true")
        if code != 0:
            raise FaultError(f"healing {node}: {out.strip()}")

    def signal_dns(self, signal: str) -> None:
        """Send ``signal`` (``STOP``, ``CONT``) to CoreDNS wherever it runs (the control plane,
        or the balancer with several): a frozen CoreDNS answers nothing, as an unreachable one."""
        script = (
            "for p in /proc/[0-9]*; do "
            f'[ "$(cat $p/comm 2>/dev/null)" = coredns ] && kill -{signal} "${{p#/proc/}}" && echo "$p"; '
            "done; true"
        )
        if self.balancer is not None:
            code, out = self.engine.exec(self.balancer, ["sh", "-c", script])
        else:
            code, out = self.exec(layout.control_plane(self.nodes).name, script)
        if code != 0 or (signal == "STOP" and not out.strip()):
            raise FaultError(f"SIG{signal} to CoreDNS: {'no coredns process' if code == 0 else out.strip()}")

    def kill_node(self, node: str) -> None:
        self.engine.kill(self.handles[node])

    def pause_node(self, node: str) -> None:
        self.engine.pause(self.handles[node])

    def diagnose(self) -> str:
        """Each node's state and last log lines: what a failed start shows."""
        lines = []
        parts = {**({"kube-balancer": self.balancer} if self.balancer else {}), **self.handles}
        for name, handle in parts.items():
            lines.append(f"--- {name}: {self.engine.exit_reason(handle)}")
            lines.append(self.engine.logs(handle, tail=15))
        return "\n".join(lines)

    def stop(self) -> None:
        self.engine.remove_run(self.run_id)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


REGISTRY_HOST = 250  # the registry's address on the cluster's /24, beyond the nodes'
REGISTRY_PORT = 5000


def _labels(run_id: str, role: str) -> dict[str, str]:
    return {LABEL_RUN: run_id, LABEL_MODE: "cluster", LABEL_ROLE: role}  # a cluster, whichever mode runs on it


def _containerd_name(tag: str) -> str:
    """The name containerd lists an imported Docker image by.

    >>> _containerd_name("modematrix/runtime:ab"), _containerd_name("10.0.0.5:5000/x/y:1")
    ('docker.io/modematrix/runtime:ab', '10.0.0.5:5000/x/y:1')
    """
    return tag if "/" not in tag.split(":", 1)[0] or "." in tag.split("/", 1)[0] else f"docker.io/{tag}"


def _record_images(workdir: Path, store: str, tags: Sequence[str]) -> None:
    """Where the nodes keep images, and which the run put in them: a node that restarts with
    an empty store (memory) is given them again, by this process or a later one."""
    record = {"store": store, "tags": list(dict.fromkeys(tags))}
    write_atomic(workdir / "images.json", json.dumps(record).encode())


def _recorded_images(workdir: Path) -> tuple[str, list[str]]:
    """:func:`_record_images`' store and tags; a run from before it kept them on disk."""
    try:
        record = json.loads((workdir / "images.json").read_text())
    except FileNotFoundError:
        return "disk", []
    return str(record["store"]), [str(tag) for tag in record["tags"]]


def _saved_dir() -> Path:
    folder = images.cache_dir() / "saved-images"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _write_files(workdir: Path, nodes: list[KubeNode], pki: RunPki, *, pause_image: str) -> None:
    """Each node's files under the run's folder (bound into the node read-only), created with
    their final mode: a key is never readable by others, not even for a moment."""
    service_account = layout.service_account_key()
    for node in nodes:
        folder = workdir / "nodes" / node.name
        files = layout.node_files(nodes, node, pki, pause_image=pause_image, service_account=service_account)
        for name, data in files.items():
            private = name.endswith(("-key.pem", ".key", ".kubeconfig"))
            write_atomic(folder / name, data, mode=0o600 if private else 0o644)
    if layout.balanced(nodes):
        for name, data in layout.balancer_files(nodes, pki).items():
            write_atomic(workdir / "balancer" / name, data, mode=0o600 if name.endswith(".kubeconfig") else 0o644)
    write_atomic(workdir / "kubeconfig", layout.admin_kubeconfig(nodes, pki), mode=0o600)


def _balancer(run_id: str, workdir: Path, nodes: list[KubeNode], image: str, network: str, coredns: Path) -> Launch:
    """HAProxy (the runtime image has it, as the scaled-haproxy mode uses it) in front of the
    API servers, and CoreDNS (the binary built here, bound in), as root for port 53."""
    return Launch(
        name=f"mm-{run_id}-kube-balancer",
        image=image,
        labels={**_labels(run_id, BALANCER_ROLE), LABEL_NODE: "kube-balancer"},
        entrypoint=("/usr/bin/tini", "--", "bash", "-c"),
        command=(layout.balancer_script(),),
        network=network,
        hostname="kube-balancer",
        ip=layout.balancer_ip(nodes),
        user="0",
        healthcheck=False,  # the runtime's own check asks for a runtime, which this is not
        binds={str(workdir / "balancer"): layout.BALANCER_CONF, str(coredns): "/usr/local/bin/coredns"},
    )


def _launch(
    run_id: str,
    workdir: Path,
    node: KubeNode,
    image: str,
    network: str,
    cpuset: str | None,
    cgroupns: str | None,
    store: str,
) -> Launch:
    return Launch(
        name=f"mm-{run_id}-{node.name}",
        image=image,
        labels={**_labels(run_id, ROLE), LABEL_NODE: node.name},
        network=network,
        hostname=node.name,
        ip=node.ip,
        privileged=True,
        cgroupns=cgroupns,
        tmpfs=layout.node_tmpfs(store),
        binds={str(workdir / "nodes" / node.name): layout.CONF, str(_saved_dir()): IMAGES_DIR},
        volume=f"mm-{run_id}-{node.name}",
        volume_path=layout.STATE,
        cpuset=cpuset,
    )


__all__ = ["NodeCluster"]

"""The Kubernetes platform: a cluster built here from node containers, and the k8s mode on it.

    with KubeCluster.create("k8s-1a2b", workers=3) as kube:     # 1 control plane + 3 workers
        kube.load_image(runtime_tag)                          # into every node's containerd
        run = kube.deploy(spec.load("scaled"), runtime_tag)   # the mode's manifests, ready
        run.endpoints                                         # Envoy on the workers, :8443

Node containers run the node image (``modematrix k8s build``) on a Docker network of their
own, privileged (containerd and kubelet manage cgroups, mounts and iptables), with the run's
labels: the reaper removes them like any node if this process dies. What each node is, its
certificates and configuration, is decided in :mod:`topologies.kubecluster` and written to the
run's folder, which the node sees read-only at ``/etc/kubernetes``. No registry is involved:
the runtime image goes from ``docker save`` into each node with ``ctr images import``.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from lightkube import Client
from lightkube.config.kubeconfig import KubeConfig
from lightkube.resources.core_v1 import Node

import images
from images import kubernetes as components
from runtime.files import write_atomic
from topologies import kubeapply, kubecluster
from topologies.constants import LABEL_MODE, LABEL_NODE, LABEL_ROLE, LABEL_RUN
from topologies.exceptions import FaultError, PlatformError, StartTimeout
from topologies.kubecluster import KubeNode
from topologies.pki import RunPki
from topologies.platforms.base import PAUSED, STOPPED, Handle, Launch
from topologies.platforms.docker import DockerPlatform
from topologies.wait import WaitTimeout, wait_until

IMAGES_DIR = "/var/lib/mm-images"  # where nodes see saved images (read-only)
PARTITION_CHAIN = "MM-PARTITION"
Report = Callable[[str], None]


@dataclass
class KubeCluster:
    """A running cluster of node containers; :meth:`stop` removes it."""

    run_id: str
    docker: DockerPlatform
    workdir: Path
    nodes: list[KubeNode]
    node_image: components.NodeImage
    pki: RunPki
    handles: dict[str, Handle] = field(default_factory=dict)
    report: Report = print
    cpuset: str | None = None  # host cores every node container is pinned to (benchmarks)

    # -- what users reach -------------------------------------------------------------------------

    @property
    def kubeconfig_path(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def kubectl_path(self) -> Path:
        return self.node_image.components.path("kubectl")

    @property
    def config(self) -> KubeConfig:
        return KubeConfig.from_file(self.kubeconfig_path)

    def kubectl(self, *args: str, timeout: float = 60) -> str:
        """Run the kubectl built here with the cluster's admin kubeconfig; its output."""
        done = subprocess.run(
            [str(self.kubectl_path), "--kubeconfig", str(self.kubeconfig_path), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise PlatformError(f"kubectl {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    @property
    def workers(self) -> list[KubeNode]:
        return [n for n in self.nodes if not n.control_plane]

    # -- creating --------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        run_id: str,
        workdir: Path,
        *,
        workers: int = 3,
        docker: DockerPlatform | None = None,
        report: Report = print,
        timeout: float = 300,
        cpuset: str | None = None,
    ) -> KubeCluster:
        """Build (or reuse) the node image, start the nodes, wait until the API answers, the
        cluster's own objects are in and every node is Ready."""
        docker = docker or DockerPlatform()
        started = time.monotonic()
        report("node image: building or reusing (modematrix k8s build)")
        node_image = components.node_image(client=docker.client, quiet=True)
        runtime_image = docker.image()
        docker.guard(runtime_image)
        network = f"mm-{run_id}"
        prefix = docker.create_network(network, _labels(run_id, "network"))
        nodes = kubecluster.plan(prefix, workers=workers)
        pki = RunPki.create(workdir)
        cluster = cls(run_id, docker, workdir, nodes, node_image, pki, report=report, cpuset=cpuset)
        cluster._write_files()
        report(f"starting {len(nodes)} node containers on {prefix}.0/24")
        for node in nodes:
            cluster.handles[node.name] = docker.launch(cluster._launch(node, network))
        try:
            cluster.wait_api(timeout=timeout)
            kubeapply.apply(kubecluster.bootstrap(nodes), cluster.config)
            cluster.wait_nodes_ready(timeout=timeout)
            cluster._label_roles()
        except BaseException:
            cluster.report(cluster.diagnose())
            cluster.stop()
            raise
        report(f"{len(nodes)} nodes Ready in {time.monotonic() - started:.1f} s")
        return cluster

    def _write_files(self) -> None:
        service_account = kubecluster.service_account_key()
        pause = "docker.io/" + self.node_image.pause
        for node in self.nodes:
            folder = self.workdir / "nodes" / node.name
            files = kubecluster.node_files(
                self.nodes, node, self.pki, pause_image=pause, service_account=service_account
            )
            for name, data in files.items():  # created with their final mode: a key is never readable by others
                private = name.endswith(("-key.pem", ".key", ".kubeconfig"))
                write_atomic(folder / name, data, mode=0o600 if private else 0o644)
        write_atomic(self.kubeconfig_path, kubecluster.admin_kubeconfig(self.nodes, self.pki), mode=0o600)

    def _launch(self, node: KubeNode, network: str) -> Launch:
        return Launch(
            name=f"mm-{self.run_id}-{node.name}",
            image=self.node_image.tag,
            labels={**_labels(self.run_id, "k8s-node"), LABEL_NODE: node.name},
            network=network,
            hostname=node.name,
            ip=node.ip,
            privileged=True,
            tmpfs=("/run", "/tmp"),  # noqa: S108 (the node's own, as on a booted machine)
            binds={str(self.workdir / "nodes" / node.name): kubecluster.CONF, str(_saved_dir()): IMAGES_DIR},
            volume=f"mm-{self.run_id}-{node.name}",
            volume_path=kubecluster.STATE,
            cpuset=self.cpuset,
        )

    # -- waiting ---------------------------------------------------------------------------------

    def wait_api(self, timeout: float) -> None:
        def answers() -> bool:  # any answer; an error is retried until the timeout
            with Client(config=self.config) as client:
                list(client.list(Node))
            return True

        self._wait(answers, timeout, "the API server answers")

    def wait_nodes_ready(self, timeout: float) -> None:
        self._wait(lambda: not self.not_ready(), timeout, "every node Ready", lambda: f"not Ready: {self.not_ready()}")

    def _label_roles(self) -> None:
        with Client(config=self.config, field_manager=kubeapply.FIELD_MANAGER) as client:
            for node in self.nodes:
                client.patch(Node, node.name, {"metadata": {"labels": kubecluster.role_labels(node)}})

    def not_ready(self) -> dict[str, str]:
        """Nodes that are not Ready (or not registered), with the Ready condition's message."""
        found = {n.name: "not registered" for n in self.nodes}
        with Client(config=self.config) as client:
            for item in client.list(Node):
                name = (item.metadata.name if item.metadata else None) or ""
                for condition in (item.status.conditions if item.status else None) or []:
                    if condition.type == "Ready":
                        if condition.status == "True":
                            found.pop(name, None)
                        else:
                            found[name] = condition.message or condition.reason or "NotReady"
        return found

    def _wait(self, check: Callable[[], bool], timeout: float, what: str, why: Callable[[], str] | None = None) -> None:
        try:
            wait_until(check, timeout=timeout, interval=1.0, message=what, ignore=(Exception,))
        except WaitTimeout as exc:
            detail = ""
            if why is not None:
                try:
                    detail = why()
                except Exception as error:  # the API itself may be what is down
                    detail = str(error)
            raise StartTimeout(
                f"k8s cluster {self.run_id}: {what}: not after {timeout:.0f} s {detail}".strip()
            ) from exc

    # -- images ---------------------------------------------------------------------------------

    def load_image(self, tag: str) -> float:
        """Put ``tag`` into every worker's containerd (``docker save`` once, ``ctr images
        import`` on each node in parallel); seconds taken."""
        started = time.monotonic()
        archive = save_image(self.docker, tag)
        self.report(f"loading {tag} into {len(self.workers)} workers' containerd")

        def load(node: KubeNode) -> None:
            code, out = self.docker.exec(
                self.handles[node.name], ["ctr", "-n", "k8s.io", "images", "import", f"{IMAGES_DIR}/{archive.name}"]
            )
            if code != 0:
                raise PlatformError(f"ctr images import {tag} on {node.name} failed ({code}): {out.strip()[-400:]}")

        with ThreadPoolExecutor(len(self.workers)) as pool:
            list(pool.map(load, self.workers))
        return time.monotonic() - started

    # -- faults (node containers) ---------------------------------------------------------------

    def exec(self, node: str, script: str) -> tuple[int, str]:
        """Run a shell script as root in the node container (its own network namespace)."""
        return self.docker.exec(self.handles[node], ["sh", "-c", script])

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
        state = self.docker.state(handle)
        if state == PAUSED:
            self.docker.unpause(handle)
        elif state in STOPPED:
            self.docker.start(handle)
        chain = PARTITION_CHAIN
        lift = " ; ".join(
            f"while iptables -D {h} -j {chain} 2>/dev/null; do :; done" for h in ("INPUT", "OUTPUT", "FORWARD")
        )
        code, out = self.exec(node, f"{lift} ; iptables -F {chain} 2>/dev/null; iptables -X {chain} 2>/dev/null; true")
        if code != 0:
            raise FaultError(f"healing {node}: {out.strip()}")

    def kill_node(self, node: str) -> None:
        self.docker.kill(self.handles[node])

    def pause_node(self, node: str) -> None:
        self.docker.pause(self.handles[node])

    def diagnose(self) -> str:
        """Each node's state and last log lines: what a failed start shows."""
        lines = []
        for name, handle in self.handles.items():
            lines.append(f"--- {name}: {self.docker.state(handle)}")
            lines.append(self.docker.logs(handle, tail=15))
        return "\n".join(lines)

    def stop(self) -> None:
        self.docker.remove_run(self.run_id)

    def __enter__(self) -> KubeCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _labels(run_id: str, role: str) -> dict[str, str]:
    return {LABEL_RUN: run_id, LABEL_MODE: "k8s", LABEL_ROLE: role}


def _saved_dir() -> Path:
    folder = images.cache_dir() / "saved-images"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def save_image(docker: DockerPlatform, tag: str) -> Path:
    """``docker save`` of ``tag`` into the cache, once per image (the file is named by the
    image's id; older ones are removed)."""
    image = docker.client.images.get(tag)
    archive = _saved_dir() / f"{image.id.split(':')[-1][:20]}.tar"
    if not archive.exists():
        for old in _saved_dir().glob("*.tar"):
            old.unlink()
        partial = archive.with_suffix(".partial")
        with partial.open("wb") as out:
            for chunk in image.save(named=True):
                out.write(chunk)
        partial.rename(archive)
    return archive


__all__ = ["KubeCluster", "save_image"]

"""The k8s mode deployed: one namespace of a cluster, and what scenarios and users reach.

    run = kuberun.deploy(config, kubeconfig_path, namespace="mm-1a2b", image=tag,
                         folder=run_dir("mm-1a2b"), ingress=Ingress("nodeport", ("10.213.7.11", ...)))
    with run.client() as api:                      # through Envoy, as on Docker
        api.put("/v1/kv/x", content=b"1")
    run.scale("kv", 3)                             # kubectl scale, in effect

A :class:`KubeRun` offers the part of :class:`topologies.Cluster` that scenarios and load tests
use (``client``, ``endpoints``, ``grpc_endpoints``, ``ca_file``, ``admin``, ``describe``,
``wait_healthy``) so the same traffic and checkers run here. What it acts on is Kubernetes
objects (pods, Deployments), through lightkube; node containers of a cluster built here are
the platform's (:class:`topologies.platforms.kubernetes.KubeCluster`).
"""

from __future__ import annotations

import secrets as random_secrets
import shutil
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from lightkube import Client
from lightkube.config.kubeconfig import KubeConfig
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Pod

from topologies import kubeapply, spec
from topologies.client import ClusterClient, Credentials
from topologies.constants import API_PORT
from topologies.exceptions import FaultError, NotFound, StartTimeout
from topologies.manifests import Ingress, manifests
from topologies.pki import RunPki
from topologies.plan import Secrets
from topologies.wait import WaitTimeout, wait_until

if TYPE_CHECKING:
    from topologies.platforms.kubernetes import KubeCluster

MODE_SPEC = "scaled"  # the k8s mode's layout: the scaled mode's services and counts
NAME_LABEL = "app.kubernetes.io/name"


@dataclass
class KubeRun:
    namespace: str
    config: KubeConfig
    kubeconfig: Path
    workdir: Path
    image: str
    admin: Credentials
    addresses: list[str]  # where clients reach Envoy (empty: from inside the cluster only)
    applied: list[str] = field(default_factory=list)
    port: int = API_PORT  # the port at those addresses: the Service's node port when exposed so
    cluster: KubeCluster | None = None  # a cluster built here (node containers), else the user's
    mode: str = "k8s"

    @property
    def run_id(self) -> str:
        return self.namespace

    @property
    def spec(self) -> spec.ModeSpec:
        return spec.load(MODE_SPEC)

    @property
    def ca_file(self) -> Path:
        return self.workdir / "ca.pem"

    @property
    def endpoints(self) -> list[str]:
        """The front door as clients outside reach it: the node port of every address given
        (each node forwards to an Envoy, wherever it runs); what ``up --json`` prints."""
        return [f"https://{target}" for target in self.grpc_endpoints]

    @property
    def grpc_endpoints(self) -> list[str]:
        """The same doors (gRPC and HTTP share Envoy's port), as ``HOST:PORT``."""
        return [f"{a}:{self.port}" for a in self.addresses]

    def tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def client(
        self,
        credentials: Credentials | None = None,
        *,
        timeout: float = 5.0,
        endpoints: Sequence[str] | None = None,
        first: int = 0,
        resend_idempotent: bool = True,
        budget: float | None = None,
    ) -> ClusterClient:
        everywhere = endpoints or self.endpoints
        if not everywhere:
            raise NotFound(f"run {self.namespace}: no address outside the cluster reaches Envoy")
        return ClusterClient(
            list(everywhere),
            self.ca_file,
            credentials or self.admin,
            timeout=timeout,
            first=first,
            resend_idempotent=resend_idempotent,
            budget=budget,
        )

    def grpc_channel(self, endpoint: str | None = None) -> grpc.Channel:
        target = endpoint or next(iter(self.grpc_endpoints), None)
        if target is None:
            raise NotFound(f"run {self.namespace} has no gRPC endpoint")
        return grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=self.ca_file.read_bytes()))

    # -- Kubernetes objects --------------------------------------------------------------------

    def pods(self, workload: str | None = None) -> list[Pod]:
        with Client(config=self.config) as client:
            if workload is None:
                return list(client.list(Pod, namespace=self.namespace))
            return list(client.list(Pod, namespace=self.namespace, labels={NAME_LABEL: workload}))

    def ready_pods(self, workload: str) -> list[str]:
        """Names of ``workload``'s pods that are Ready and not being deleted."""
        found = []
        for pod in self.pods(workload):
            meta, status = pod.metadata, pod.status
            if meta is None or status is None or meta.deletionTimestamp is not None:
                continue
            if any(c.type == "Ready" and c.status == "True" for c in status.conditions or []):
                found.append(meta.name or "")
        return sorted(found)

    def scale(self, workload: str, replicas: int) -> None:
        """What ``kubectl scale deployment/<workload> --replicas=N`` does (the scale subresource)."""
        if replicas < 0:
            raise ValueError(f"replicas: expected 0 or more, got {replicas}")
        with Client(config=self.config, field_manager=kubeapply.FIELD_MANAGER) as client:
            client.patch(Deployment, workload, {"spec": {"replicas": replicas}}, namespace=self.namespace)

    def delete_pod(self, name: str, grace: int | None = None) -> None:
        with Client(config=self.config) as client:
            client.delete(Pod, name, namespace=self.namespace, grace_period=grace)

    def unavailable(self) -> dict[str, str]:
        return kubeapply.unavailable(self.config, self.namespace)

    def wait_healthy(self, timeout: float = 180.0) -> None:
        """Every Deployment and StatefulSet at its replicas, and the front door answering."""
        try:
            wait_until(
                lambda: not self.unavailable(), timeout=timeout, interval=1.0, message="available", ignore=(Exception,)
            )
        except WaitTimeout as exc:
            raise FaultError(f"run {self.namespace} not available after {timeout:.0f} s: {self.unavailable()}") from exc
        if self.addresses:
            with self.client(timeout=3.0) as api:
                wait_until(
                    lambda: api.get("/readyz", authenticate=False).status_code == 200,
                    timeout=timeout,
                    interval=0.5,
                    message="Envoy answers",
                    ignore=(Exception,),
                )

    def describe(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "run_id": self.namespace,
            "namespace": self.namespace,
            "kubeconfig": str(self.kubeconfig),
            "image": self.image,
            "endpoints": self.endpoints,
            "grpc_endpoints": self.grpc_endpoints,
            "front_door": f"envoy.{self.namespace}.svc:{API_PORT}",
            "ca_file": str(self.ca_file),
            "admin": {"username": self.admin.username, "password": self.admin.password},
        }

    def remove(self) -> None:
        kubeapply.delete_namespace(self.config, self.namespace)

    def heal_all(self) -> None:
        """After any fault: every node container of a cluster built here running, thawed and
        connected, and Ready (pods are Kubernetes' to replace: the health check waits)."""
        if self.cluster is None:
            return
        for node in self.cluster.nodes:
            self.cluster.heal_node(node.name)
        self.cluster.wait_nodes_ready(timeout=120)

    def stop(self) -> None:
        """Remove the run: the whole cluster if it was built for it, else its namespace."""
        if self.cluster is not None:
            self.cluster.stop()
            shutil.rmtree(self.workdir, ignore_errors=True)  # the run's folder: CA, kubeconfig, node files
        else:
            self.remove()


def deploy(
    config: KubeConfig,
    kubeconfig: Path,
    *,
    namespace: str,
    image: str,
    folder: Path,
    ingress: Ingress | None = None,
    timeout: float = 300,
) -> KubeRun:
    """Apply the k8s mode into ``namespace`` (its own: marked as the run's) and wait until
    every workload is available; on timeout the namespace is removed and the error says what
    was not ready and why."""
    ingress = ingress or Ingress()
    pki = RunPki.create(folder)
    secrets = Secrets(random_secrets.token_urlsafe(32), random_secrets.token_urlsafe(16))
    made = manifests(spec.load(MODE_SPEC), namespace=namespace, image=image, secrets=secrets, pki=pki, ingress=ingress)
    deployed = kubeapply.deploy(made, config, timeout=timeout)
    run = KubeRun(
        namespace,
        config,
        kubeconfig,
        folder,
        image,
        Credentials("admin", secrets.admin_password),
        [],
        deployed.applied,
    )
    if deployed.unavailable:
        run.remove()
        why = "; ".join(f"{k} {v}" for k, v in deployed.unavailable.items())
        raise StartTimeout(f"k8s: not available after {timeout:.0f} s, namespace {namespace} removed: {why}")
    if ingress.expose == "nodeport":
        run.addresses, run.port = list(ingress.addresses), ingress.node_port
    return run


def start(
    *, workers: int = 3, timeout: float = 400, report: Any = None, cpuset: str | None = None, reaper: bool = True
) -> KubeRun:
    """The k8s mode on a cluster built here: node containers, the runtime image loaded into
    them, the mode deployed into a namespace named like the run; ``stop()`` removes it all.
    With ``reaper`` (tests, load runs) the cluster also goes if this process dies; without
    (``modematrix up``) it stays until ``modematrix down``."""
    import uuid

    from topologies.cluster import run_dir
    from topologies.platforms.docker import DockerPlatform
    from topologies.platforms.kubernetes import KubeCluster

    run_id = f"k8s-{uuid.uuid4().hex[:8]}"
    folder = run_dir(run_id)
    say = report or (lambda line: None)
    kube = KubeCluster.create(
        run_id,
        folder / "cluster",
        workers=workers,
        docker=DockerPlatform(reaper=reaper),
        report=say,
        timeout=timeout,
        cpuset=cpuset,
    )
    try:
        image = kube.docker.image()
        took = kube.load_image(image)
        say(f"{image} in every worker's containerd ({took:.1f} s)")
        say(f"deploying the mode into namespace {run_id}")
        ingress = Ingress(expose="nodeport", addresses=tuple(n.ip for n in kube.workers))
        run = deploy(
            kube.config,
            kube.kubeconfig_path,
            namespace=run_id,
            image=image,
            folder=folder,
            ingress=ingress,
            timeout=timeout,
        )
        run.cluster = kube
        run.wait_healthy(timeout=timeout)
    except BaseException:
        kube.stop()
        raise
    return run

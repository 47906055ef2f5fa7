"""The k8s mode deployed: one namespace of a cluster, and what scenarios and users reach.

    run = kubernetes.start(spec.load("scaled"), cluster=GivenCluster.read("~/.kube/config"))
    with run.client() as api:                      # through Envoy, as on Docker
        api.put("/v1/kv/x", content=b"1")
    scale(run, {"kv": 3})                           # kubectl scale, in effect

A :class:`KubeRun` is a :class:`topologies.run.Run`: the same traffic and checkers run here.
What it acts on is Kubernetes objects (pods, Deployments) through lightkube, and, on a
cluster built here, its node containers (:class:`topologies.kubernetes.clusters.NodeCluster`).
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Self

from lightkube import Client
from lightkube.config.kubeconfig import KubeConfig
from lightkube.models.core_v1 import ServicePort, ServiceSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Pod, Service

from topologies.constants import API_PORT, ROUTED_SERVICES
from topologies.exceptions import FaultError, NotFound, StartTimeout, UsageError
from topologies.kubernetes import apply, forward
from topologies.kubernetes.clusters import Cluster, NodeCluster
from topologies.kubernetes.manifests import EVICT_AFTER_S, Ingress, manifests, workloads
from topologies.pki import RunPki
from topologies.run import Footprint, RunFolder, with_envoy_apart
from topologies.runs import Secrets
from topologies.spec import ModeSpec
from topologies.wait import WaitTimeout, wait_until

TARGET = "kubernetes"
FRONT_DOOR = "envoy"  # the Service clients outside the cluster come through
LB_WAIT_S = 120.0
NAME_LABEL = "app.kubernetes.io/name"
MAX_REPLICAS = 20
EXEC_TIMEOUT_S = 120


class KubeRun(RunFolder):
    def __init__(
        self,
        run_id: str,
        mode: str,
        spec: ModeSpec,
        *,
        cluster: Cluster,
        namespace: str,
        image: str,
        workdir: Path,
        doors: Sequence[str] = (),
        expose: str = "port-forward",
    ) -> None:
        super().__init__(run_id, workdir)
        self._mode, self.spec, self.cluster = mode, spec, cluster
        self.namespace, self.image = namespace, image
        self._doors, self.expose = list(doors), expose

    def __repr__(self) -> str:
        return f"KubeRun({self.run_id!r}, namespace={self.namespace!r})"

    # -- the Run protocol ---------------------------------------------------------------------

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def config(self) -> KubeConfig:
        return self.cluster.config

    @property
    def kubeconfig(self) -> Path:
        return self.cluster.kubeconfig_path

    @property
    def doors(self) -> list[str]:
        """Where Envoy is reached from here, as ``HOST:PORT``: local ports forwarded through the
        API server (started again on the same ports if the forwarder is gone), every node's node
        port, or the load balancer's address."""
        if self.expose == "port-forward":
            return forward.ensure(self._workdir) or self._doors
        return list(self._doors)

    @property
    def endpoints(self) -> list[str]:
        """The front door as clients outside reach it."""
        return [f"https://{door}" for door in self.doors]

    @property
    def grpc_endpoints(self) -> list[str]:
        """The same doors (gRPC and HTTP share Envoy's port), as ``HOST:PORT``."""
        return self.doors

    def describe(self) -> dict[str, Any]:
        built = self.cluster if isinstance(self.cluster, NodeCluster) else None
        return {
            "mode": self.mode,
            "target": TARGET,
            "run_id": self.run_id,
            "namespace": self.namespace,
            "kubeconfig": str(self.kubeconfig),
            "kubectl": str(built.kubectl_path) if built else "kubectl",
            "image": self.image,
            "endpoints": self.endpoints,
            "grpc_endpoints": self.grpc_endpoints,
            "expose": self.expose,
            **self._runtime_access(),
            "nodes": [{"name": n.name, "role": n.role, "ip": n.ip} for n in built.nodes] if built else [],
        }

    def _runtime_access(self) -> dict[str, Any]:
        """The runtime's front door, CA and admin: what a client of the runtime needs."""
        return {
            "front_door": f"envoy.{self.namespace}.svc:{API_PORT}",
            "ca_file": str(self.ca_file),
            "admin": {"username": self.admin.username, "password": self.admin.password},
        }

    def wait_healthy(self, timeout: float = 180.0) -> None:
        """Every Deployment and StatefulSet at its replicas, and the front door answering: a
        login through it (auth, and the DB behind it, may answer 503 for a while after the
        workloads are available again: asked again, not failed at once) and ``/readyz``."""
        try:
            wait_until(
                lambda: not self.unavailable(), timeout=timeout, interval=1.0, message="available", ignore=(Exception,)
            )
        except WaitTimeout as exc:
            raise FaultError(f"run {self.run_id} not available after {timeout:.0f} s: {self.unavailable()}") from exc
        if self.endpoints:

            def answers() -> bool:  # a login (auth and its DB answer through Envoy), then /readyz
                with self.client(timeout=3.0) as api:
                    return api.get("/readyz", authenticate=False).status_code == 200

            try:
                wait_until(answers, timeout=timeout, interval=0.5, message="Envoy answers", ignore=(Exception,))
            except WaitTimeout as exc:
                raise FaultError(f"run {self.run_id}: the front door does not answer after {timeout:.0f} s") from exc

    def heal_all(self) -> None:
        """After any fault: every node container of a cluster built here running, thawed and
        connected, and Ready (pods are Kubernetes' to replace: the health check waits)."""
        if not isinstance(self.cluster, NodeCluster):
            return
        for node in self.cluster.nodes:
            self.cluster.heal_node(node.name)
        self.cluster.signal_dns("CONT")  # a frozen CoreDNS (DnsDown) answers again
        self.cluster.wait_nodes_ready(timeout=120)
        self.restore_replicas()  # what a control-plane fault scaled, in this process or another

    def status(self) -> dict[str, Any]:
        """What ``modematrix status RUN`` shows: the nodes of a cluster built here, each pod
        (phase, ready, node) and what is not available, and why."""
        pods = []
        for pod in self.pods():
            meta, status = pod.metadata, pod.status
            ready = any(c.type == "Ready" and c.status == "True" for c in (status.conditions if status else None) or [])
            pods.append(
                {
                    "name": meta.name if meta else "?",
                    "phase": status.phase if status else "?",
                    "ready": ready,
                    "node": pod.spec.nodeName if pod.spec else None,
                }
            )
        nodes = []
        if isinstance(self.cluster, NodeCluster):
            built = self.cluster
            nodes = [
                {"name": n.name, "role": n.role, "ip": n.ip, "state": built.engine.state(built.handles[n.name])}
                for n in built.nodes
            ]
        return {
            "run_id": self.run_id,
            "mode": self.mode,
            "target": TARGET,
            "namespace": self.namespace,
            "kubeconfig": str(self.kubeconfig),
            "endpoints": self.endpoints,
            "nodes": nodes,
            "pods": sorted(pods, key=lambda p: str(p["name"])),
            "unavailable": self.unavailable(),
        }

    def parts(self) -> list[str]:
        """What ``logs`` and ``exec`` can name: the run's pods."""
        return sorted(p.metadata.name for p in self.pods() if p.metadata and p.metadata.name)

    def logs(self, part: str, tail: int = 100) -> str:
        return "".join(self._log_lines(part, tail=tail, follow=False))

    def follow(self, part: str, tail: int = 100) -> Iterator[str]:
        return self._log_lines(part, tail=tail, follow=True)

    def _log_lines(self, part: str, *, tail: int, follow: bool) -> Iterator[str]:
        if part not in self.parts():
            raise NotFound(f"no pod {part!r} in run {self.run_id}; pods: {', '.join(self.parts())}")
        with Client(config=self.config) as client:
            for line in client.log(part, namespace=self.namespace, follow=follow, tail_lines=tail):
                yield line if line.endswith("\n") else line + "\n"

    def exec(self, part: str, command: Sequence[str]) -> tuple[int, str]:
        """``kubectl exec`` in the pod (its first container): the command's exit code and output."""
        if part not in self.parts():
            raise NotFound(f"no pod {part!r} in run {self.run_id}; pods: {', '.join(self.parts())}")
        argv = [*self.cluster.kubectl_argv(), "exec", "-n", self.namespace, part, "--", *command]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=EXEC_TIMEOUT_S)
        return done.returncode, done.stdout + done.stderr  # kubectl exec exits with the command's code

    def stop(self) -> None:
        """Remove the run: its port-forward, then the whole cluster if it was built for it, else
        its namespace (a cluster given, or built here for another run and shared)."""
        forward.stop(self._workdir)
        if isinstance(self.cluster, NodeCluster) and self.cluster.run_id == self.run_id:
            self.cluster.stop()
        else:
            apply.delete_namespace(self.config, self.namespace)
        shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- Kubernetes objects --------------------------------------------------------------------

    def tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

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

    def left_on(self, node: str) -> dict[str, str]:
        """The run's Deployments that do not yet have all their replicas Ready on nodes other
        than ``node``, each with how many they have; empty once a dead node's pods run
        elsewhere (``evict_after`` seconds after Kubernetes marks it, then their start)."""
        with Client(config=self.config) as client:
            wanted = {
                d.metadata.name: (d.spec.replicas if d.spec and d.spec.replicas is not None else 1)
                for d in client.list(Deployment, namespace=self.namespace)
                if d.metadata and d.metadata.name
            }
            pods = list(client.list(Pod, namespace=self.namespace))
        elsewhere: dict[str, int] = {}
        for pod in pods:
            meta, status, spec = pod.metadata, pod.status, pod.spec
            if meta is None or status is None or spec is None or meta.deletionTimestamp is not None:
                continue
            ready = any(c.type == "Ready" and c.status == "True" for c in status.conditions or [])
            workload = (meta.labels or {}).get(NAME_LABEL, "")
            if ready and spec.nodeName != node:
                elsewhere[workload] = elsewhere.get(workload, 0) + 1
        return {
            name: f"{elsewhere.get(name, 0)} of {count} Ready off {node}"
            for name, count in sorted(wanted.items())
            if elsewhere.get(name, 0) < count
        }

    def replicas_before_fault(self, workload: str) -> int:
        """``workload``'s replicas before a fault scaled it, noted on it (an annotation: a
        later ``heal_all``, in another process, finds it) if not noted yet."""
        return note_replicas(self.config, self.namespace, workload)

    def restore_replicas(self) -> dict[str, int]:
        """Scale back what :meth:`scale_for_fault` noted."""
        return restore_replicas(self.config, self.namespace)

    def set_replicas(self, workload: str, replicas: int) -> None:
        """What ``kubectl scale deployment/<workload> --replicas=N`` does (the scale subresource)."""
        with Client(config=self.config, field_manager=apply.FIELD_MANAGER) as client:
            client.patch(Deployment, workload, {"spec": {"replicas": replicas}}, namespace=self.namespace)

    def delete_pod(self, name: str, grace: int | None = None) -> None:
        with Client(config=self.config) as client:
            client.delete(Pod, name, namespace=self.namespace, grace_period=grace)

    def memory(self, timeout: float = 60.0) -> list[Footprint]:
        """The run's running pods, from each node's kubelet (its summary API, through the API
        server's node proxy: no metrics-server needed, only ``nodes/proxy`` rights). A pod
        the kubelet has not sampled yet (it does every 10-15 s) is waited for."""
        found: list[Footprint] = []

        def sampled() -> bool:
            running = {
                p.metadata.name: p.spec.nodeName
                for p in self.pods()
                if p.metadata
                and p.metadata.name
                and p.spec
                and p.spec.nodeName
                and p.status
                and p.status.phase == "Running"
            }
            figures: dict[str, int] = {}
            for node in sorted(set(running.values())):
                figures.update(self._kubelet_rss(node))
            found[:] = [
                Footprint(name, _pod_role(name), figures[name]) for name in sorted(running) if figures.get(name)
            ]
            return len(found) == len(running)

        wait_until(sampled, timeout=timeout, interval=2.0, message="a memory figure from the kubelet for every pod")
        return with_envoy_apart(found, self.exec)

    def _kubelet_rss(self, node: str) -> dict[str, int]:
        argv = [*self.cluster.kubectl_argv(), "get", "--raw", f"/api/v1/nodes/{node}/proxy/stats/summary"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise FaultError(f"the kubelet of {node} gave no memory figures: {done.stderr.strip()[-300:]}")
        return {
            pod["podRef"]["name"]: int(pod.get("memory", {}).get("rssBytes") or 0)
            for pod in json.loads(done.stdout).get("pods", [])
            if pod.get("podRef", {}).get("namespace") == self.namespace
        }

    def unavailable(self) -> dict[str, str]:
        return apply.unavailable(self.config, self.namespace)

    @contextmanager
    def node_port_doors(self) -> Iterator[list[str]]:
        """For the length of the block, Envoy on a node port of every worker as well (a second
        Service, ``envoy-direct``): the path without the API server's tunnel, for the bench to
        compare with. Only on a cluster built here, whose nodes this machine reaches."""
        if not isinstance(self.cluster, NodeCluster):
            raise UsageError("a node-port door is made only on a cluster built here")
        with Client(config=self.config) as client:
            front = client.get(Service, FRONT_DOOR, namespace=self.namespace)
            assert front.spec is not None
            direct = Service(
                metadata=ObjectMeta(name=f"{FRONT_DOOR}-direct", namespace=self.namespace),
                spec=ServiceSpec(
                    type="NodePort",
                    selector=front.spec.selector,
                    ports=[
                        ServicePort(name=p.name, port=p.port, targetPort=p.targetPort) for p in front.spec.ports or []
                    ],
                ),
            )
            client.create(direct)
            try:
                port = apply.node_port(self.config, self.namespace, f"{FRONT_DOOR}-direct")
                doors = [f"{address}:{port}" for address in self.cluster.node_addresses()]
                wait_until(  # kube-proxy programs a new node port within its sync period
                    lambda: all(_accepts(door) for door in doors),
                    timeout=60,
                    interval=0.2,
                    message=f"node port {port} on every worker",
                )
                yield doors
            finally:
                client.delete(Service, f"{FRONT_DOOR}-direct", namespace=self.namespace)


REPLICAS_BEFORE = "modematrix.io/replicas-before-fault"


def note_replicas(config: KubeConfig, namespace: str, workload: str) -> int:
    """Annotate Deployment ``workload`` with its replicas now (kept if already noted: a second
    fault before a heal must not note the first one's count); the count to restore."""
    with Client(config=config, field_manager=apply.FIELD_MANAGER) as client:
        meta = client.get(Deployment, workload, namespace=namespace).metadata
        noted = (meta.annotations or {}).get(REPLICAS_BEFORE) if meta else None
        if noted is not None:
            return int(noted)
        current = client.get(Deployment, workload, namespace=namespace).spec
        count = current.replicas if current and current.replicas is not None else 1
        client.patch(
            Deployment, workload, {"metadata": {"annotations": {REPLICAS_BEFORE: str(count)}}}, namespace=namespace
        )
        return count


def restore_replicas(config: KubeConfig, namespace: str) -> dict[str, int]:
    """Scale every Deployment a fault noted back to its count, and drop the note; what it did."""
    restored = {}
    with Client(config=config, field_manager=apply.FIELD_MANAGER) as client:
        for deployment in client.list(Deployment, namespace=namespace):
            meta = deployment.metadata
            noted = (meta.annotations or {}).get(REPLICAS_BEFORE) if meta and meta.name else None
            if meta is None or meta.name is None or noted is None:
                continue
            patch = {"metadata": {"annotations": {REPLICAS_BEFORE: None}}, "spec": {"replicas": int(noted)}}
            client.patch(Deployment, meta.name, patch, namespace=namespace)
            restored[meta.name] = int(noted)
    return restored


def _pod_role(pod: str) -> str:
    """What a pod of the mode runs, from its name (``envoy-…``, ``etcd-0``, ``kv-…``)."""
    workload = pod.split("-", 1)[0]
    return workload if workload in ("envoy", "etcd") else "runtime"


def _accepts(door: str) -> bool:
    host, port = door.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def deploy(
    run_id: str,
    mode: str,
    spec: ModeSpec,
    cluster: Cluster,
    *,
    namespace: str,
    image: str,
    folder: Path,
    secrets: Secrets,
    ingress: Ingress,
    evict_after: int = EVICT_AFTER_S,
    timeout: float = 300,
) -> KubeRun:
    """The one way the mode reaches Kubernetes, whichever the cluster: its manifests into
    ``namespace`` (its own: marked as the run's), then every workload available; on timeout
    the namespace is removed and the error says what was not ready and why."""
    pki = RunPki.create(folder)
    made = manifests(
        spec, namespace=namespace, image=image, secrets=secrets, pki=pki, ingress=ingress, evict_after=evict_after
    )
    if ingress.expose == "loadbalancer":  # its address first: Envoy's certificate names it
        address = apply.load_balancer_address(made, cluster.config, FRONT_DOOR, timeout=min(timeout, LB_WAIT_S))
        if address is None:
            apply.delete_namespace(cluster.config, namespace)
            raise StartTimeout(
                f"k8s: no load balancer gave Service {FRONT_DOOR} an address within {min(timeout, LB_WAIT_S):.0f} s "
                f"(namespace {namespace} removed); this cluster may have none: --expose port-forward or nodeport"
            )
        ingress = replace(ingress, addresses=(address,))
        made = manifests(
            spec, namespace=namespace, image=image, secrets=secrets, pki=pki, ingress=ingress, evict_after=evict_after
        )
    deployed = apply.deploy(made, cluster.config, timeout=timeout)
    if deployed.unavailable:
        apply.delete_namespace(cluster.config, namespace)
        why = "; ".join(f"{k} {v}" for k, v in deployed.unavailable.items())
        raise StartTimeout(f"k8s: not available after {timeout:.0f} s, namespace {namespace} removed: {why}")
    return KubeRun(
        run_id,
        mode,
        spec,
        cluster=cluster,
        namespace=namespace,
        image=image,
        workdir=folder,
        doors=_doors(spec, cluster, namespace, folder, ingress, timeout),
        expose=ingress.expose,
    )


def _doors(
    spec: ModeSpec, cluster: Cluster, namespace: str, folder: Path, ingress: Ingress, timeout: float
) -> list[str]:
    """The front door as ``ingress`` exposes it: one forwarded local port per Envoy replica,
    or each node's node port, or the load balancer's address."""
    if ingress.expose == "nodeport":
        port = ingress.node_port or apply.node_port(cluster.config, namespace, FRONT_DOOR)
        return [f"{address}:{port}" for address in ingress.addresses]
    if ingress.expose == "loadbalancer":
        return [f"{address}:{API_PORT}" for address in ingress.addresses]
    replicas = sum(w.replicas for w in workloads(spec) if "envoy" in w.services)
    plan = forward.Plan(
        kubectl=cluster.kubectl_argv(),
        kubeconfig=str(cluster.kubeconfig_path),
        namespace=namespace,
        ports=forward.free_ports(max(replicas, 1)),
    )
    return forward.start(folder, plan, timeout=min(timeout, 60))


def scale(run: KubeRun, counts: Mapping[str, int]) -> dict[str, int]:
    """``modematrix scale RUN kv=4``: each routed service's Deployment to that many replicas
    (``kubectl scale``); UsageError (exit 2) before anything changes for bad input.
    Returns what each was before."""
    known = {w.name for w in workloads(run.spec)} & set(ROUTED_SERVICES)
    for service, count in counts.items():
        if service not in known:
            raise UsageError(f"unknown service {service!r}; expected one of {', '.join(sorted(known))}")
        if not 1 <= count <= MAX_REPLICAS:
            raise UsageError(f"{service}={count}: expected a count from 1 to {MAX_REPLICAS}")
    before = {service: len(run.ready_pods(service)) for service in counts}
    for service, count in counts.items():
        run.set_replicas(service, count)
    return before


def built_here_details(cluster: NodeCluster) -> dict[str, object]:
    """What a run's record says of a cluster built here, by this run (``cluster_run`` is the
    run's own id) or by another one whose cluster it shares: enough for
    :func:`topologies.kubernetes.attach` to find its node containers from another process."""
    return {
        "built": True,
        "cluster_run": cluster.run_id,
        "cluster_dir": str(cluster.workdir),
        "prefix": cluster.prefix,
        "workers": len(cluster.workers),
        "control_planes": len(cluster.control_planes),
        "kubectl": str(cluster.kubectl_path),
    }

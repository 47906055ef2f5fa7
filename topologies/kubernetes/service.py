"""A service file's service (:mod:`topologies.service`) on Kubernetes: a StatefulSet of its
members behind a headless Service, in a namespace of the run, on a cluster built here or one
the user has. The same file as on Docker: a member's ``{name}`` is its pod's name and its
``{ip}`` its stable DNS name (``etcd-1.etcd.NS.svc``), so static peers need nothing else;
``{index}`` is its ordinal. Its readiness probe is the pod's; its data dir a volume of its own.

    with start_service_k8s(service.load("etcd"), 3, engine=engines.get("docker")) as run:
        run.endpoints            # one local port per member, kubectl port-forward to its pod
        run.db_leader()          # the pod the leader probe says yes on (kubectl exec)

The run is a :class:`KubeRun`: the k8s faults (a pod deleted, a worker killed, paused or cut
off, a drain) and the scenario runner work on it unchanged.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path
from typing import Any

from lightkube import Client
from lightkube.resources.batch_v1 import Job

from topologies.engines import Engine
from topologies.exceptions import EngineError, FaultError, NotFound, StartTimeout, UsageError
from topologies.kubernetes import apply, forward
from topologies.kubernetes.clusters import Cluster, GivenCluster, NodeCluster
from topologies.kubernetes.manifests import Manifest, _budget, _quantity, _selector, probe_manifest
from topologies.kubernetes.run import TARGET, KubeRun, built_here_details
from topologies.runs import RunRecord, Secrets, new_run_id, run_dir
from topologies.service import ServiceSpec
from topologies.spec import SERVICE_DB, ModeSpec, NodeSpec
from topologies.wait import WaitTimeout, wait_until

POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"  # set on a StatefulSet's pods since Kubernetes 1.28


RESTRICTED = {  # a member's and an init's container: no privilege escalation, no capabilities
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def mode_name(spec: ServiceSpec, members: int) -> str:
    """``etcd-3-k8s``: the run's mode in results and reports."""
    return f"{spec.name}-{members}-k8s"


def host(spec: ServiceSpec, pod: str, namespace: str) -> str:
    return f"{pod}.{spec.name}.{namespace}.svc"


def manifests(spec: ServiceSpec, members: int, *, namespace: str, image: str) -> list[Manifest]:
    """The namespace, the headless Service (members resolve each other before they are
    ready), the StatefulSet (all members at once: a quorum needs them), a budget that keeps a
    quorum through a drain. Pure.

    >>> from topologies import service
    >>> made = manifests(service.load("etcd"), 3, namespace="r-1", image="modematrix/svc-etcd:t")
    >>> [m["kind"] for m in made]
    ['Namespace', 'Service', 'StatefulSet', 'PodDisruptionBudget']
    >>> args = made[2]["spec"]["template"]["spec"]["containers"][0]["args"]
    >>> args[1], args[7]
    ('--name=$(POD_NAME)', '--initial-cluster=etcd-0=http://etcd-0.etcd.r-1.svc:2380,etcd-1=http://etcd-1.etcd.r-1.svc:2380,etcd-2=http://etcd-2.etcd.r-1.svc:2380')
    """
    name = spec.name
    context = _context(spec, members, namespace, "$(POD_NAME)", f"$(POD_NAME).{name}.{namespace}.svc")
    context["index"] = "$(POD_INDEX)"
    env = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_INDEX", "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{POD_INDEX_LABEL}']"}}},
        *({"name": k, "value": v} for k, v in spec.member_environment(context).items()),
    ]
    ports = [{"name": port, "containerPort": number} for port, number in spec.ports.items()]
    container = {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": list(spec.member_command(context)),  # after the image's entry point, as on Docker
        "env": env,
        "ports": ports,
        "readinessProbe": {**probe_manifest(spec.ready, spec.ports), "periodSeconds": 1, "failureThreshold": 3},
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": _quantity(spec.memory)}},
        "securityContext": RESTRICTED,
        "volumeMounts": [{"name": "data", "mountPath": spec.data_dir}],
    }
    labels = {"app.kubernetes.io/part-of": "modematrix", "pod-security.kubernetes.io/enforce": "baseline"}
    made: list[Manifest] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": labels}},
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace, "labels": _selector(name)},
            "spec": {
                "clusterIP": "None",
                "publishNotReadyAddresses": True,
                "selector": _selector(name),
                "ports": [{"name": port, "port": number} for port, number in spec.ports.items()],
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": name, "namespace": namespace, "labels": _selector(name)},
            "spec": {
                "serviceName": name,
                "replicas": members,
                "podManagementPolicy": "Parallel",
                "selector": {"matchLabels": _selector(name)},
                "template": {
                    "metadata": {"labels": _selector(name)},
                    "spec": {
                        "automountServiceAccountToken": False,
                        "containers": [container],
                        "affinity": _spread(name),
                    },
                },
                "volumeClaimTemplates": [
                    {
                        "metadata": {"name": "data"},
                        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
                    }
                ],
            },
        },
    ]
    if members > 1:
        made.append(_budget(name, namespace, {"minAvailable": members // 2 + 1}))
    return made


def _context(spec: ServiceSpec, members: int, namespace: str, name: str, ip: str) -> dict[str, Any]:
    pods = [f"{spec.name}-{i}" for i in range(members)]
    members_at = [(pod, host(spec, pod, namespace)) for pod in pods]
    return spec.context(name=name, ip=ip, index=0, run_id=namespace, members=members_at)


def init_job(spec: ServiceSpec, members: int, *, namespace: str, image: str) -> Manifest:
    """``roles.init`` as a Job: its command filled as the first member's (``{peers}``: every
    member), run once in the image, in the namespace, after every member is ready; as on
    Docker, a failure is not tried again. Pure.

    >>> from dataclasses import replace
    >>> from topologies import service
    >>> etcd = replace(service.load("etcd"), init=("etcdctl", "--endpoints={ip}:{ports[client]}", "put", "k", "v"))
    >>> job = init_job(etcd, 3, namespace="r-1", image="i")
    >>> job["metadata"]["name"], job["spec"]["template"]["spec"]["containers"][0]["args"][1]
    ('etcd-init', '--endpoints=etcd-0.etcd.r-1.svc:2379')
    """
    first = f"{spec.name}-0"
    context = _context(spec, members, namespace, first, host(spec, first, namespace))
    container = {
        "name": "init",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": list(spec.init_command(context)),  # after the image's entry point, as on Docker
        "securityContext": RESTRICTED,
    }
    pod = {"restartPolicy": "Never", "automountServiceAccountToken": False, "containers": [container]}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": f"{spec.name}-init", "namespace": namespace, "labels": _selector(f"{spec.name}-init")},
        "spec": {"backoffLimit": 0, "template": {"metadata": {"labels": _selector(f"{spec.name}-init")}, "spec": pod}},
    }


def run_init(spec: ServiceSpec, members: int, cluster: Cluster, *, namespace: str, image: str, timeout: float) -> None:
    """Apply :func:`init_job` and wait for it; StartTimeout with its pod's last log lines if
    it failed, or did not end within ``timeout``."""
    job = init_job(spec, members, namespace=namespace, image=image)
    name = job["metadata"]["name"]
    apply.apply([job], cluster.config)

    def ended() -> str | None:
        with Client(config=cluster.config) as client:
            status = client.get(Job, name, namespace=namespace).status
        if status is not None and status.succeeded:
            return "succeeded"
        return "failed" if status is not None and status.failed else None

    try:
        outcome = wait_until(ended, timeout=timeout, interval=0.5, message=f"Job {name} ended")
    except WaitTimeout as exc:
        outcome = str(exc)
    if outcome != "succeeded":
        try:
            said = cluster.kubectl("logs", f"job/{name}", "-n", namespace, "--tail=30")
        except EngineError as exc:
            said = str(exc)
        raise StartTimeout(f"{spec.name}'s init (Job {name}) {outcome}: {said.strip()[-300:]}", node=name, logs=said)


def _spread(name: str) -> dict[str, Any]:
    """Members on different nodes where there are enough (preferred: five on three workers
    still start), so that one node's loss takes one member."""
    term = {"labelSelector": {"matchLabels": _selector(name)}, "topologyKey": "kubernetes.io/hostname"}
    return {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm": term}]
        }
    }


class ServiceKubeRun(KubeRun):
    """A service file's members as a StatefulSet; everything of :class:`KubeRun` that is about
    pods and nodes, with the service's own front door (each member's client port, forwarded
    to this machine), leader and health."""

    def __init__(self, *args: Any, service: ServiceSpec, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.service = service

    def __repr__(self) -> str:
        return f"ServiceKubeRun({self.run_id!r}, {self.mode!r}, namespace={self.namespace!r})"

    @property
    def endpoints(self) -> list[str]:
        """One local port per member (kubectl port-forward, each to a Ready pod), ``http://``."""
        return [f"http://{door}" for door in self.doors]

    @property
    def grpc_endpoints(self) -> list[str]:
        return []

    def client(self, *args: Any, **kwargs: Any) -> Any:
        raise self.service.no_runtime_api(self.run_id)

    @property
    def secrets(self) -> Secrets:  # the runtime's admin and cluster secret: a service has neither
        raise self.service.no_runtime_api(self.run_id)

    @property
    def has_leader(self) -> bool:
        return self.service.leader is not None

    def db_leader(self) -> str:
        """The pod the leader probe (``kubectl exec``) says yes on."""
        if self.service.leader is None or not self.service.leader.exec:
            raise NotFound(f"service {self.service.name} has no exec leader probe, so no leader on Kubernetes")
        answers = []
        for pod in self.ready_pods(self.service.name):
            code, out = self.exec(pod, list(self.service.leader.exec))
            if code == 0:
                return pod
            answers.append(f"{pod}: exit {code} {out.strip()[-200:]}")
        raise NotFound("no member says it leads: " + "; ".join(answers))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "service": self.service.to_dict()}

    def _runtime_access(self) -> dict[str, Any]:
        return {}  # the service's own clients need none of the runtime's front door, CA or admin

    def wait_healthy(self, timeout: float = 180.0) -> None:
        """Every member Ready (its readiness probe, asked by the kubelet), and every door open."""
        try:
            wait_until(
                lambda: not self.unavailable(), timeout=timeout, interval=1.0, message="available", ignore=(Exception,)
            )
            wait_until(lambda: all(map(_open, self.doors)), timeout=60, message="every door open")
        except WaitTimeout as exc:
            raise FaultError(f"run {self.run_id} not healthy after {timeout:.0f} s: {self.unavailable()}") from exc


def build_cluster(run_id: str, folder: Path, engine: Engine, image: str, *, workers: int = 3) -> NodeCluster:
    """A cluster built here for a service's run (or the runs of a matrix's sizes), ``image``
    preloaded into each worker; the reaper removes it if this process dies."""
    engine.guard(engine.image(quiet=True))
    return NodeCluster.create(run_id, folder, engine, workers=workers, preload=[image])


def start_service_k8s(
    spec: ServiceSpec,
    members: int,
    *,
    engine: Engine | None = None,
    kubeconfig: str | Path | None = None,
    image: str | None = None,
    workers: int = 3,
    timeout: float = 300,
    on: NodeCluster | None = None,
) -> ServiceKubeRun:
    """``members`` members of ``spec`` on a cluster the user has (``kubeconfig``; ``image``
    must be pullable there), on one built here on ``engine`` for this run (its image
    preloaded into each worker), or ``on`` one built here already, which the run deploys onto
    and leaves when it stops (a matrix's sizes share one; the image is loaded where missing).
    On any failure what was made is removed, then the error raised."""
    from topologies.containers.service import image_of

    spec.check_size(members)
    if kubeconfig is None and engine is None:
        raise UsageError("a service on Kubernetes needs a cluster: a kubeconfig, or an engine to build one on")
    if kubeconfig is not None and image is None and spec.image is None:
        raise UsageError(f"{spec.name} is built here: give the image to run on your cluster (pushed where it pulls)")
    image = image or (spec.image if kubeconfig is not None else image_of(spec, _engine(engine)))
    assert image is not None
    run_id = new_run_id()  # its folder made once the image is there: a failed build leaves nothing
    folder, mode = run_dir(run_id), mode_name(spec, members)
    cluster: Cluster | None = GivenCluster.read(kubeconfig) if kubeconfig is not None else on
    nodes = tuple(NodeSpec(f"{spec.name}-{i}", (spec.name,), db_member=True) for i in range(members))
    layout = ModeSpec(mode, spec.description, SERVICE_DB, nodes, spec.memory)
    details: dict[str, Any] = {
        "namespace": run_id,
        "image": image,
        "service": spec.to_dict(),
        "service_file": str(spec.path or ""),
        "members": members,
    }
    try:
        if cluster is None:
            built = build_cluster(run_id, folder / "cluster", _engine(engine), image, workers=workers)
            cluster = built
            details.update(built_here_details(built))
        elif isinstance(cluster, NodeCluster):  # built for another run: shared, not owned
            cluster.load_images([image])
            details.update(built_here_details(cluster))
        else:
            details.update(built=False, kubeconfig=str(cluster.kubeconfig_path))
        record = RunRecord(run_id, mode, TARGET, {"service": spec.name, "members": members}, details)
        record.write(folder)
        deployed = apply.deploy(
            manifests(spec, members, namespace=run_id, image=image), cluster.config, timeout=timeout
        )
        if deployed.unavailable:
            why = "; ".join(f"{k} {v}" for k, v in deployed.unavailable.items())
            raise StartTimeout(f"{mode}: not available after {timeout:.0f} s: {why}")
        if spec.init:  # once every member is ready, as on Docker
            run_init(spec, members, cluster, namespace=run_id, image=image, timeout=timeout)
        plan = forward.Plan(
            kubectl=cluster.kubectl_argv(),
            kubeconfig=str(cluster.kubeconfig_path),
            namespace=run_id,
            ports=forward.free_ports(members),
            workload=spec.name,
            target_port=spec.ports[spec.client_port],
        )
        doors = forward.start(folder, plan, timeout=60)
        details.update(doors=doors, expose="port-forward")
        record.write(folder)
        run = ServiceKubeRun(
            run_id, mode, layout, cluster=cluster, namespace=run_id, image=image, workdir=folder, doors=doors,
            service=spec,
        )  # fmt: skip
        run.wait_healthy(timeout=timeout)
    except BaseException:
        forward.stop(folder)
        if isinstance(cluster, NodeCluster) and cluster.run_id == run_id:
            cluster.stop()
        elif cluster is not None:
            apply.delete_namespace(cluster.config, run_id)
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return run


def attach_service(record: RunRecord, cluster: Cluster) -> ServiceKubeRun:
    """A service's run on Kubernetes started by another process, from its record."""
    from topologies import service

    details = record.details
    spec = service.load(str(details.get("service_file") or details["service"]["service"]))
    members = int(details["members"])
    nodes = tuple(NodeSpec(f"{spec.name}-{i}", (spec.name,), db_member=True) for i in range(members))
    return ServiceKubeRun(
        record.run_id,
        record.mode,
        ModeSpec(record.mode, spec.description, SERVICE_DB, nodes, spec.memory),
        cluster=cluster,
        namespace=str(details["namespace"]),
        image=str(details["image"]),
        workdir=run_dir(record.run_id),
        doors=[str(d) for d in details.get("doors", [])],
        service=spec,
    )


def _open(door: str) -> bool:
    """Whether ``HOST:PORT`` takes a TCP connection (a forwarded port: kubectl is up)."""
    address, _, port = door.rpartition(":")
    try:
        with socket.create_connection((address, int(port)), timeout=1.0):
            return True
    except OSError:
        return False


def _engine(engine: Engine | None) -> Engine:
    if engine is None:
        raise UsageError("building the service's image needs a container engine")
    return engine

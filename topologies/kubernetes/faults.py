"""Faults of the k8s mode, as values (``Fault[KubeRun]``), run by the same fault cycle and
scenario runner as every other:

- :class:`DeletePod`: ``kubectl delete pod`` of one of a workload's pods; its Deployment or
  StatefulSet replaces it; the cycle's health check waits for that.
- :class:`NodeFault`: the node container of a cluster built here is SIGKILLed, frozen, or
  drops every packet on its link (iptables in its own network namespace, where it is root);
  heal starts, thaws or reconnects it. On a cluster the user has there are no node
  containers: these faults say so and do not apply.
- :class:`Drain`: ``kubectl drain`` of a worker (evictions honour the PodDisruptionBudgets);
  heal uncordons it. Refused on a cluster the user has: its nodes carry other people's pods.
- :class:`RolloutRestart`: ``kubectl rollout restart`` of a Deployment, every pod replaced
  one at a time (``maxUnavailable: 0``); heal waits for the rollout to finish. Any cluster.
- :class:`ReplaceEtcdMember`: an etcd member removed from the cluster, then a new one added
  at the StatefulSet pod's stable address and started on an emptied data dir (etcd's member
  replace, as the containers' ``ReplaceMember``). Any cluster.
- :class:`DnsDown`: the cluster's CoreDNS frozen (SIGSTOP) for a while, healed with SIGCONT;
  on a cluster built here.
- :class:`ControlPlaneDown`: with three control planes (``--control-planes 3``), one is killed
  or frozen (any one, the etcd leader's, or the scheduler leader's), then the API is used as a
  user would: ``kubectl scale`` of kv to one more replica, through the balancer; the scenario
  holds it until ``kubectl get nodes`` answers and that replica is Ready (:func:`api_serves`).

A worker of a cluster built here runs one etcd member and maybe an Envoy, so a node fault
takes one member and up to one front door away at once, which a quorum of 3 and the other
Envoy survive.
"""

from __future__ import annotations

import os
import random
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
from lightkube import Client
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import ConfigMap

from topologies import pki
from topologies.constants import API_PORT, DB_CLIENT_PORT, DB_PEER_PORT
from topologies.exceptions import EngineError, FaultError, StartTimeout, UsageError
from topologies.faults import SKEW_S, Fault, skew_refusal
from topologies.kubernetes import forward
from topologies.kubernetes.clusters import NodeCluster
from topologies.kubernetes.manifests import CLOCK_FILE, ETCD, ETCD_JOIN
from topologies.kubernetes.run import KubeRun
from topologies.wait import WaitTimeout, wait_until

NOT_BUILT = "needs a cluster built here (node containers), not a cluster the user has"


def _built(run: KubeRun) -> NodeCluster:
    if not isinstance(run.cluster, NodeCluster):
        raise FaultError(NOT_BUILT)
    return run.cluster


def built_here(run: KubeRun) -> str | None:
    """None on a cluster built here; else why a node or DNS fault cannot run (a cluster the
    user has: its nodes are not containers of this machine's)."""
    return None if isinstance(run.cluster, NodeCluster) else NOT_BUILT


def _control_plane(run: KubeRun, node: str) -> str | None:
    if not isinstance(run.cluster, NodeCluster):
        return NOT_BUILT
    names = [n.name for n in run.cluster.control_planes]
    if len(names) < 3:
        return "needs three control planes (modematrix up k8s --control-planes 3; pytest --control-planes 3)"
    return None if node in names else f"no control plane {node!r}; control planes: {', '.join(names)}"


def three_control_planes(run: KubeRun) -> str | None:
    """None if ``run``'s cluster was built here with three control planes, else why not."""
    if not isinstance(run.cluster, NodeCluster):
        return NOT_BUILT
    return _control_plane(run, run.cluster.control_planes[0].name)


def _worker(run: KubeRun, node: str) -> str | None:
    if not isinstance(run.cluster, NodeCluster):
        return NOT_BUILT
    names = [n.name for n in run.cluster.workers]
    return None if node in names else f"no worker {node!r}; workers: {', '.join(names)}"


@dataclass(frozen=True)
class DeletePod:
    """Delete one pod of ``workload``, by name, as ``kubectl delete pod`` does."""

    workload: str
    pod: str
    grace_s: int | None = None  # None: the pod's own grace period, as kubectl does

    @property
    def name(self) -> str:
        return f"delete-pod({self.pod})"

    def applies_to(self, run: KubeRun) -> str | None:
        ready = run.ready_pods(self.workload)
        return None if self.pod in ready else f"{self.pod} is not a Ready pod of {self.workload} ({ready})"

    def apply(self, run: KubeRun) -> None:
        run.delete_pod(self.pod, grace=self.grace_s)

    def heal(self, run: KubeRun) -> None:
        pass  # the controller replaces the pod; the cycle's health check waits for it


NODE_ACTIONS = ("kill", "pause", "partition")


@dataclass(frozen=True)
class NodeFault:
    """``kill``: SIGKILL the node container; ``pause``: freeze it; ``partition``: it drops
    everything on its network link (to the other nodes, the control plane and clients) while
    its pods keep running, cut off. Heal undoes whichever it was and waits for the node."""

    node: str
    action: str

    def __post_init__(self) -> None:
        if self.action not in NODE_ACTIONS:
            raise ValueError(f"node fault: expected one of {', '.join(NODE_ACTIONS)}, got {self.action!r}")

    @property
    def name(self) -> str:
        return f"{self.action}-node({self.node})"

    def applies_to(self, run: KubeRun) -> str | None:
        return _worker(run, self.node)

    def apply(self, run: KubeRun) -> None:
        built = _built(run)
        act = {"kill": built.kill_node, "pause": built.pause_node, "partition": built.partition_node}
        act[self.action](self.node)

    def heal(self, run: KubeRun) -> None:
        built = _built(run)
        built.heal_node(self.node)
        built.wait_nodes_ready(timeout=120)


@dataclass(frozen=True)
class Drain:
    """``kubectl drain`` a worker: cordoned, its pods evicted as the budgets allow (an etcd
    member's pod waits Pending for its node: its volume is local there); heal uncordons it."""

    node: str
    timeout_s: int = 120

    @property
    def name(self) -> str:
        return f"drain({self.node})"

    def applies_to(self, run: KubeRun) -> str | None:
        return _worker(run, self.node)

    def apply(self, run: KubeRun) -> None:
        drain = ["drain", self.node, "--ignore-daemonsets", "--delete-emptydir-data", f"--timeout={self.timeout_s}s"]
        _built(run).kubectl(*drain, timeout=self.timeout_s + 30)

    def heal(self, run: KubeRun) -> None:
        _built(run).kubectl("uncordon", self.node)


@dataclass(frozen=True)
class RolloutRestart:
    """``kubectl rollout restart deployment/<workload>``: a new pod before each old one goes."""

    workload: str
    timeout_s: int = 180

    @property
    def name(self) -> str:
        return f"rollout-restart({self.workload})"

    def applies_to(self, run: KubeRun) -> str | None:
        return None if run.ready_pods(self.workload) else f"no Ready pod of {self.workload}"

    def apply(self, run: KubeRun) -> None:
        run.cluster.kubectl("rollout", "restart", f"deployment/{self.workload}", "-n", run.namespace)

    def heal(self, run: KubeRun) -> None:
        status = [
            "rollout",
            "status",
            f"deployment/{self.workload}",
            "-n",
            run.namespace,
            f"--timeout={self.timeout_s}s",
        ]
        run.cluster.kubectl(*status, timeout=self.timeout_s + 30)


SKEWED = ("auth", "kv", "queue")  # the workloads whose pods' clocks the runtime reads (not envoy's, xds')
SKEWS = {"clock-forward": SKEW_S, "clock-back": -SKEW_S}
# what the pod's runtime says its skew is (its /readyz, from inside the pod: no tunnel needed)
READ_SKEW = (
    "import json, ssl, urllib.request; c = ssl.create_default_context(); c.check_hostname = False; "
    "c.verify_mode = ssl.CERT_NONE; "
    f"print(json.load(urllib.request.urlopen('https://127.0.0.1:{API_PORT}/readyz', context=c, timeout=3))"
    ".get('clock_skew_s'))"
)


@dataclass(frozen=True)
class PodClockSkew:
    """Step one pod's wall clock by ``seconds``, as the containers' ``ClockSkew`` does a node's:
    the runtime's clock failpoint (``RUNTIME_CLOCK_SKEW_FILE``, in the pod's own volume),
    written with ``kubectl exec``. Apply and heal return once the pod's ``/readyz`` says the
    new skew; a pod that is gone by the heal is not healed (its replacement starts unskewed)."""

    pod: str
    seconds: int

    @property
    def name(self) -> str:
        return f"clock-skew({self.pod},{self.seconds:+d}s)"

    def applies_to(self, run: KubeRun) -> str | None:
        if refused := skew_refusal(self.seconds):
            return refused
        if self.pod not in run.parts():
            return f"no pod {self.pod!r} in run {run.run_id}"
        return None

    def apply(self, run: KubeRun) -> None:
        self._set(run, self.seconds)

    def heal(self, run: KubeRun) -> None:
        if self.pod in run.parts():
            self._set(run, 0)

    def _set(self, run: KubeRun, seconds: int, timeout: float = 20.0) -> None:
        code, out = run.exec(self.pod, ["sh", "-c", f"echo {seconds:+d} > {CLOCK_FILE}"])
        if code != 0:
            raise FaultError(f"could not set {self.pod}'s clock to {seconds:+d} s: {out.strip()[-200:]}")
        said: list[str] = []

        def shows() -> bool:  # the runtime re-reads the file at most once a second
            code, out = run.exec(self.pod, ["/opt/venv/bin/python", "-c", READ_SKEW])
            said[:] = [out.strip()[-120:]]
            return code == 0 and out.strip() in (str(seconds), f"{seconds}.0")

        try:
            wait_until(shows, timeout=timeout, interval=0.5, message=f"{self.pod}'s /readyz to say clock_skew_s")
        except WaitTimeout:
            raise FaultError(
                f"{self.pod}'s clock did not move to {seconds:+d} s; its /readyz says {said[:1]}"
            ) from None


def heal_clocks(run: KubeRun) -> None:
    """``modematrix fault RUN heal``: every service pod's clock back to 0 (a pod whose file is
    empty or absent was never skewed and is left alone)."""
    for pod in [p for workload in SKEWED for p in run.ready_pods(workload)]:
        code, out = run.exec(pod, ["sh", "-c", f"if [ -s {CLOCK_FILE} ]; then echo +0 > {CLOCK_FILE}; fi"])
        if code != 0:
            raise FaultError(f"could not set {pod}'s clock back: {out.strip()[-200:]}")


def skewed_pod(run: KubeRun, rng: random.Random, cycle: int, seconds: int) -> PodClockSkew:
    """A Ready pod of a service (auth, kv, queue: not Envoy's, whose clock is Envoy's own, nor
    xds), ``seconds`` forward on even cycles and back on odd ones."""
    pods = [p for workload in SKEWED for p in run.ready_pods(workload)]
    if not pods:
        raise FaultError(f"run {run.run_id} has no Ready auth, kv or queue pod to skew")
    return PodClockSkew(rng.choice(pods), seconds if cycle % 2 == 0 else -seconds)


def moved(run: KubeRun, fault: Fault[KubeRun]) -> str | None:
    """None once the pods of the node ``fault`` took away run on the other nodes, Ready (and
    so in the EndpointSlices the Envoys route by); else which Deployments are still short."""
    if not isinstance(fault, NodeFault):
        raise TypeError(f"moved: expected a node fault, got {fault.name}")
    left = run.left_on(fault.node)
    return "; ".join(f"{name}: {why}" for name, why in left.items()) or None


@dataclass(frozen=True)
class DnsDown:
    """The cluster's DNS (CoreDNS) frozen: every lookup from a pod times out until heal thaws
    it. What a pod already resolved and connected keeps working; a new name does not."""

    @property
    def name(self) -> str:
        return "dns-down"

    def applies_to(self, run: KubeRun) -> str | None:
        return built_here(run)

    def apply(self, run: KubeRun) -> None:
        _built(run).signal_dns("STOP")

    def heal(self, run: KubeRun) -> None:
        _built(run).signal_dns("CONT")


@dataclass(frozen=True)
class ReplaceEtcdMember:
    """Replace the etcd member of StatefulSet pod ``pod`` with a new one, as an operator
    replaces a member whose disk is lost (etcd's runtime reconfiguration, as the containers'
    ``ReplaceMember``). Apply removes the member from the cluster (root's certificate, through
    a port-forward to another member: ``runtime db-member remove``); it stops itself and its
    pod restarts in vain, while the other members keep the quorum. Heal adds a member at the
    pod's stable peer address (``db-member add``), puts a new mark for the pod in the
    ``etcd-join`` ConfigMap and deletes the pod: the StatefulSet starts it again on the same
    volume, and its start script, seeing a mark it has not seen, empties the data dir and
    joins as the member added (``--initial-cluster-state existing``). Healed once that member
    answers healthy. A note in the run's folder says the member awaits this, so
    ``modematrix fault RUN heal`` from another process replaces it too (:func:`heal_replaced`)."""

    pod: str
    timeout_s: float = 180.0

    @property
    def name(self) -> str:
        return f"replace-member({self.pod})"

    def applies_to(self, run: KubeRun) -> str | None:
        members = run.ready_pods(ETCD)
        if self.pod not in members:
            return f"{self.pod} is not a Ready etcd member of run {run.run_id} ({', '.join(members) or 'none'})"
        if len(members) < 3:
            return f"replacing a member needs three or more Ready (a quorum without it); this run has {len(members)}"
        return None

    def apply(self, run: KubeRun) -> None:
        _db_member(run, ["remove", self.pod], via=[p for p in run.ready_pods(ETCD) if p != self.pod])
        note = member_removed(run, self.pod)
        note.parent.mkdir(parents=True, exist_ok=True)
        note.write_text("its etcd member was removed: heal adds a new one on an emptied data dir\n")

    def heal(self, run: KubeRun) -> None:
        note = member_removed(run, self.pod)
        if not note.exists():
            return  # not applied, or healed already
        others = [p for p in run.ready_pods(ETCD) if p != self.pod]
        peer = f"https://{self.pod}.{ETCD}.{run.namespace}.svc:{DB_PEER_PORT}"
        _db_member(run, ["add", self.pod, peer], via=others)
        with Client(config=run.config) as client:
            patch = {"data": {self.pod: str(time.time_ns())}}
            client.patch(ConfigMap, ETCD_JOIN, patch, namespace=run.namespace)
        run.delete_pod(self.pod, grace=0)  # its successor mounts the ConfigMap as it is now
        with tempfile.TemporaryDirectory(prefix="etcd-health-") as folder:
            context = _root_context(run, Path(folder))  # one certificate for every poll
            wait_until(
                lambda: _member_healthy(run, self.pod, context),
                timeout=self.timeout_s,
                interval=1.0,
                message=f"the new etcd member {self.pod} healthy",
                ignore=(FaultError, EngineError, StartTimeout, httpx.HTTPError, ValueError, KeyError, OSError),
            )
        note.unlink()


def member_removed(run: KubeRun, pod: str) -> Path:
    """A note, present while ``pod``'s etcd member has been removed and not yet replaced."""
    return run.workdir / "faults" / f"replace-member-{pod}"


def heal_replaced(run: KubeRun) -> None:
    """Replace every member a :class:`ReplaceEtcdMember` removed that no heal has replaced yet
    (applied by another process: ``modematrix fault RUN replace-member etcd-1``)."""
    folder = run.workdir / "faults"
    for note in sorted(folder.glob("replace-member-*")) if folder.is_dir() else []:
        ReplaceEtcdMember(note.name.removeprefix("replace-member-")).heal(run)


def _db_member(run: KubeRun, args: Sequence[str], *, via: Sequence[str]) -> None:
    """``runtime db-member ARGS`` on this host as the DB's root (the run's CA issued its
    certificate), reaching the first of the etcd pods ``via`` through a port-forward (a member
    serves 127.0.0.1 and localhost in its certificate). FaultError with what it said if it fails."""
    if not via:
        raise FaultError(f"db-member {' '.join(args)}: no other Ready etcd member to ask")
    with tempfile.TemporaryDirectory(prefix="db-member-") as folder:
        bundle = Path(folder) / "root.json"
        bundle.write_text(pki.RunPki.load(run.workdir).root().dump())
        bundle.chmod(0o600)
        with forward.once(run.cluster.kubectl_argv(), run.namespace, f"pod/{via[0]}", DB_CLIENT_PORT) as port:
            argv = [sys.executable, "-m", "runtime", "db-member", *args, "--endpoints", f"https://127.0.0.1:{port}"]
            env = {**os.environ, "RUNTIME_TLS_BUNDLE_FILE": str(bundle)}
            done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)
    if done.returncode != 0:
        said = (done.stdout + done.stderr).strip()[-300:]
        raise FaultError(f"db-member {' '.join(args)} via {via[0]} failed ({done.returncode}): {said}")


def _root_context(run: KubeRun, folder: Path) -> ssl.SSLContext:
    """A TLS context that trusts the run's CA and shows root's certificate (files in ``folder``)."""
    root_cert, root_key = pki.RunPki.load(run.workdir).root().pairs["node"]
    cert, key = folder / "root.pem", folder / "root-key.pem"
    cert.write_bytes(root_cert)
    key.write_bytes(root_key)
    key.chmod(0o600)
    context = run.tls_context()
    context.load_cert_chain(cert, key)
    return context


def _member_healthy(run: KubeRun, pod: str, context: ssl.SSLContext) -> bool:
    """The member of ``pod`` answers ``/health`` true (it has joined and has a leader)."""
    if pod not in run.ready_pods(ETCD):
        return False
    with forward.once(run.cluster.kubectl_argv(), run.namespace, f"pod/{pod}", DB_CLIENT_PORT) as port:
        answer = httpx.get(f"https://127.0.0.1:{port}/health", verify=context, timeout=5)
    return bool(answer.json()["health"] == "true")


CONTROL_PLANE_ACTIONS = ("kill", "pause")
# what ``modematrix fault RUN ACTION TARGET`` knows on the k8s mode (kill and pause also take
# a control-plane node of a cluster built here)
ACTIONS = ("delete-pod", "rollout-restart", *NODE_ACTIONS, "drain", "clock-forward", "clock-back", "replace-member")


@dataclass(frozen=True)
class ControlPlaneDown:
    """``action`` (kill or pause) on the control-plane node ``node`` of a cluster with three,
    then ``kubectl scale deployment/<workload>`` to one more replica than the mode has, retried
    for up to ``scale_within_s`` while the balancer takes the dead API server out. Heal starts
    or thaws the node, waits for every node Ready, and scales back."""

    node: str
    action: str = "kill"
    workload: str = "kv"
    scale_within_s: float = 60.0

    def __post_init__(self) -> None:
        if self.action not in CONTROL_PLANE_ACTIONS:
            raise ValueError(f"control-plane fault: expected kill or pause, got {self.action!r}")

    @property
    def name(self) -> str:
        return f"{self.action}-control-plane({self.node})"

    def applies_to(self, run: KubeRun) -> str | None:
        return _control_plane(run, self.node)

    def apply(self, run: KubeRun) -> None:
        built = _built(run)
        before = run.replicas_before_fault(self.workload)  # noted on the Deployment: any heal scales back
        if self.action == "kill":
            built.kill_node(self.node)
        else:
            built.pause_node(self.node)
        replicas = str(before + 1)
        scale = ["scale", f"deployment/{self.workload}", "-n", run.namespace, f"--replicas={replicas}"]
        try:
            wait_until(
                lambda: bool(built.kubectl(*scale, "--request-timeout=5s", timeout=10)),
                timeout=self.scale_within_s,
                interval=0.5,
                message=f"kubectl scale deployment/{self.workload} with {self.node} down",
                ignore=(EngineError, subprocess.TimeoutExpired),
            )
        except WaitTimeout as exc:
            raise FaultError(str(exc)) from exc

    def heal(self, run: KubeRun) -> None:
        built = _built(run)
        built.heal_node(self.node)
        built.wait_nodes_ready(timeout=120)
        run.restore_replicas()


def api_serves(run: KubeRun, fault: Fault[KubeRun]) -> str | None:
    """None once, with ``fault`` holding, ``kubectl get nodes`` answers through the balancer
    and the replica :class:`ControlPlaneDown` scaled up is Ready; else what is missing."""
    if not isinstance(fault, ControlPlaneDown):
        raise TypeError(f"api_serves: expected a control-plane fault, got {fault.name}")
    try:
        run.cluster.kubectl("get", "nodes", "--request-timeout=5s", timeout=10)
    except (EngineError, subprocess.TimeoutExpired) as exc:
        return f"kubectl get nodes: {exc}"
    wanted, ready = run.replicas_before_fault(fault.workload) + 1, len(run.ready_pods(fault.workload))
    return None if ready >= wanted else f"{fault.workload}: {ready} of {wanted} replicas Ready"


def any_control_plane(run: KubeRun, rng: random.Random) -> str:
    return rng.choice([n.name for n in _built(run).control_planes])


def etcd_leader(run: KubeRun) -> str:
    """The control plane whose etcd member leads (its ``etcd_server_is_leader`` metric)."""
    built = _built(run)
    for node in built.control_planes:
        code, out = built.exec(node.name, "curl -sf http://127.0.0.1:2379/metrics | grep -x 'etcd_server_is_leader 1'")
        if code == 0 and out.strip():
            return node.name
    raise FaultError("no control plane's etcd member says it leads")


def scheduler_leader(run: KubeRun) -> str:
    """The control plane whose kube-scheduler holds the leader lease."""
    with Client(config=run.config) as client:
        lease = client.get(Lease, "kube-scheduler", namespace="kube-system")
    holder = (lease.spec.holderIdentity if lease.spec else None) or ""
    name = holder.split("_", 1)[0]
    if name not in [n.name for n in _built(run).control_planes]:
        raise FaultError(f"the scheduler's lease names no control plane: {holder!r}")
    return name


def any_worker(run: KubeRun, rng: random.Random) -> str:
    return rng.choice([n.name for n in _built(run).workers])


def any_pod(run: KubeRun, workload: str, rng: random.Random) -> DeletePod:
    ready = run.ready_pods(workload)
    if not ready:
        raise FaultError(f"no Ready pod of {workload} to delete")
    return DeletePod(workload, rng.choice(ready))


def named(action: str, target: str, run: KubeRun) -> Fault[KubeRun]:
    """What ``modematrix fault RUN ACTION TARGET`` does on the k8s mode: ``delete-pod`` of a
    pod or of a workload's (any of its Ready pods), or a node fault on a worker; UsageError
    (exit 2) for an unknown action or target, or a node fault on a cluster the user has."""
    if action == "delete-pod":
        workload = target if run.ready_pods(target) else target.rsplit("-", 2)[0]
        pods = run.ready_pods(workload)
        if target in pods:
            return DeletePod(workload, target)
        if pods:
            return DeletePod(target, random.choice(pods))
        raise UsageError(f"delete-pod {target}: no Ready pod and no workload of that name in {run.namespace}")
    if action in CONTROL_PLANE_ACTIONS and isinstance(run.cluster, NodeCluster):
        if target in [n.name for n in run.cluster.control_planes]:
            reason = _control_plane(run, target)
            if reason:
                raise UsageError(f"{action} {target}: {reason}")
            return ControlPlaneDown(target, action)
    if action in (*NODE_ACTIONS, "drain"):
        reason = _worker(run, target)
        if reason:
            raise UsageError(f"{action} {target}: {reason}")
        return Drain(target) if action == "drain" else NodeFault(target, action)
    if action in SKEWS:
        pods = [p for workload in SKEWED for p in run.ready_pods(workload)]
        if target not in pods:
            raise UsageError(f"{action} {target}: expected a Ready pod of {', '.join(SKEWED)} ({', '.join(pods)})")
        return PodClockSkew(target, SKEWS[action])
    if action == "replace-member":
        fault = ReplaceEtcdMember(target)
        if reason := fault.applies_to(run):
            raise UsageError(f"replace-member {target}: {reason}")
        return fault
    if action == "rollout-restart":
        if not run.ready_pods(target):
            raise UsageError(f"rollout-restart {target}: no Deployment of that name with Ready pods in {run.namespace}")
        return RolloutRestart(target)
    every = ", ".join(ACTIONS)
    raise UsageError(f"no fault {action!r} for the k8s mode; expected one of {every}")

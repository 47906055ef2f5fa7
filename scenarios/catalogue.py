"""Failover scenarios as data: which fault, how often, how long, against which modes, judged
by which checks.

Each scenario is typed to the runs it breaks (``Scenario[ContainerRun]``,
``Scenario[KubeRun]``) and picks a concrete fault per cycle from the live run (through
:mod:`topologies.containers.victims`), so "kill the leader" means the leader at that moment.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Generic, TypeVar

from scenarios.checkers import CHECKS, PLANNED
from scenarios.traffic import Traffic
from topologies import ContainerRun, KubeRun, Run
from topologies.containers.faults import (
    SLOW_IO_MS,
    BadIo,
    ClockSkew,
    Delay,
    DiskFull,
    Kill,
    Loss,
    Partition,
    Pause,
    ReplaceMember,
    Restart,
)
from topologies.containers.service import ServiceRun
from topologies.containers.victims import choose
from topologies.exceptions import FaultError
from topologies.faults import SKEW_S, Both, Fault
from topologies.kubernetes import faults as kube
from topologies.kubernetes.service import ServiceKubeRun

R = TypeVar("R", bound=Run)
ALL_CHECKS = tuple(c for c in CHECKS if c not in PLANNED)  # and the planned ones where named
QUEUE_CHECKS = ("queue-safety", "lease-exclusive")  # of the runtime's queue: n/a to a bare register
REPLICATED = ("ha", "scaled")
K8S = ("k8s",)


@dataclass(frozen=True)
class Scenario(Generic[R]):
    name: str
    on: type[R]  # the runs it breaks: ContainerRun or KubeRun
    choose: Callable[[R, random.Random, int], Fault[R]]
    # 2 in the failover envs (3 until 2026-12-08: a third cycle of each took 4-5 min of CI);
    # the soak envs run 10-15 (--cycles)
    cycles: int | Callable[[R], int] = 2
    modes: tuple[str, ...] = REPLICATED
    checks: tuple[str, ...] = ALL_CHECKS
    traffic: Traffic = field(default_factory=Traffic)
    warmup_s: float = 1.5
    during_s: float = 4.0
    settle_s: float = 1.0
    requires: Callable[[R], str | None] = lambda run: None  # None, or why it cannot run on this run
    # hold each fault until this says None (else what it still waits for), asked while the
    # traffic runs, at most during_s; the cycle's "settled" verdict says how long it took
    until: Callable[[R, Fault[R]], str | None] | None = None

    def __post_init__(self) -> None:
        unknown = [c for c in self.checks if c not in CHECKS]
        if unknown:
            raise ValueError(
                f"scenario {self.name}: unknown check {unknown[0]!r}; expected some of {', '.join(CHECKS)}"
            )

    def cycles_for(self, run: R) -> int:
        return self.cycles(run) if callable(self.cycles) else self.cycles

    def bind(self, run: Run) -> R | str:
        """``run`` as the runs this scenario breaks, or why it does not apply to it."""
        if run.mode not in self.modes:
            return f"{self.name} applies to {', '.join(self.modes)}, not {run.mode}"
        if not isinstance(run, self.on):
            return f"{self.name} breaks a {self.on.__name__}, not a {type(run).__name__}"
        return self.requires(run) or run


def _node(which: str) -> Callable[[ContainerRun, random.Random], str]:
    return lambda run, rng: choose(run, which, rng)


leader, follower, anyone = _node("leader"), _node("follower"), _node("random")


def _skewed(run: ContainerRun, rng: random.Random, cycle: int) -> Fault[ContainerRun]:
    """Five minutes forward on even cycles, back on odd ones, on a node whose runtime serves
    (an Envoy node's runtime only supervises Envoy)."""
    return ClockSkew(
        rng.choice([n.name for n in run.nodes if not n.spec.is_envoy]), SKEW_S if cycle % 2 == 0 else -SKEW_S
    )


def _overlapping(run: ContainerRun, rng: random.Random, cycle: int) -> Fault[ContainerRun]:
    """A follower's node killed and, at the same time, 20 % packet loss on another node that
    is not the leader: one member down and a lossy link, which a quorum of 3 survives."""
    killed = follower(run, rng)
    others = [n.name for n in run.nodes if n.name not in (killed, leader(run, rng))]
    return Both[ContainerRun](Kill(killed), Loss(rng.choice(others), 20))


def _sized(run: ContainerRun) -> str | None:
    if run.data_size is None:
        return "needs nodes whose data dirs are file systems of their own (modematrix up MODE --data-size 64MiB)"
    return None


def _lazy(run: ContainerRun) -> str | None:
    if not run.lazy_fs:
        return "needs nodes whose data dirs are on lazyfs (modematrix up MODE --lazy-fs)"
    return None


def _db_node(run: ContainerRun, rng: random.Random) -> str:
    """A node hosting an etcd member, or single's one node."""
    return rng.choice([n.name for n in run.nodes if n.db_member] or [anyone(run, rng)])


# The k8s scenarios' pod and worker faults run 2 cycles in the failover envs (k8s-soak: 8 each)
K8S_CYCLES = 2


def _pod(name: str, workload: str) -> Scenario[KubeRun]:
    """Delete one of ``workload``'s Ready pods; its controller replaces it."""
    return Scenario[KubeRun](
        name, KubeRun, lambda run, rng, cycle: kube.any_pod(run, workload, rng), modes=K8S, cycles=K8S_CYCLES
    )


def _worker(action: str) -> Scenario[KubeRun]:
    def fault(run: KubeRun, rng: random.Random, cycle: int) -> Fault[KubeRun]:
        return kube.NodeFault(kube.any_worker(run, rng), action)

    return Scenario[KubeRun](
        f"{action}-a-worker", KubeRun, fault, modes=K8S, cycles=K8S_CYCLES, requires=kube.built_here
    )


def _control_plane(name: str, action: str, which: Callable[[KubeRun, random.Random], str]) -> Scenario[KubeRun]:
    def fault(run: KubeRun, rng: random.Random, cycle: int) -> Fault[KubeRun]:
        return kube.ControlPlaneDown(which(run, rng), action)

    return Scenario[KubeRun](
        name,
        KubeRun,
        fault,
        modes=K8S,
        cycles=1,
        during_s=120.0,
        until=kube.api_serves,
        requires=kube.three_control_planes,
    )


C = ContainerRun
CATALOGUE: tuple[Scenario[ContainerRun] | Scenario[KubeRun], ...] = (
    Scenario[C]("kill-leader", C, lambda r, g, i: Kill(leader(r, g))),
    Scenario[C]("kill-follower", C, lambda r, g, i: Kill(follower(r, g))),
    Scenario[C]("kill-random-node", C, lambda r, g, i: Kill(anyone(r, g))),
    Scenario[C]("pause-node", C, lambda r, g, i: Pause(anyone(r, g))),
    Scenario[C]("partition-one", C, lambda r, g, i: Partition.isolating(anyone(r, g), r)),
    Scenario[C]("partition-leader", C, lambda r, g, i: Partition.isolating(leader(r, g), r)),
    Scenario[C](
        "rolling-restart",
        C,
        lambda r, g, i: Restart(r.nodes[i % len(r.nodes)].name),
        cycles=lambda r: len(r.nodes),
        during_s=0.5,
    ),
    Scenario[C]("packet-loss", C, lambda r, g, i: Loss(anyone(r, g), 30)),
    Scenario[C]("delay", C, lambda r, g, i: Delay(anyone(r, g), 200, 50), requires=lambda r: r.netem_missing()),
    Scenario[C]("kill-follower-with-loss-elsewhere", C, _overlapping),
    # a lease is only as exclusive as the nodes' clocks agree: this one counts overlapping
    # leases (queue-safety's numbers) instead of failing on them
    Scenario[C](
        "clock-skew", C, _skewed, cycles=2, during_s=6.0, checks=tuple(c for c in ALL_CHECKS if c != "lease-exclusive")
    ),
    # a node's data dir filled to the last byte (a run started with --data-size). Single: its
    # writes are refused with 507 while reads go on, and it writes again once the ballast is
    # gone, without a restart. ha: the node's etcd member stops (etcd's fail-stop "failed to
    # commit tx ... no space left on device"), the other two keep the quorum, the runtime
    # starts the member again until there is room, and it catches up (docs/scenarios.md)
    Scenario[C](
        "full-disk",
        C,
        lambda r, g, i: DiskFull(_db_node(r, g)),
        modes=("single", "ha"),
        cycles=2,
        requires=_sized,
    ),
    # a power cut (a run on lazyfs, --lazy-fs): the node is killed and every write its DB had
    # not fsynced is lost with it, as LazyFS does in Jepsen's suites. What SQLite's group
    # commit and etcd acknowledged was synced first, so no-lost-writes must hold
    Scenario[C]("power-cut", C, lambda r, g, i: Kill(_db_node(r, g)), modes=("single", "ha"), requires=_lazy),
    # a failing disk: every write and fsync of the node's data dir fails with EIO. Single
    # refuses its writes and serves reads; in ha the member fails-stop (etcd) and the runtime
    # starts it again until the disk works, while the other two keep the quorum
    Scenario[C](
        "io-errors", C, lambda r, g, i: BadIo(_db_node(r, g)), modes=("single", "ha"), cycles=2, requires=_lazy
    ),
    # a saturated disk: every read, write and fsync of the node's data dir 50 ms late
    Scenario[C](
        "slow-io",
        C,
        lambda r, g, i: BadIo(_db_node(r, g), SLOW_IO_MS),
        modes=("single", "ha"),
        cycles=2,
        requires=_lazy,
    ),
    # etcd's membership changed under traffic: a member removed (its node and data dir gone),
    # then a new one added at its address, joining on an empty data dir (Jepsen's and etcd's
    # robustness tests' member replace); healed once the new member is healthy
    Scenario[C](
        "replace-member",
        C,
        lambda r, g, i: ReplaceMember(g.choice([n.name for n in r.nodes if n.db_member])),
        cycles=2,
        during_s=3.0,
    ),
    # the front door and its control plane (modes behind Envoy): the other Envoy keeps
    # serving; without the xds node the Envoys keep their last config and reconnect
    Scenario[C]("kill-an-envoy", C, lambda r, g, i: Kill(choose(r, "service:envoy", g)), modes=("scaled",)),
    Scenario[C]("kill-the-xds-node", C, lambda r, g, i: Kill(choose(r, "service:xds", g)), modes=("scaled",)),
    # the k8s mode (a cluster built here): Kubernetes replaces what is deleted, Envoy routes
    # around what is gone; a worker runs one etcd member and at most one Envoy
    _pod("delete-a-kv-pod", "kv"),
    _pod("delete-an-etcd-pod", "etcd"),
    _pod("delete-an-envoy-pod", "envoy"),
    _pod("delete-the-xds-pod", "xds"),
    _worker("kill"),
    _worker("pause"),
    _worker("partition"),
    # a worker stays dead until Kubernetes has moved its pods (marked unreachable after the
    # node monitor's grace period, then evicted after the pods' toleration): the settled
    # verdict is the time to move; etcd's member waits for its node (its volume is there)
    Scenario[KubeRun](
        "kill-a-worker-until-rescheduled",
        KubeRun,
        lambda r, g, i: kube.NodeFault(kube.any_worker(r, g), "kill"),
        modes=K8S,
        cycles=1,
        during_s=150.0,
        until=kube.moved,
        requires=kube.built_here,
    ),
    # etcd's membership changed under traffic on k8s: a StatefulSet pod's member removed, then
    # a new one added at the pod's stable address, started on an emptied data dir (the pod's
    # volume kept, its data dir emptied once by the start script); healed once it is healthy
    Scenario[KubeRun](
        "replace-an-etcd-member",
        KubeRun,
        lambda r, g, i: kube.ReplaceEtcdMember(g.choice(r.ready_pods("etcd"))),
        modes=K8S,
        cycles=1,
        during_s=3.0,
    ),
    # the cluster's DNS frozen for 20 s: lookups time out, resolved connections carry on
    Scenario[KubeRun](
        "dns-unreachable",
        KubeRun,
        lambda r, g, i: kube.DnsDown(),
        modes=K8S,
        cycles=1,
        during_s=20.0,
        requires=kube.built_here,
    ),
    # the control plane (a cluster built with three): one of them down, the API still answers
    # kubectl get and kubectl scale through the balancer; the settled verdict is the time until
    # the scaled-up replica is Ready
    _control_plane("kill-a-control-plane", "kill", kube.any_control_plane),
    _control_plane("kill-the-control-plane-etcd-leader", "kill", lambda r, g: kube.etcd_leader(r)),
    _control_plane("pause-the-scheduler-leader", "pause", lambda r, g: kube.scheduler_leader(r)),
    # planned disruptions: a drain within the PodDisruptionBudgets, a rolling restart; every
    # read is served (a client sends it again at the other Envoy), and no write is lost
    Scenario[KubeRun](
        "drain-a-worker",
        KubeRun,
        lambda r, g, i: kube.Drain(kube.any_worker(r, g)),
        modes=K8S,
        cycles=1,
        during_s=2.0,
        checks=(*ALL_CHECKS, *PLANNED),
        requires=kube.built_here,  # never a node of a cluster the user has
    ),
    Scenario[KubeRun](
        "rollout-restart-kv",
        KubeRun,
        lambda r, g, i: kube.RolloutRestart("kv"),
        modes=K8S,
        cycles=1,
        during_s=1.0,
        checks=(*ALL_CHECKS, *PLANNED),
    ),
    # one pod's clock five minutes forward, then back (the containers' clock-skew, by kubectl
    # exec): tokens, leases and renewals on a skewed pod; lease overlaps counted, not failed
    Scenario[KubeRun](
        "clock-skew-a-pod",
        KubeRun,
        lambda r, g, i: kube.skewed_pod(r, g, i, SKEW_S),
        modes=K8S,
        cycles=2,
        during_s=6.0,
        checks=tuple(c for c in ALL_CHECKS if c != "lease-exclusive"),
    ),
)


# the faults that need nothing of the runtime inside a node or a pod: what a service of a
# service file (topologies/services/*.yaml) is broken with; a one-member service, the ones
# that do not need another member
FOR_SERVICES = (
    "kill-leader",
    "kill-follower",
    "kill-random-node",
    "pause-node",
    "partition-one",
    "partition-leader",
    "rolling-restart",
    "packet-loss",
    "delay",
    "kill-follower-with-loss-elsewhere",
)
FOR_ONE_MEMBER = ("kill-leader", "pause-node", "rolling-restart")
# on Kubernetes: a member's pod deleted (any, the leader's), a worker killed, frozen or cut off,
# a worker drained within the budget
FOR_SERVICES_K8S = (
    "delete-a-member-pod",
    "delete-the-leader-pod",
    "kill-a-worker",
    "pause-a-worker",
    "partition-a-worker",
    "drain-a-worker",
)
FOR_ONE_MEMBER_K8S = ("delete-a-member-pod", "kill-a-worker")


def _service_pods(run: KubeRun, rng: random.Random, leader: bool) -> Fault[KubeRun]:
    if not isinstance(run, ServiceKubeRun):
        raise FaultError(f"run {run.run_id} is not a service's: no StatefulSet of its members")
    service = run.service.name  # its StatefulSet is named after the service
    if leader:
        return kube.DeletePod(service, run.db_leader())
    return kube.any_pod(run, service, rng)


def _k8s_for_service(name: str) -> Scenario[KubeRun]:
    if name == "delete-a-member-pod":
        return Scenario[KubeRun](name, KubeRun, lambda r, g, i: _service_pods(r, g, False), cycles=K8S_CYCLES)
    if name == "delete-the-leader-pod":
        return Scenario[KubeRun](name, KubeRun, lambda r, g, i: _service_pods(r, g, True), cycles=K8S_CYCLES)
    found = by_name(name)
    assert found.on is KubeRun, name
    return found


def for_service(run: ServiceRun | ServiceKubeRun) -> tuple[Scenario[ContainerRun] | Scenario[KubeRun], ...]:
    """The catalogue's scenarios for a service's run (on Docker :data:`FOR_SERVICES`, on
    Kubernetes :data:`FOR_SERVICES_K8S`) on its mode, its traffic through the service's own
    workload, judged by the register's checks (no queue)."""
    one = len(run.spec.nodes) == 1
    if isinstance(run, ServiceKubeRun):
        chosen: list[Scenario[ContainerRun] | Scenario[KubeRun]] = [
            _k8s_for_service(n) for n in (FOR_ONE_MEMBER_K8S if one else FOR_SERVICES_K8S)
        ]
    else:
        chosen = [by_name(n) for n in (FOR_ONE_MEMBER if one else FOR_SERVICES)]
    return tuple(
        replace(
            base,
            modes=(run.mode,),
            traffic=replace(base.traffic, workload=run.service.workload),
            checks=tuple(c for c in base.checks if c not in QUEUE_CHECKS),
        )
        for base in chosen
    )


def by_name(name: str) -> Scenario[ContainerRun] | Scenario[KubeRun]:
    for scenario in CATALOGUE:
        if scenario.name == name:
            return scenario
    raise KeyError(f"no scenario {name!r}; expected one of {', '.join(s.name for s in CATALOGUE)}")

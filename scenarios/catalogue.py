"""Failover scenarios as data: which fault, how often, how long, against which modes, judged
by which checks.

Each scenario picks a concrete fault per cycle from the live cluster (through
:mod:`topologies.victims`), so "kill the leader" means the leader at that moment.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from scenarios.checkers import CHECKS
from scenarios.traffic import Traffic
from topologies import Cluster, kubefaults
from topologies.faults import Both, Delay, Fault, Kill, Loss, Partition, Pause, Restart, netem_missing
from topologies.victims import choose

Chooser = Callable[[Cluster, random.Random, int], Fault]
ALL_CHECKS = tuple(CHECKS)
REPLICATED = ("ha", "scaled")


@dataclass(frozen=True)
class Scenario:
    name: str
    choose: Chooser
    cycles: int | Callable[[Cluster], int] = 3
    modes: tuple[str, ...] = REPLICATED
    checks: tuple[str, ...] = ALL_CHECKS
    traffic: Traffic = field(default_factory=Traffic)
    warmup_s: float = 1.5
    during_s: float = 4.0
    settle_s: float = 1.0
    requires: Callable[[Cluster], str | None] = lambda cluster: None  # None, or why it cannot run here

    def __post_init__(self) -> None:
        unknown = [c for c in self.checks if c not in CHECKS]
        if unknown:
            raise ValueError(
                f"scenario {self.name}: unknown check {unknown[0]!r}; expected some of {', '.join(CHECKS)}"
            )

    def cycles_for(self, cluster: Cluster) -> int:
        return self.cycles(cluster) if callable(self.cycles) else self.cycles

    def skip_reason(self, mode: str, cluster: Cluster | None = None) -> str | None:
        """None if the scenario applies to ``mode`` (and can run on ``cluster``), else why not."""
        if mode not in self.modes:
            return f"{self.name} applies to {', '.join(self.modes)}, not {mode}"
        return self.requires(cluster) if cluster is not None else None


def _node(which: str) -> Callable[[Cluster, random.Random], str]:
    return lambda cluster, rng: choose(cluster, which, rng)


leader, follower, anyone = _node("leader"), _node("follower"), _node("random")


K8S = ("k8s",)


def _pod(workload: str) -> Chooser:
    """Delete one of ``workload``'s Ready pods (a :class:`topologies.kuberun.KubeRun`'s)."""
    return lambda run, rng, cycle: cast(Fault, kubefaults.any_pod(cast(Any, run), workload, rng))


def _worker(action: str) -> Chooser:
    return lambda run, rng, cycle: cast(Fault, kubefaults.NodeFault(kubefaults.any_worker(cast(Any, run), rng), action))


def _overlapping(cluster: Cluster, rng: random.Random, cycle: int) -> Fault:
    """A follower's node killed and, at the same time, 20 % packet loss on another node that
    is not the leader: one member down and a lossy link, which a quorum of 3 survives."""
    killed = follower(cluster, rng)
    others = [n.name for n in cluster.nodes if n.name not in (killed, leader(cluster, rng))]
    return Both(Kill(killed), Loss(rng.choice(others), 20))


CATALOGUE: tuple[Scenario, ...] = (
    Scenario("kill-leader", lambda c, r, i: Kill(leader(c, r))),
    Scenario("kill-follower", lambda c, r, i: Kill(follower(c, r))),
    Scenario("kill-random-node", lambda c, r, i: Kill(anyone(c, r))),
    Scenario("pause-node", lambda c, r, i: Pause(anyone(c, r))),
    Scenario("partition-one", lambda c, r, i: Partition.isolating(anyone(c, r), c)),
    Scenario("partition-leader", lambda c, r, i: Partition.isolating(leader(c, r), c)),
    Scenario(
        "rolling-restart",
        lambda c, r, i: Restart(c.nodes[i % len(c.nodes)].name),
        cycles=lambda c: len(c.nodes),
        during_s=0.5,
    ),
    Scenario("packet-loss", lambda c, r, i: Loss(anyone(c, r), 30)),
    Scenario("delay", lambda c, r, i: Delay(anyone(c, r), 200, 50), requires=netem_missing),
    Scenario("kill-follower-with-loss-elsewhere", _overlapping),
    # the front door and its control plane (modes behind Envoy): the other Envoy keeps
    # serving; without the xds node the Envoys keep their last config and reconnect
    Scenario("kill-an-envoy", lambda c, r, i: Kill(choose(c, "service:envoy", r)), modes=("scaled",)),
    Scenario("kill-the-xds-node", lambda c, r, i: Kill(choose(c, "service:xds", r)), modes=("scaled",)),
    # the k8s mode (a cluster built here): Kubernetes replaces what is deleted, Envoy routes
    # around what is gone; a worker runs one etcd member and at most one Envoy
    Scenario("delete-a-kv-pod", _pod("kv"), modes=K8S),
    Scenario("delete-an-etcd-pod", _pod("etcd"), modes=K8S),
    Scenario("delete-an-envoy-pod", _pod("envoy"), modes=K8S),
    Scenario("delete-the-xds-pod", _pod("xds"), modes=K8S),
    Scenario("kill-a-worker", _worker("kill"), modes=K8S),
    Scenario("pause-a-worker", _worker("pause"), modes=K8S),
    Scenario("partition-a-worker", _worker("partition"), modes=K8S),
)


def by_name(name: str) -> Scenario:
    for scenario in CATALOGUE:
        if scenario.name == name:
            return scenario
    raise KeyError(f"no scenario {name!r}; expected one of {', '.join(s.name for s in CATALOGUE)}")

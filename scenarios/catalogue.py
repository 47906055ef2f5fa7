"""Failover scenarios as data: which fault, how often, how long, against which modes.

Each scenario picks a concrete fault per cycle from the live cluster (the etcd leader, a
random follower, ...), so "kill the leader" means the leader at that moment.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from scenarios.traffic import Traffic
from topologies import Cluster
from topologies.faults import Fault, Kill, Partition, Pause, Restart

Chooser = Callable[[Cluster, random.Random, int], Fault]


@dataclass(frozen=True)
class Scenario:
    name: str
    choose: Chooser
    cycles: int | Callable[[Cluster], int] = 3
    modes: tuple[str, ...] = ("ha", "scaled")
    traffic: Traffic = field(default_factory=Traffic)
    warmup_s: float = 1.5
    during_s: float = 4.0
    settle_s: float = 1.0

    def cycles_for(self, cluster: Cluster) -> int:
        return self.cycles(cluster) if callable(self.cycles) else self.cycles


def _leader(cluster: Cluster, rng: random.Random, cycle: int) -> str:
    return cluster.db_leader().name


def _follower(cluster: Cluster, rng: random.Random, cycle: int) -> str:
    leader = cluster.db_leader().name
    return rng.choice([n.name for n in cluster.nodes if n.db_member and n.name != leader])


def _any(cluster: Cluster, rng: random.Random, cycle: int) -> str:
    return rng.choice([n.name for n in cluster.nodes])


CATALOGUE: tuple[Scenario, ...] = (
    Scenario("kill-leader", lambda c, r, i: Kill(_leader(c, r, i))),
    Scenario("kill-follower", lambda c, r, i: Kill(_follower(c, r, i))),
    Scenario("kill-random-node", lambda c, r, i: Kill(_any(c, r, i))),
    Scenario("pause-node", lambda c, r, i: Pause(_any(c, r, i))),
    Scenario("partition-one", lambda c, r, i: Partition.isolating(_any(c, r, i), c)),
    Scenario("partition-leader", lambda c, r, i: Partition.isolating(_leader(c, r, i), c)),
    Scenario("rolling-restart", lambda c, r, i: Restart(c.nodes[i].name), cycles=lambda c: len(c.nodes), during_s=0.5),
)


def by_name(name: str) -> Scenario:
    for scenario in CATALOGUE:
        if scenario.name == name:
            return scenario
    raise KeyError(f"no scenario {name!r}; expected one of {', '.join(s.name for s in CATALOGUE)}")

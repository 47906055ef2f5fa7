"""Run one failover scenario against a live cluster and judge its history.

healthy -> traffic -> (fault, traffic, heal, healthy, traffic) x cycles -> stop traffic
        -> final reads and queue drain -> checkers
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

from scenarios.catalogue import Scenario
from scenarios.checkers import Verdict, availability, linearizable_kv, no_lost_writes, queue_safety
from scenarios.history import History
from scenarios.traffic import TrafficRun
from topologies import Cluster
from topologies.faults import heal_all


@dataclass
class Result:
    scenario: str
    mode: str
    faults: list[str]
    verdicts: list[Verdict]
    counts: dict[str, int]
    seconds: float
    traffic_errors: list[str] = field(default_factory=list)
    history: History | None = None

    @property
    def passed(self) -> bool:
        return all(v.passed for v in self.verdicts) and not self.traffic_errors

    def summary(self) -> dict[str, Any]:
        gap = next((v.numbers for v in self.verdicts if v.check == "availability"), {})
        return {
            "scenario": self.scenario,
            "mode": self.mode,
            "faults": self.faults,
            **self.counts,
            "seconds": round(self.seconds, 1),
            "passed": self.passed,
            "traffic_errors": self.traffic_errors,
            "unavailability": {
                "longest_write_gap_s": gap.get("longest_write_gap_s"),
                "heal_to_first_write_s": gap.get("heal_to_first_write_s"),
            },
            "checks": [{"check": v.check, "result": v.result, "detail": v.detail, **v.numbers} for v in self.verdicts],
        }


def run(cluster: Cluster, scenario: Scenario, *, seed: int | None = None) -> Result:
    seed = seed if seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    history = History()
    traffic = TrafficRun(cluster, scenario.traffic, history, tag=f"{scenario.name}-{seed}", seed=seed)
    started = time.monotonic()
    cluster.wait_healthy()
    faults: list[str] = []
    traffic.start()
    try:
        traffic.run_for(scenario.warmup_s)
        for cycle in range(scenario.cycles_for(cluster)):
            fault = scenario.choose(cluster, rng, cycle)
            faults.append(fault.name)
            history.mark(time.monotonic(), f"apply {fault.name}")
            try:
                fault.apply(cluster)
                traffic.run_for(scenario.during_s)
            finally:
                fault.heal(cluster)
                heal_all(cluster)
                history.mark(time.monotonic(), f"heal {fault.name}")
            cluster.wait_healthy(timeout=120)
            history.mark(time.monotonic(), "healthy")
            traffic.run_for(scenario.settle_s)
    finally:
        traffic.stop()
    with cluster.client(timeout=scenario.traffic.timeout) as api:
        traffic.final_reads(api)
        traffic.drain(api)
    ops = history.ops
    verdicts = [no_lost_writes(ops), linearizable_kv(ops), queue_safety(ops), availability(ops, history.events)]
    return Result(
        scenario.name,
        cluster.mode,
        faults,
        verdicts,
        history.counts(),
        time.monotonic() - started,
        traffic.errors,
        history,
    )

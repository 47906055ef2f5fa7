"""Run one failover scenario against a live cluster and judge its history.

healthy -> traffic -> (fault, traffic, heal, healthy, traffic) x cycles -> stop traffic
        -> final reads and queue drain -> the scenario's checks

Each cycle is :func:`topologies.faults.injected`, the one fault cycle. A scenario that does
not apply to the cluster's mode is not run: its result says skipped, and why.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any, overload

from scenarios.catalogue import R, Scenario
from scenarios.checkers import CHECKS, Verdict
from scenarios.history import History
from scenarios.traffic import TrafficRun
from topologies import ContainerRun, KubeRun, Run
from topologies.faults import injected


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
    skipped: str | None = None  # why the scenario did not run against this mode

    @property
    def passed(self) -> bool:
        return self.skipped is None and all(v.passed for v in self.verdicts) and not self.traffic_errors

    def summary(self) -> dict[str, Any]:
        gap = next((v.numbers for v in self.verdicts if v.check == "availability"), {})
        return {
            "scenario": self.scenario,
            "mode": self.mode,
            "faults": self.faults,
            **self.counts,
            "seconds": round(self.seconds, 1),
            "passed": self.passed,
            "skipped": self.skipped,
            "traffic_errors": self.traffic_errors,
            "unavailability": {
                "longest_write_gap_s": gap.get("longest_write_gap_s"),
                "heal_to_first_write_s": gap.get("heal_to_first_write_s"),
            },
            "checks": [{"check": v.check, "result": v.result, "detail": v.detail, **v.numbers} for v in self.verdicts],
        }


@overload
def run(target: Run, scenario: Scenario[ContainerRun], *, seed: int | None = None) -> Result: ...
@overload
def run(target: Run, scenario: Scenario[KubeRun], *, seed: int | None = None) -> Result: ...
def run(target: Run, scenario: Scenario[R], *, seed: int | None = None) -> Result:
    """Run ``scenario`` against ``target``, or a skipped Result saying why it does not apply."""
    return _bound(target, scenario, seed)


def _bound(target: Run, scenario: Scenario[R], seed: int | None) -> Result:
    bound = scenario.bind(target)
    if isinstance(bound, str):
        return Result(scenario.name, target.mode, [], [], {}, 0.0, skipped=bound)
    return _cycles(bound, scenario, seed)


def _cycles(target: R, scenario: Scenario[R], seed: int | None) -> Result:
    seed = seed if seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    history = History()
    traffic = TrafficRun(target, scenario.traffic, history, tag=f"{scenario.name}-{seed}", seed=seed)
    started = time.monotonic()
    target.wait_healthy()
    faults: list[str] = []
    traffic.start()
    try:
        traffic.run_for(scenario.warmup_s)
        for cycle in range(scenario.cycles_for(target)):
            fault = scenario.choose(target, rng, cycle)
            faults.append(fault.name)
            with injected(target, fault, mark=lambda event: history.mark(time.monotonic(), event)):
                traffic.run_for(scenario.during_s)
            healed = time.monotonic()
            traffic.run_for(scenario.settle_s)
            traffic.run_until_write_after(healed, timeout=2 * scenario.traffic.timeout)
    finally:
        traffic.stop()
    with target.client(timeout=scenario.traffic.timeout, resend_idempotent=False) as api:
        traffic.final_reads(api)
        traffic.drain(api)
    verdicts = [CHECKS[name](history) for name in scenario.checks]
    elapsed = time.monotonic() - started
    return Result(scenario.name, target.mode, faults, verdicts, history.counts(), elapsed, traffic.errors, history)

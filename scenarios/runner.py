"""Run one failover scenario against a live cluster and judge its history.

healthy -> traffic -> (fault, traffic, heal, healthy, traffic) x cycles -> stop traffic
        -> final reads and queue drain -> the scenario's checks

A scenario with ``until`` holds each fault until its condition holds (a dead worker's pods
running elsewhere), not for a fixed time; a ``settled`` verdict says how long that took.

Each cycle is :func:`topologies.faults.injected`, the one fault cycle. A scenario that does
not apply to the cluster's mode is not run: its result says skipped, and why.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, overload

from scenarios.catalogue import R, Scenario
from scenarios.checkers import CHECKS, FAIL, PASS, Verdict
from scenarios.history import History
from scenarios.traffic import TrafficRun
from topologies import ContainerRun, KubeRun, Run
from topologies.faults import Fault, injected


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

    @property
    def failing(self) -> list[str]:
        """The checks that did not pass, a line each."""
        return [f"{v.check}: {v.result} ({v.detail})" for v in self.verdicts if not v.passed]

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
    settled: list[Verdict] = []
    traffic.start()
    try:
        traffic.run_for(scenario.warmup_s)
        for cycle in range(scenario.cycles_for(target)):
            fault = scenario.choose(target, rng, cycle)
            faults.append(fault.name)
            with injected(target, fault, mark=lambda event: history.mark(time.monotonic(), event)):
                if scenario.until is None:
                    traffic.run_for(scenario.during_s)
                else:
                    settled.append(_hold(target, fault, scenario.until, scenario.during_s, traffic, history))
            healed = time.monotonic()
            traffic.run_for(scenario.settle_s)
            traffic.run_until_write_after(healed, timeout=2 * scenario.traffic.timeout)
    finally:
        traffic.stop()
    traffic.final_reads()
    if traffic.workload.queue:  # the runtime's queue: what is left claimed and acked
        with target.client(timeout=scenario.traffic.timeout, resend_idempotent=False) as api:
            traffic.drain(api)
    verdicts = [CHECKS[name](history) for name in scenario.checks]
    if settled:
        verdicts.append(_settled(settled))
    elapsed = time.monotonic() - started
    return Result(scenario.name, target.mode, faults, verdicts, history.counts(), elapsed, traffic.errors, history)


def _hold(
    target: R,
    fault: Fault[R],
    until: Callable[[R, Fault[R]], str | None],
    most: float,
    traffic: TrafficRun,
    history: History,
) -> Verdict:
    """Hold ``fault`` while traffic runs until ``until`` says None, at most ``most`` s."""
    applied = time.monotonic()
    waiting: list[str] = []

    def done() -> bool:
        try:
            waiting[:] = [until(target, fault) or ""]
        except Exception as exc:  # the API may be slow to answer while a node is gone: asked again
            waiting[:] = [f"not known yet ({exc})"]
        return not waiting[0]

    if traffic.run_until(done, timeout=most):
        seconds = time.monotonic() - applied
        history.mark(time.monotonic(), f"settled {fault.name}")
        return Verdict("settled", PASS, f"{fault.name}: settled in {seconds:.1f} s", {"settled_s": [round(seconds, 1)]})
    return Verdict("settled", FAIL, f"{fault.name}: not settled after {most:.0f} s: {waiting[0] if waiting else '?'}")


def _settled(each: list[Verdict]) -> Verdict:
    """The cycles' settled verdicts as one: failed if any failed; the seconds of each."""
    failed = [v for v in each if not v.passed]
    seconds = [s for v in each for s in v.numbers.get("settled_s", [])]
    detail = "; ".join(v.detail for v in (failed or each))
    return Verdict("settled", FAIL if failed else PASS, detail, {"settled_s": seconds})

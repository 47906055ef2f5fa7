"""Scenarios are data: they declare their checks and modes, and the runner honours both."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from scenarios import runner
from scenarios.catalogue import ALL_CHECKS, CATALOGUE, Scenario, by_name
from scenarios.checkers import CHECKS
from topologies import ContainerRun, KubeRun
from topologies.containers.faults import Kill
from topologies.engines.fake import FakeEngine
from topologies.runs import RunRecord, Secrets
from topologies.spec import ModeSpec, NodeSpec


def test_every_scenario_names_only_known_checks_and_modes() -> None:
    for scenario in CATALOGUE:
        assert set(scenario.checks) <= set(CHECKS) and scenario.modes
    assert ALL_CHECKS == ("no-lost-writes", "linearizable-kv", "queue-safety", "lease-exclusive", "availability")
    skewed = next(s for s in CATALOGUE if s.name == "clock-skew")  # counts overlaps, does not fail on them
    assert "lease-exclusive" not in skewed.checks and "queue-safety" in skewed.checks
    planned = {s.name for s in CATALOGUE if "reads-served" in s.checks}  # the promise of a planned disruption
    assert planned == {"drain-a-worker", "rollout-restart-kv"}


def test_an_unknown_check_is_refused_when_the_scenario_is_written() -> None:
    with pytest.raises(ValueError, match="unknown check 'linearisable'"):
        Scenario[ContainerRun]("typo", ContainerRun, lambda c, r, i: Kill("x"), checks=("linearisable",))


def test_a_scenario_for_other_modes_is_skipped_with_the_reason_and_touches_nothing(tmp_path: Path) -> None:
    engine = FakeEngine()
    single = ModeSpec("single", "", "sqlite", (NodeSpec("node-1", ("kv",)),))
    RunRecord("r1", "single", "containers", {}).write(tmp_path, Secrets("s", "pw"))
    run = ContainerRun("r1", single, image="img", engine=engine, workdir=tmp_path, nodes=[])
    result = runner.run(run, by_name("kill-leader"))
    assert result.skipped == "kill-leader applies to ha, scaled, not single"
    assert not result.passed and result.verdicts == [] and engine.calls == []
    assert replace(by_name("kill-leader"), modes=("single",)).bind(run) is run
    on_kubernetes = replace(by_name("delete-a-kv-pod"), modes=("single",))
    assert on_kubernetes.bind(run) == "delete-a-kv-pod breaks a KubeRun, not a ContainerRun"
    assert on_kubernetes.on is KubeRun


class _Traffic:
    """What ``runner._hold`` needs of a TrafficRun: run until a condition, at most some time."""

    def __init__(self, asks: int) -> None:
        self.asks = asks

    def run_until(self, condition: object, timeout: float) -> bool:
        assert callable(condition)
        return any(condition() for _ in range(self.asks))


def test_a_fault_held_until_it_settles_says_how_long_or_what_it_still_waits_for() -> None:
    from scenarios.history import History

    answers = iter(["kv: 1 of 2 Ready off w2", None])
    history = History()
    held = runner._hold("run", Kill("n"), lambda run, fault: next(answers), 10, _Traffic(2), history)  # type: ignore[arg-type,misc]
    assert held.passed and held.detail.startswith("kill(n): settled in ") and len(held.numbers["settled_s"]) == 1
    assert [event for _, event in history.events] == ["settled kill(n)"]
    stuck = runner._hold("run", Kill("n"), lambda run, fault: "kv: 0 of 2", 7, _Traffic(3), History())  # type: ignore[arg-type,misc]
    assert not stuck.passed and stuck.detail == "kill(n): not settled after 7 s: kv: 0 of 2"
    assert not runner._settled([held, stuck]).passed
    assert runner._settled([held, held]).numbers["settled_s"] == held.numbers["settled_s"] * 2

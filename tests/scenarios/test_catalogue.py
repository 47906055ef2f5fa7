"""Scenarios are data: they declare their checks and modes, and the runner honours both."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from scenarios import runner
from scenarios.catalogue import ALL_CHECKS, CATALOGUE, Scenario, by_name
from scenarios.checkers import CHECKS
from topologies.client import Credentials
from topologies.cluster import Cluster
from topologies.faults import Kill
from topologies.platforms.fake import FakePlatform
from topologies.spec import ModeSpec, NodeSpec


def test_every_scenario_names_only_known_checks_and_modes() -> None:
    for scenario in CATALOGUE:
        assert set(scenario.checks) <= set(CHECKS) and scenario.modes
    assert ALL_CHECKS == ("no-lost-writes", "linearizable-kv", "queue-safety", "availability")


def test_an_unknown_check_is_refused_when_the_scenario_is_written() -> None:
    with pytest.raises(ValueError, match="unknown check 'linearisable'"):
        Scenario("typo", lambda c, r, i: Kill("x"), checks=("linearisable",))


def test_a_scenario_for_other_modes_is_skipped_with_the_reason_and_touches_nothing(tmp_path: Path) -> None:
    platform = FakePlatform()
    single = ModeSpec("single", "", "sqlite", (NodeSpec("node-1", ("kv",)),))
    cluster = Cluster("r1", single, "img", platform, tmp_path, Credentials("admin", "pw"))
    result = runner.run(cluster, by_name("kill-leader"))
    assert result.skipped == "kill-leader applies to ha, scaled, not single"
    assert not result.passed and result.verdicts == [] and platform.calls == []
    assert replace(by_name("kill-leader"), modes=("single",)).skip_reason("single") is None

"""The checkers catch what they claim to: a deliberately broken runtime fails them in a real run.

The runtime's test-only ``unsafe_fault`` setting breaks one guarantee on purpose:
``ack-without-commit`` acknowledges kv writes without storing them; ``stale-reads`` serves
reads from a per-node cache that is never invalidated.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

import topologies
from scenarios import runner
from scenarios.catalogue import by_name
from scenarios.checkers import FAIL
from scenarios.runner import Result
from topologies.pytest_plugin import selected_modes

pytestmark = [pytest.mark.failover, pytest.mark.ha]


@pytest.mark.parametrize(
    ("fault", "check"), [("ack-without-commit", "no-lost-writes"), ("stale-reads", "linearizable-kv")]
)
def test_a_broken_runtime_fails_the_check(
    request: pytest.FixtureRequest, fault: str, check: str, failover_results: list[Result]
) -> None:
    if "ha" not in selected_modes(request.config):
        pytest.skip("runs with --mode ha")
    scenario = replace(by_name("kill-follower"), name=f"broken-{fault}", cycles=1)
    with topologies.start("ha", env={"RUNTIME_UNSAFE_FAULT": fault}) as broken:
        result = runner.run(broken, scenario)
    verdict = next(v for v in result.verdicts if v.check == check)
    assert verdict.result == FAIL, f"{check} did not catch {fault}: {verdict}"
    print(f"\n{fault}: {check} -> {verdict.result}: {verdict.detail}")

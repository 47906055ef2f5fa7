"""Failover scenarios: traffic, faults, heal, final reads, then pure checks of the history.

tox -e ha-failover          (pytest scenarios/test_failover.py --mode ha)
pytest scenarios/test_failover.py --mode ha --workload grpc    (the register over gRPC)
pytest scenarios/test_failover.py --mode ha --workload etcd    (etcd's own KV API, no runtime)
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from scenarios import runner
from scenarios.catalogue import CATALOGUE, QUEUE_CHECKS, Scenario
from scenarios.runner import Result
from scenarios.workload import workload
from topologies import ContainerRun, KubeRun, Run

pytestmark = [pytest.mark.failover, pytest.mark.ha, pytest.mark.scaled, pytest.mark.k8s]


@pytest.mark.parametrize("scenario", CATALOGUE, ids=[s.name for s in CATALOGUE])
def test_failover_keeps_every_promise(
    run: Run,
    scenario: Scenario[ContainerRun] | Scenario[KubeRun],
    failover_results: list[Result],
    cycles: int,
    traffic_workload: str,
) -> None:
    chosen = replace(scenario, traffic=replace(scenario.traffic, workload=traffic_workload))
    if not workload(traffic_workload).queue:  # a register alone: its checks, not the queue's
        chosen = replace(chosen, checks=tuple(c for c in chosen.checks if c not in QUEUE_CHECKS))
    result = runner.run(run, replace(chosen, cycles=cycles) if cycles else chosen)
    if result.skipped:
        pytest.skip(result.skipped)
    failover_results.append(result)
    assert not result.traffic_errors, result.traffic_errors
    assert not result.failing, f"{scenario.name} on {run.mode} after {result.faults}: " + "; ".join(result.failing)

"""etcd itself, checked by the same runner and checkers as the runtime: the failover traffic
through the etcd workload (:class:`scenarios.workload.EtcdKv`: etcd's KV API over gRPC,
straight to the run's members as root, no runtime in the path) while the leader's node is cut
off from the others. A partitioned leader must not answer a read with what the majority has
overwritten (etcd's reads are linearizable: ReadIndex), nor acknowledge a write it loses.

    pytest scenarios/test_etcd_workload.py --mode ha
    pytest scenarios/test_failover.py --mode ha --workload etcd     (the whole catalogue)
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from scenarios import runner
from scenarios.catalogue import QUEUE_CHECKS, by_name
from scenarios.history import OK
from scenarios.runner import Result
from topologies import ContainerRun

pytestmark = [pytest.mark.ha]


def test_etcd_alone_keeps_every_promise_with_its_leader_partitioned(
    run: ContainerRun, failover_results: list[Result]
) -> None:
    if run.mode != "ha":  # scaled's members are the same etcd, at other addresses: once is enough for CI
        pytest.skip(f"shown in ha; {run.mode}: pytest scenarios/test_failover.py --workload etcd")
    base = by_name("partition-leader")
    scenario = replace(
        base,
        name="partition-leader-etcd-alone",
        traffic=replace(base.traffic, workload="etcd"),
        checks=tuple(c for c in base.checks if c not in QUEUE_CHECKS),
        cycles=2,
    )
    result = runner.run(run, scenario)
    assert result.skipped is None, result.skipped
    failover_results.append(result)
    assert not result.traffic_errors and not result.failing, (result.traffic_errors, result.failing)
    assert result.history is not None
    assert not [op for op in result.history.ops if op.kind in ("enqueue", "claim")], "a register alone"
    written = [op for op in result.history.ops if op.kind in ("write", "cas") and op.outcome == OK]
    assert written and all(op.result["code"] == "OK" for op in written)  # etcd's answers

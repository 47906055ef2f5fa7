"""The clock-skew fault on real containers: a node's runtime reads a wall clock five minutes
off (its ``/readyz`` says the skew it applies), keeps serving, and heal puts it back. The
failover scenario ``clock-skew`` runs it under traffic with every checker
(scenarios/test_failover.py).

    pytest scenarios/test_clock.py --mode single,ha
"""

from __future__ import annotations

import ssl
import time

import httpx
import pytest

from topologies import ContainerRun, Run, faults
from topologies.containers.faults import ClockSkew


def skew_of(run: ContainerRun, node: str) -> object:
    context = ssl.create_default_context(cafile=str(run.ca_file))
    return httpx.get(f"{run.node(node).url}/readyz", verify=context, timeout=5).json().get("clock_skew_s")


@pytest.mark.parametrize("seconds", [300, -300])
def test_a_skewed_node_reads_its_new_clock_serves_and_heals_back(run: Run, seconds: int) -> None:
    if not isinstance(run, ContainerRun):
        pytest.skip("clock skew is a fault of runs on containers")
    node = next(n.name for n in run.nodes if not n.spec.is_envoy)
    key = f"clock-{seconds}-{time.time_ns()}"
    with faults.injected(run, ClockSkew(node, seconds)):
        assert skew_of(run, node) == seconds
        with run.client() as api:  # a token from a node 5 minutes off: refused or taken, never a crash
            assert api.put(f"/v1/kv/{key}", content=b"skewed").status_code in (200, 401)
    assert skew_of(run, node) == 0
    with run.client() as api:
        assert api.put(f"/v1/kv/{key}", content=b"healed").status_code == 200
        assert api.get(f"/v1/kv/{key}").content == b"healed"


def test_a_skew_on_an_envoy_or_beyond_a_day_is_refused_before_anything_is_written(run: Run) -> None:
    if not isinstance(run, ContainerRun):
        pytest.skip("clock skew is a fault of runs on containers")
    node = run.nodes[0].name
    assert "seconds either way" in (ClockSkew(node, 90_000).applies_to(run) or "")
    assert "no node" in (ClockSkew("nowhere", 60).applies_to(run) or "")
    envoys = [n.name for n in run.nodes if n.spec.is_envoy]
    if envoys:
        assert "runs Envoy" in (ClockSkew(envoys[0], 60).applies_to(run) or "")

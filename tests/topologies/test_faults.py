"""Fault bookkeeping against fakes that only record: heal restores everything, always."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from topologies import faults
from topologies.exceptions import FaultError
from topologies.spec import NodeSpec


@dataclass
class FakeNode:
    name: str
    status: str = "running"
    broken: bool = False
    calls: list[str] = field(default_factory=list)

    @property
    def spec(self) -> NodeSpec:
        return NodeSpec(self.name, ("kv",))

    @property
    def running(self) -> bool:
        return self.status == "running"

    def start(self) -> None:
        self.calls.append("start")
        if self.broken:
            raise RuntimeError("docker said no")
        self.status = "running"

    def unpause(self) -> None:
        self.calls.append("unpause")
        self.status = "running"

    def kill(self) -> None:
        self.calls.append("kill")
        self.status = "exited"


@dataclass
class FakeCluster:
    nodes: list[FakeNode]
    mode: str = "ha"
    netns: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    health_checks: int = 0

    def node(self, name: str) -> FakeNode:
        return next(n for n in self.nodes if n.name == name)

    @property
    def ips(self) -> dict[str, str]:
        return {n.name: f"10.0.0.{i}" for i, n in enumerate(self.nodes, 1)}

    def in_netns(self, node: FakeNode, commands: list[str]) -> str:
        self.netns.append((node.name, tuple(commands)))
        return ""

    def wait_healthy(self, timeout: float = 0) -> None:
        self.health_checks += 1


def test_heal_all_keeps_going_past_a_failure_and_reports_it() -> None:
    cluster = FakeCluster([FakeNode("a", "paused"), FakeNode("b", "exited", broken=True), FakeNode("c", "exited")])
    with pytest.raises(FaultError, match="b: docker said no"):
        faults.heal_all(cluster)  # type: ignore[arg-type]
    assert [n.status for n in cluster.nodes] == ["running", "exited", "running"]
    assert {name for name, _ in cluster.netns} == {"a", "c"}, "rules are flushed on every running node"


def test_injected_heals_and_checks_health_even_when_the_body_fails() -> None:
    cluster = FakeCluster([FakeNode("a"), FakeNode("b"), FakeNode("c")])
    with pytest.raises(ZeroDivisionError):
        with faults.injected(cluster, faults.Kill("b")):  # type: ignore[arg-type]
            assert cluster.node("b").status == "exited"
            1 / 0  # noqa: B018
    assert cluster.node("b").status == "running"
    assert cluster.health_checks == 2, "health is checked before the fault and after healing"


def test_a_fault_that_does_not_apply_is_refused_before_anything_happens() -> None:
    cluster = FakeCluster([FakeNode("a")])
    with pytest.raises(FaultError, match="no node 'zz'"):
        with faults.injected(cluster, faults.Kill("zz")):  # type: ignore[arg-type]
            pass
    with pytest.raises(FaultError, match="at least two nodes"):
        with faults.injected(cluster, faults.Partition((("a",),))):  # type: ignore[arg-type]
            pass
    assert cluster.health_checks == 0 and not cluster.netns


def test_partition_writes_rules_only_after_computing_all_of_them() -> None:
    cluster = FakeCluster([FakeNode("a"), FakeNode("b"), FakeNode("c")])
    fault = faults.Partition((("a",), ("b", "c"), ("ghost",)))
    assert "unknown nodes: ghost" in (fault.applies_to(cluster) or "")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ghost"):
        fault.apply(cluster)  # type: ignore[arg-type]
    assert cluster.netns == [], "a bad plan writes no rule at all"

"""Everything above the platform seam, against the recording fake: the fault cycle, victim
choice, readiness timeouts, starting and attaching. The same code runs on Docker in
test_modes.py and the scenarios."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from runtime.security.tls import make_ca
from topologies import faults, plan, victims
from topologies.attach import attach
from topologies.client import Credentials
from topologies.cluster import Cluster, run_dir, write_secrets
from topologies.constants import API_PORT, DATA_DIR, GRPC_PORT, LABEL_ROLE
from topologies.exceptions import FaultError, NotFound, StartTimeout
from topologies.launch import launch
from topologies.node import Node
from topologies.pki import RunPki
from topologies.platforms import EXITED, PAUSED, RUNNING, Handle, Launch
from topologies.platforms.fake import ExecReply, FakePlatform
from topologies.spec import ModeSpec, NodeSpec
from topologies.wait import WaitTimeout


class Healthy(Cluster):
    """A cluster whose health checks only count: the fake's nodes serve no HTTP."""

    health_checks = 0

    def wait_healthy(self, timeout: float = 120.0) -> None:
        self.health_checks += 1


def cluster_of(platform: FakePlatform, tmp_path: Path, names: Sequence[str] = ("a", "b", "c")) -> Healthy:
    nodes = tuple(NodeSpec(n, ("auth", "ingress", "kv", "queue"), db_member=True) for n in names)
    cluster = Healthy("run1", ModeSpec("ha", "", "etcd", nodes), "img", platform, tmp_path, Credentials("admin", "pw"))
    for i, node in enumerate(nodes, 11):
        handle = platform.launch(Launch(f"mm-run1-{node.name}", "img", cluster.labels(node.name), publish=(API_PORT,)))
        cluster.nodes.append(Node(node, f"10.0.0.{i}", handle.ports[API_PORT], handle, platform))
    platform.calls.clear()
    return cluster


def leader_is(name: str) -> ExecReply:
    """An etcdctl answer: the member on node ``name`` leads."""

    def reply(handle: Handle, command: Sequence[str]) -> tuple[int, str]:
        me = 1 if handle.name.endswith(f"-{name}") else 2
        return 0, json.dumps([{"Status": {"leader": 1, "header": {"member_id": me}}}])

    return reply


@pytest.fixture
def platform() -> FakePlatform:
    return FakePlatform()


# -- the fault cycle ------------------------------------------------------------------------


def test_heal_all_keeps_going_past_a_failure_and_reports_it(platform: FakePlatform, tmp_path: Path) -> None:
    cluster = cluster_of(platform, tmp_path)
    a, b, c = cluster.nodes
    platform.states[a.handle.id], platform.states[b.handle.id], platform.states[c.handle.id] = PAUSED, EXITED, EXITED
    platform.failures["start"] = 1  # b's start fails, c's works
    with pytest.raises(FaultError, match="b: start mm-run1-b: the fake platform was told to fail"):
        faults.heal_all(cluster)
    assert [n.status for n in cluster.nodes] == [RUNNING, EXITED, RUNNING]
    assert {call[1] for call in platform.calls if call[0] == "netns_exec"} == {"mm-run1-a", "mm-run1-c"}


def test_the_cycle_marks_applies_heals_and_checks_health_even_when_the_body_fails(
    platform: FakePlatform, tmp_path: Path
) -> None:
    cluster, marks = cluster_of(platform, tmp_path), list[str]()
    with pytest.raises(ZeroDivisionError):
        with faults.injected(cluster, faults.Kill("b"), mark=marks.append):
            assert cluster.node("b").status == EXITED
            1 / 0  # noqa: B018
    assert cluster.node("b").status == RUNNING
    assert cluster.health_checks == 2, "health is checked before the fault and after healing"
    assert marks == ["apply kill(b)", "heal kill(b)", "healthy"]


def test_the_cycle_heals_on_keyboard_interrupt(platform: FakePlatform, tmp_path: Path) -> None:
    cluster = cluster_of(platform, tmp_path)
    with pytest.raises(KeyboardInterrupt):
        with faults.injected(cluster, faults.Pause("a")):
            raise KeyboardInterrupt
    assert cluster.node("a").status == RUNNING and ("unpause", "mm-run1-a") in platform.calls


def test_a_failed_heal_step_is_retried(platform: FakePlatform, tmp_path: Path) -> None:
    cluster = cluster_of(platform, tmp_path)
    with faults.injected(cluster, faults.Kill("c")):
        platform.failures["start"] = 1
    assert [call for call in platform.calls if call[0] == "start"] == [("start", "mm-run1-c")] * 2
    assert cluster.node("c").status == RUNNING


def test_a_heal_that_keeps_failing_is_reported_after_its_tries(platform: FakePlatform, tmp_path: Path) -> None:
    cluster = cluster_of(platform, tmp_path)
    with pytest.raises(FaultError, match=r"could not heal kill\(c\) after 2 tries"):
        with faults.injected(cluster, faults.Kill("c"), heal_tries=2):
            platform.failures["start"] = 99
    assert cluster.health_checks == 1, "a cluster that could not be healed is not called healthy"


def test_a_fault_that_does_not_apply_is_refused_before_anything_happens(platform: FakePlatform, tmp_path: Path) -> None:
    cluster = cluster_of(platform, tmp_path, ["a"])
    with pytest.raises(FaultError, match="no node 'zz'"):
        with faults.injected(cluster, faults.Kill("zz")):
            pass
    with pytest.raises(FaultError, match="at least two nodes"):
        with faults.injected(cluster, faults.Partition((("a",),))):
            pass
    assert cluster.health_checks == 0 and platform.calls == []


def test_partition_writes_rules_only_after_computing_all_of_them(platform: FakePlatform, tmp_path: Path) -> None:
    cluster = cluster_of(platform, tmp_path)
    fault = faults.Partition((("a",), ("b", "c"), ("ghost",)))
    assert "unknown nodes: ghost" in (fault.applies_to(cluster) or "")
    with pytest.raises(ValueError, match="ghost"):
        fault.apply(cluster)
    assert platform.calls == [], "a bad plan writes no rule at all"


def test_partition_rules_run_in_each_nodes_namespace(platform: FakePlatform, tmp_path: Path) -> None:
    cluster = cluster_of(platform, tmp_path)
    faults.Partition.isolating("a", cluster).apply(cluster)
    scripts = {call[1]: call[2] for call in platform.calls if call[0] == "netns_exec"}
    assert "iptables -A INPUT -s 10.0.0.12 -j DROP" in scripts["mm-run1-a"]
    assert "iptables -A INPUT -s 10.0.0.11 -j DROP" in scripts["mm-run1-b"]


def test_a_failing_netns_command_is_a_fault_error_with_its_output(platform: FakePlatform, tmp_path: Path) -> None:
    cluster = cluster_of(platform, tmp_path)
    platform.on_netns = lambda handle, script: (3, "iptables: no chain")
    with pytest.raises(FaultError, match="exited 3: iptables: no chain"):
        faults.Loss("a", 20).apply(cluster)


# -- victims ----------------------------------------------------------------------------------


def test_victims_follow_the_live_leader(platform: FakePlatform, tmp_path: Path) -> None:
    cluster, rng = cluster_of(platform, tmp_path), random.Random(7)
    platform.on_exec = leader_is("b")
    assert victims.choose(cluster, "leader", rng) == "b"
    assert {victims.choose(cluster, "follower", rng) for _ in range(20)} == {"a", "c"}
    assert "b" not in {victims.choose(cluster, "other", rng) for _ in range(20)}
    assert victims.choose(cluster, "service:kv", rng) in {"a", "b", "c"}


def test_victims_refuse_what_the_mode_cannot_give(platform: FakePlatform, tmp_path: Path) -> None:
    cluster, rng = cluster_of(platform, tmp_path, ["solo"]), random.Random(1)
    platform.on_exec = leader_is("solo")
    with pytest.raises(NotFound, match="no follower node besides the leader solo"):
        victims.choose(cluster, "follower", rng)
    with pytest.raises(NotFound, match="no victim kind 'boss'"):
        victims.choose(cluster, "boss", rng)


def test_no_leader_is_reported_with_what_each_member_said(platform: FakePlatform, tmp_path: Path) -> None:
    cluster = cluster_of(platform, tmp_path)
    platform.on_exec = lambda handle, command: (1, "context deadline exceeded")
    with pytest.raises(NotFound, match="no etcd member reports itself leader: a: context deadline exceeded"):
        cluster.db_leader()


# -- starting -----------------------------------------------------------------------------------


@pytest.fixture
def ca_pem() -> str:
    ca = make_ca("test CA", datetime.now(UTC), timedelta(hours=1))
    return ca.cert_pem.decode()


def test_launch_plans_every_node_on_the_platform_then_times_out_on_readiness(
    platform: FakePlatform, ca_pem: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MODEMATRIX_CACHE", str(tmp_path))
    platform.on_exec = lambda handle, command: (0, ca_pem) if command[0] == "cat" else (1, "")
    platform.log_lines["node-1"] = "runtime: listening\n"
    with pytest.raises(StartTimeout) as caught:
        launch("ha", platform=platform, timeout=1.0)
    assert caught.value.node == "node-1" and "not ready after" in str(caught.value)
    assert "last /readyz answer: (0, 'ConnectError" in str(caught.value)
    names = [spec.name for spec in platform.launched]
    assert len(names) == 3 and all(n.startswith("mm-") for n in names)
    first = platform.launched[0]
    assert first.env["RUNTIME_SERVICES"] == "auth,ingress,kv,queue" and first.publish == (API_PORT, GRPC_PORT)
    assert first.labels[LABEL_ROLE] == "node" and first.volume_path == DATA_DIR
    assert platform.calls[-1][0] == "remove_run", "a failed start removes what it started"
    assert ("guard", "modematrix/runtime:fake") in platform.calls


def test_a_node_that_exits_while_starting_is_named_with_its_logs(
    platform: FakePlatform, ca_pem: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MODEMATRIX_CACHE", str(tmp_path))
    platform.on_exec = lambda handle, command: (0, ca_pem)
    original = platform.launch

    def launch_and_die(spec: Launch) -> Handle:
        handle = original(spec)
        platform.states[handle.id] = EXITED
        platform.log_lines[handle.name] = "runtime: refusing to start: services: no services given\n"
        return handle

    platform.launch = launch_and_die  # type: ignore[method-assign]
    with pytest.raises(StartTimeout) as caught:
        launch("single", platform=platform, timeout=5.0)
    assert "is exited" in str(caught.value)
    assert "refusing to start" in caught.value.logs


def test_attach_rebuilds_a_run_from_what_the_platform_knows(
    platform: FakePlatform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODEMATRIX_CACHE", str(tmp_path))
    spec = ModeSpec("ha", "", "etcd", tuple(NodeSpec(f"n{i}", ("kv",), True) for i in (1, 2)))
    secrets = plan.Secrets("s", "pw")
    ips = {"n1": "10.1.1.11", "n2": "10.1.1.12"}
    run_pki = RunPki.create(tmp_path / "elsewhere")
    for node in spec.nodes:
        labels = {
            "modematrix.run": "r9",
            "modematrix.mode": "ha",
            "modematrix.node": node.name,
            LABEL_ROLE: "node",
            "modematrix.services": "kv",
            "modematrix.db_member": "true",
        }
        env = plan.node_env(spec, node, ips, secrets, run_pki.bundle(spec, node, ips[node.name]).dump())
        platform.launch(Launch(f"mm-r9-{node.name}", "img", labels, env=env, ip=ips[node.name], publish=(API_PORT,)))
    with pytest.raises(NotFound, match="work on the machine that started the run"):
        attach("r9", platform)  # no run folder here: the secrets are nowhere else (never in the nodes' settings)
    folder = run_dir("r9")
    write_secrets(folder, secrets)
    (folder / "ca.pem").write_bytes(run_pki.ca.cert_pem)
    cluster = attach("r9", platform)
    assert [n.name for n in cluster.nodes] == ["n1", "n2"] and cluster.spec.db == "etcd"
    assert cluster.admin.password == "pw" and cluster.ca_file.read_bytes() == run_pki.ca.cert_pem
    assert not [v for h in platform.handles.values() for v in h.env.values() if v in ("s", "pw")]
    with pytest.raises(NotFound, match="no run 'nope'"):
        attach("nope", platform)


def test_health_waits_for_every_db_member_not_just_node_readiness(platform: FakePlatform, tmp_path: Path) -> None:
    """A node is ready once it reaches any member; health also needs each member itself."""
    cluster = Cluster("run1", ModeSpec("ha", "", "etcd", ()), "img", platform, tmp_path, Credentials("admin", "pw"))
    for i, name in enumerate(("a", "b", "c"), 11):
        handle = platform.launch(Launch(f"mm-run1-{name}", "img", cluster.labels(name), publish=(API_PORT,)))
        cluster.nodes.append(Node(NodeSpec(name, ("kv",), db_member=True), f"10.0.0.{i}", 1, handle, platform))
    cluster.spec = ModeSpec("ha", "", "etcd", tuple(n.spec for n in cluster.nodes))
    answers = iter([1, 1, 0])  # b's member answers "unhealthy" twice, then healthy
    platform.on_exec = lambda handle, command: ((next(answers) if handle.name.endswith("-b") else 0), "")
    cluster.wait_db_members(timeout=5)
    asked = [call[1] for call in platform.calls if call[0] == "exec" and "endpoint health" in call[2]]
    assert asked.count("mm-run1-b") == 3 and asked.count("mm-run1-a") == 1
    platform.on_exec = lambda handle, command: (1, "unhealthy")
    with pytest.raises(WaitTimeout, match="the DB member on a healthy"):
        cluster.wait_db_members(timeout=0.3)

"""Everything above the engine seam, against the recording fake: the fault cycle, victim
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
from topologies import faults, spec, targets
from topologies.constants import (
    API_PORT,
    BALLAST_FILE,
    DATA_DIR,
    GRPC_PORT,
    LABEL_DATA_SIZE,
    LABEL_LAZY_FS,
    LABEL_ROLE,
    LAZY_VOLUME_DIR,
    LAZYFS_BIN,
)
from topologies.containers import attach, plan, start, victims
from topologies.containers.faults import BadIo, DiskFull, Kill, Loss, Partition, Pause, ReplaceMember
from topologies.containers.node import Node
from topologies.containers.run import TARGET, ContainerRun
from topologies.containers.start import Place, node_launch
from topologies.engines import EXITED, PAUSED, RUNNING, Handle, Launch
from topologies.engines.fake import ExecReply, FakeEngine
from topologies.exceptions import FaultError, NotFound, StartTimeout, TopologyError, UsageError
from topologies.kubernetes import faults as kube
from topologies.pki import RunPki
from topologies.runs import RunRecord, Secrets, run_dir
from topologies.spec import ModeSpec, NodeSpec
from topologies.wait import WaitTimeout


class Healthy(ContainerRun):
    """A run whose health checks only count: the fake's nodes serve no HTTP."""

    health_checks = 0

    def wait_healthy(self, timeout: float = 120.0) -> None:
        self.health_checks += 1


def run_of(
    engine: FakeEngine,
    tmp_path: Path,
    names: Sequence[str] = ("a", "b", "c"),
    data_size: int | None = None,
    lazy: bool = False,
) -> Healthy:
    RunRecord("run1", "ha", TARGET, {}).write(tmp_path, Secrets("s", "pw"))
    specs = tuple(NodeSpec(n, ("auth", "ingress", "kv", "queue"), db_member=True) for n in names)
    nodes = []
    for i, node in enumerate(specs, 11):
        labels = {"modematrix.run": "run1", "modematrix.mode": "ha", "modematrix.node": node.name}
        if data_size is not None:
            labels[LABEL_DATA_SIZE] = str(data_size)
        if lazy:
            labels[LABEL_LAZY_FS] = "true"
        handle = engine.launch(Launch(f"mm-run1-{node.name}", "img", labels, publish=(API_PORT,)))
        nodes.append(Node(node, f"10.0.0.{i}", handle.ports[API_PORT], handle, engine))
    engine.calls.clear()
    return Healthy("run1", ModeSpec("ha", "", "etcd", specs), image="img", engine=engine, workdir=tmp_path, nodes=nodes)


def leader_is(name: str) -> ExecReply:
    """An etcdctl answer: the member on node ``name`` leads."""

    def reply(handle: Handle, command: Sequence[str]) -> tuple[int, str]:
        me = 1 if handle.name.endswith(f"-{name}") else 2
        return 0, json.dumps([{"Status": {"leader": 1, "header": {"member_id": me}}}])

    return reply


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


# -- the fault cycle ------------------------------------------------------------------------


def test_heal_all_keeps_going_past_a_failure_and_reports_it(engine: FakeEngine, tmp_path: Path) -> None:
    cluster = run_of(engine, tmp_path)
    a, b, c = cluster.nodes
    engine.states[a.handle.id], engine.states[b.handle.id], engine.states[c.handle.id] = PAUSED, EXITED, EXITED
    engine.failures["start mm-run1-b"] = 1  # b's start fails, c's works (healed at the same time)
    with pytest.raises(FaultError, match="b: start mm-run1-b: the fake engine was told to fail"):
        cluster.heal_all()
    assert [n.status for n in cluster.nodes] == [RUNNING, EXITED, RUNNING]
    assert {call[1] for call in engine.calls if call[0] == "netns_exec"} == {"mm-run1-a", "mm-run1-c"}


def test_the_cycle_marks_applies_heals_and_checks_health_even_when_the_body_fails(
    engine: FakeEngine, tmp_path: Path
) -> None:
    cluster, marks = run_of(engine, tmp_path), list[str]()
    with pytest.raises(ZeroDivisionError):
        with faults.injected(cluster, Kill("b"), mark=marks.append):
            assert cluster.node("b").status == EXITED
            1 / 0  # noqa: B018
    assert cluster.node("b").status == RUNNING
    assert cluster.health_checks == 2, "health is checked before the fault and after healing"
    assert marks == ["apply kill(b)", "heal kill(b)", "healthy"]


def test_the_cycle_heals_on_keyboard_interrupt(engine: FakeEngine, tmp_path: Path) -> None:
    cluster = run_of(engine, tmp_path)
    with pytest.raises(KeyboardInterrupt):
        with faults.injected(cluster, Pause("a")):
            raise KeyboardInterrupt
    assert cluster.node("a").status == RUNNING and ("unpause", "mm-run1-a") in engine.calls


def test_a_failed_heal_step_is_retried(engine: FakeEngine, tmp_path: Path) -> None:
    cluster = run_of(engine, tmp_path)
    with faults.injected(cluster, Kill("c")):
        engine.failures["start"] = 1
    assert [call for call in engine.calls if call[0] == "start"] == [("start", "mm-run1-c")] * 2
    assert cluster.node("c").status == RUNNING


def test_a_heal_that_keeps_failing_is_reported_after_its_tries(engine: FakeEngine, tmp_path: Path) -> None:
    cluster = run_of(engine, tmp_path)
    with pytest.raises(FaultError, match=r"could not heal kill\(c\) after 2 tries"):
        with faults.injected(cluster, Kill("c"), heal_tries=2):
            engine.failures["start"] = 99
    assert cluster.health_checks == 1, "a cluster that could not be healed is not called healthy"


def test_a_fault_that_does_not_apply_is_refused_before_anything_happens(engine: FakeEngine, tmp_path: Path) -> None:
    cluster = run_of(engine, tmp_path, ["a"])
    with pytest.raises(FaultError, match="no node 'zz'"):
        with faults.injected(cluster, Kill("zz")):
            pass
    with pytest.raises(FaultError, match="at least two nodes"):
        with faults.injected(cluster, Partition((("a",),))):
            pass
    assert cluster.health_checks == 0 and engine.calls == []


def test_a_full_disk_is_refused_where_the_data_dir_is_the_hosts_disk(engine: FakeEngine, tmp_path: Path) -> None:
    with pytest.raises(FaultError, match="--data-size"), faults.injected(run_of(engine, tmp_path), DiskFull("a")):
        pass
    assert engine.calls == []


def test_a_full_disk_fills_the_sized_data_dir_and_heal_removes_the_ballast(engine: FakeEngine, tmp_path: Path) -> None:
    cluster = run_of(engine, tmp_path, data_size=32 << 20)
    assert cluster.data_size == 32 << 20
    engine.on_exec = lambda handle, command: (0, "filled 33554432 left 0" if "python" in command[0] else "")
    with faults.injected(cluster, DiskFull("b")):
        assert next(c for c in engine.calls if c[0] == "exec")[1] == "mm-run1-b"
    assert ("exec", "mm-run1-b", f"rm -f {BALLAST_FILE}") in engine.calls


def test_a_fill_that_did_not_fill_is_a_fault_error(engine: FakeEngine, tmp_path: Path) -> None:
    cluster = run_of(engine, tmp_path, data_size=32 << 20)
    engine.on_exec = lambda handle, command: (1, "PermissionError: [Errno 13]")
    with pytest.raises(FaultError, match="could not fill b's data dir: PermissionError"):
        DiskFull("b").apply(cluster)


def test_io_faults_are_refused_off_lazyfs_and_out_of_range(engine: FakeEngine, tmp_path: Path) -> None:
    with pytest.raises(FaultError, match="--lazy-fs"), faults.injected(run_of(engine, tmp_path), BadIo("a")):
        pass
    assert engine.calls == []
    lazy = run_of(engine, tmp_path, lazy=True)
    assert lazy.lazy_fs
    assert BadIo("a", 10_001).applies_to(lazy) == "an I/O delay of 0 to 10000 ms, not 10001"


def test_io_faults_ask_lazyfs_as_root_and_heal_all_ends_them(engine: FakeEngine, tmp_path: Path) -> None:
    lazy = run_of(engine, tmp_path, lazy=True)
    with faults.injected(lazy, BadIo("b")):
        assert ("exec", "mm-run1-b", f"{LAZYFS_BIN} ctl eio") in engine.calls
    assert ("exec", "mm-run1-b", f"{LAZYFS_BIN} ctl ok") in engine.calls
    with faults.injected(lazy, BadIo("c", 50)):
        assert ("exec", "mm-run1-c", f"{LAZYFS_BIN} ctl slow 50") in engine.calls
    engine.calls.clear()
    lazy.heal_all()
    healed = [c for c in engine.calls if c[0] == "exec"]
    assert healed and all(f"{LAZYFS_BIN} ctl ok" in c[2] for c in healed)


def test_a_refused_io_request_is_a_fault_error(engine: FakeEngine, tmp_path: Path) -> None:
    lazy = run_of(engine, tmp_path, lazy=True)
    engine.on_exec = lambda handle, command: (1, "lazyfs: no lazyfs answers at /run/lazyfs.sock")
    with pytest.raises(FaultError, match="lazyfs on a refused 'eio': lazyfs: no lazyfs answers"):
        BadIo("a").apply(lazy)


def test_a_lazy_node_runs_its_runtime_under_lazyfs_with_fuse_only(tmp_path: Path) -> None:
    place = Place(FakeEngine(), "run1", "single", "10.0.0", "img", "256m", lazyfs="/cache/lazyfs-1")
    node = spec.load("single").nodes[0]
    launch = node_launch(place, node, "10.0.0.11", {}, {})
    assert launch.entrypoint is not None and launch.entrypoint[:4] == ("/usr/bin/tini", "--", LAZYFS_BIN, "run")
    assert launch.entrypoint[-1] == "/usr/local/bin/runtime" and launch.command == ("serve",)
    assert (launch.user, launch.fuse, launch.privileged) == ("0", True, False)
    assert launch.binds == {"/cache/lazyfs-1": LAZYFS_BIN}
    assert launch.volume_path == LAZY_VOLUME_DIR and f"-mount={DATA_DIR}" in launch.entrypoint
    assert launch.labels[LABEL_LAZY_FS] == "true"
    assert launch.memory == "320m"  # 256m and lazyfs's 64m
    plain = node_launch(Place(FakeEngine(), "run1", "single", "10.0.0", "img", "256m"), node, "10.0.0.11", {}, {})
    assert (plain.entrypoint, plain.user, plain.fuse, plain.volume_path, plain.memory) == (
        None,
        None,
        False,
        DATA_DIR,
        "256m",
    )


def test_lazy_fs_is_refused_on_kubernetes() -> None:
    assert targets.refused("k8s", targets.Options(lazy_fs=True)) == (
        "--lazy-fs applies to the container modes (a pod's volume is its cluster's)"
    )


def test_replacing_a_member_removes_it_as_root_stops_its_node_and_notes_it(engine: FakeEngine, tmp_path: Path) -> None:
    cluster = run_of(engine, tmp_path)
    RunPki.create(tmp_path)
    ReplaceMember("b").apply(cluster)
    run_once, killed = engine.calls[-2:]
    assert run_once[:4] == ("run_once", "img", "db-member", "remove") and run_once[4] == "b"
    assert "10.0.0.12" not in run_once[-1] and "https://10.0.0.11:2379" in run_once[-1], "asked of the others"
    assert killed == ("kill", "mm-run1-b")
    assert cluster.member_removed("b").exists(), "a heal, from any process, replaces it instead of a restart"
    with pytest.raises(FaultError, match="b: its DB member was removed"):
        cluster.heal_all()  # which alone would start the removed member again
    assert ("start", "mm-run1-b") not in engine.calls


def test_a_member_is_replaced_only_with_a_quorum_left(engine: FakeEngine, tmp_path: Path) -> None:
    assert "three or more" in (ReplaceMember("a").applies_to(run_of(engine, tmp_path, ["a", "b"])) or "")
    assert "no node 'zz'" in (ReplaceMember("zz").applies_to(run_of(engine, tmp_path)) or "")


def test_partition_writes_rules_only_after_computing_all_of_them(engine: FakeEngine, tmp_path: Path) -> None:
    cluster = run_of(engine, tmp_path)
    fault = Partition((("a",), ("b", "c"), ("ghost",)))
    assert "unknown nodes: ghost" in (fault.applies_to(cluster) or "")
    with pytest.raises(ValueError, match="ghost"):
        fault.apply(cluster)
    assert engine.calls == [], "a bad plan writes no rule at all"


def test_partition_rules_run_in_each_nodes_namespace(engine: FakeEngine, tmp_path: Path) -> None:
    cluster = run_of(engine, tmp_path)
    Partition.isolating("a", cluster).apply(cluster)
    scripts = {call[1]: call[2] for call in engine.calls if call[0] == "netns_exec"}
    assert "iptables -A INPUT -s 10.0.0.12 -j DROP" in scripts["mm-run1-a"]
    assert "iptables -A INPUT -s 10.0.0.11 -j DROP" in scripts["mm-run1-b"]


def test_a_failing_netns_command_is_a_fault_error_with_its_output(engine: FakeEngine, tmp_path: Path) -> None:
    cluster = run_of(engine, tmp_path)
    engine.on_netns = lambda handle, script: (3, "iptables: no chain")
    with pytest.raises(FaultError, match="exited 3: iptables: no chain"):
        Loss("a", 20).apply(cluster)


# -- victims ----------------------------------------------------------------------------------


def test_victims_follow_the_live_leader(engine: FakeEngine, tmp_path: Path) -> None:
    cluster, rng = run_of(engine, tmp_path), random.Random(7)
    engine.on_exec = leader_is("b")
    assert victims.choose(cluster, "leader", rng) == "b"
    assert {victims.choose(cluster, "follower", rng) for _ in range(20)} == {"a", "c"}
    assert "b" not in {victims.choose(cluster, "other", rng) for _ in range(20)}
    assert victims.choose(cluster, "service:kv", rng) in {"a", "b", "c"}


def test_victims_refuse_what_the_mode_cannot_give(engine: FakeEngine, tmp_path: Path) -> None:
    cluster, rng = run_of(engine, tmp_path, ["solo"]), random.Random(1)
    engine.on_exec = leader_is("solo")
    with pytest.raises(NotFound, match="no follower node besides the leader solo"):
        victims.choose(cluster, "follower", rng)
    with pytest.raises(NotFound, match="no victim kind 'boss'"):
        victims.choose(cluster, "boss", rng)


def test_no_leader_is_reported_with_what_each_member_said(engine: FakeEngine, tmp_path: Path) -> None:
    cluster = run_of(engine, tmp_path)
    engine.on_exec = lambda handle, command: (1, "context deadline exceeded")
    with pytest.raises(NotFound, match="no etcd member reports itself leader: a: context deadline exceeded"):
        cluster.db_leader()


# -- starting -----------------------------------------------------------------------------------


@pytest.fixture
def ca_pem() -> str:
    ca = make_ca("test CA", datetime.now(UTC), timedelta(hours=1))
    return ca.cert_pem.decode()


def test_start_plans_every_node_on_the_engine_then_times_out_on_readiness(
    engine: FakeEngine, ca_pem: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MODEMATRIX_CACHE", str(tmp_path))
    engine.on_exec = lambda handle, command: (0, ca_pem) if command[0] == "cat" else (1, "")
    engine.log_lines["node-1"] = "runtime: listening\n"
    with pytest.raises(StartTimeout) as caught:
        start(spec.load("ha"), engine, timeout=1.0)
    assert caught.value.node == "node-1" and "not ready after" in str(caught.value)
    assert "its probe (GET /readyz over https on port api) said: ConnectError" in str(caught.value)
    names = [spec.name for spec in engine.launched]
    assert len(names) == 3 and all(n.startswith("mm-") for n in names)
    first = engine.launched[0]
    assert first.env["RUNTIME_SERVICES"] == "auth,ingress,kv,queue" and first.publish == (API_PORT, GRPC_PORT)
    assert first.labels[LABEL_ROLE] == "node" and first.volume_path == DATA_DIR
    assert engine.calls[-1][0] == "remove_run", "a failed start removes what it started"
    assert not list((tmp_path / "runs").iterdir()), "and its folder: record, secrets, CA key"
    assert ("guard", "modematrix/runtime:fake") in engine.calls


def test_a_node_that_exits_while_starting_is_named_with_its_logs(
    engine: FakeEngine, ca_pem: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MODEMATRIX_CACHE", str(tmp_path))
    engine.on_exec = lambda handle, command: (0, ca_pem)
    original = engine.launch

    def launch_and_die(spec: Launch) -> Handle:
        handle = original(spec)
        engine.states[handle.id] = EXITED
        engine.log_lines[handle.name] = "runtime: refusing to start: services: no services given\n"
        return handle

    engine.launch = launch_and_die  # type: ignore[method-assign]
    with pytest.raises(StartTimeout) as caught:
        start(spec.load("single"), engine, timeout=5.0)
    assert "is exited" in str(caught.value)
    assert "refusing to start" in str(caught.value), "the message says why, where CI shows only the message"
    assert "refusing to start" in caught.value.logs


def test_attach_rebuilds_a_run_from_its_record_and_what_the_engine_knows(
    engine: FakeEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODEMATRIX_CACHE", str(tmp_path))
    mode = spec.load("ha")
    secrets = Secrets("s", "pw")
    ips = {n.name: f"10.1.1.{i}" for i, n in enumerate(mode.nodes, 11)}
    run_pki = RunPki.create(tmp_path / "elsewhere")
    for node in mode.nodes:
        labels = {
            "modematrix.run": "r9",
            "modematrix.mode": "ha",
            "modematrix.node": node.name,
            LABEL_ROLE: "node",
            "modematrix.services": ",".join(node.services),
            "modematrix.db_member": "true",
        }
        env = plan.node_env(mode, node, ips, secrets, run_pki.bundle(mode, node, ips[node.name]).dump())
        engine.launch(Launch(f"mm-r9-{node.name}", "img", labels, env=env, ip=ips[node.name], publish=(API_PORT,)))
    with pytest.raises(NotFound, match="no run 'r9' on this machine"):
        RunRecord.read("r9")  # no record here: the secrets are nowhere else (never in the nodes' settings)
    folder = run_dir("r9")
    RunRecord("r9", "ha", TARGET, mode.to_dict(), {"engine": "fake", "image": "img"}).write(folder, secrets)
    (folder / "ca.pem").write_bytes(run_pki.ca.cert_pem)
    run = attach(RunRecord.read("r9"), engine)
    assert [n.name for n in run.nodes] == ["node-1", "node-2", "node-3"] and run.image == "img"
    assert run.spec == mode and run.spec.db == "etcd"
    assert run.admin.password == "pw" and run.ca_file.read_bytes() == run_pki.ca.cert_pem
    assert not [v for h in engine.handles.values() for v in h.env.values() if v in ("s", "pw")]
    engine.remove_run("r9")
    with pytest.raises(NotFound, match="run r9 has no containers left"):
        attach(RunRecord.read("r9"), engine)


def test_health_waits_for_every_db_member_not_just_node_readiness(engine: FakeEngine, tmp_path: Path) -> None:
    """A node is ready once it reaches any member; health also needs each member itself."""
    RunRecord("run1", "ha", TARGET, {}).write(tmp_path, Secrets("s", "pw"))
    nodes = []
    for i, name in enumerate(("a", "b", "c"), 11):
        handle = engine.launch(Launch(f"mm-run1-{name}", "img", {"modematrix.run": "run1"}, publish=(API_PORT,)))
        nodes.append(Node(NodeSpec(name, ("kv",), db_member=True), f"10.0.0.{i}", 1, handle, engine))
    mode = ModeSpec("ha", "", "etcd", tuple(n.spec for n in nodes))
    cluster = ContainerRun("run1", mode, image="img", engine=engine, workdir=tmp_path, nodes=nodes)
    answers = iter([1, 1, 0])  # b's member answers "unhealthy" twice, then healthy
    engine.on_exec = lambda handle, command: ((next(answers) if handle.name.endswith("-b") else 0), "")
    cluster.wait_db_members(timeout=5)
    asked = [call[1] for call in engine.calls if call[0] == "exec" and "endpoint health" in call[2]]
    assert asked.count("mm-run1-b") == 3 and asked.count("mm-run1-a") == 1
    engine.on_exec = lambda handle, command: (1, "unhealthy")
    with pytest.raises(WaitTimeout, match="the DB member on a healthy"):
        cluster.wait_db_members(timeout=0.3)


def test_memory_names_each_running_part_with_its_role_and_skips_the_paused(engine: FakeEngine, tmp_path: Path) -> None:
    RunRecord("run1", "scaled", TARGET, {}).write(tmp_path, Secrets("s", "pw"))
    specs = [NodeSpec("envoy-1", ("envoy",)), NodeSpec("kv-1", ("kv",), db_member=True), NodeSpec("kv-2", ("kv",))]
    nodes = [
        Node(spec, f"10.0.0.{i}", 1, engine.launch(Launch(f"mm-run1-{spec.name}", "img", {})), engine)
        for i, spec in enumerate(specs, 11)
    ]
    lb = Node(NodeSpec("lb", ()), "10.0.0.5", 2, engine.launch(Launch("mm-run1-lb", "img", {})), engine, role="lb")
    run = ContainerRun(
        "run1",
        ModeSpec("scaled", "", "etcd", tuple(specs)),
        image="img",
        engine=engine,
        workdir=tmp_path,
        nodes=nodes,
        lb=lb,
    )
    engine.resident["mm-run1-kv-1"] = 90 << 20
    engine.pause(nodes[2].handle)
    engine.on_exec = lambda handle, command: (0, "15360\n" if "RssAnon" in command[-1] else "")
    assert [(f.part, f.role, f.rss_bytes >> 20) for f in run.memory()] == [
        ("envoy-1", "runtime", 25),  # the node's 40 MiB less Envoy's 15
        ("envoy-1/envoy", "envoy", 15),
        ("kv-1", "runtime + etcd member", 90),
        ("lb", "haproxy", 40),
    ]
    engine.on_exec = lambda handle, command: (1, "sh: no such file")
    with pytest.raises(TopologyError, match="envoy-1: could not read Envoy's memory: exit 1"):
        run.memory()


def test_a_clock_fault_by_name_on_an_envoy_node_is_refused_before_anything_is_written(
    engine: FakeEngine, tmp_path: Path
) -> None:
    from topologies import targets

    RunRecord("run1", "scaled", TARGET, {}).write(tmp_path, Secrets("s", "pw"))
    specs = [NodeSpec("envoy-1", ("envoy",)), NodeSpec("kv-1", ("kv",))]
    nodes = [
        Node(spec, f"10.0.0.{i}", 1, engine.launch(Launch(f"mm-run1-{spec.name}", "img", {})), engine)
        for i, spec in enumerate(specs, 11)
    ]
    run = ContainerRun(
        "run1", ModeSpec("scaled", "", "etcd", tuple(specs)), image="img", engine=engine, workdir=tmp_path, nodes=nodes
    )
    with pytest.raises(UsageError, match=r"clock-skew\(envoy-1,\+300s\): envoy-1 runs Envoy"):
        targets.inject(run, "clock-forward", "envoy-1")
    assert not [c for c in engine.calls if c[0] == "exec"]


def test_the_cli_offers_every_fault_the_k8s_mode_knows() -> None:
    """``modematrix fault`` checks the action against fault_actions before named() sees it: an
    action missing there was refused with exit 2 although named() knew it (drain did)."""
    offered = targets.fault_actions("k8s")
    for action in ("delete-pod", "rollout-restart", "kill", "pause", "partition", "drain", "clock-forward"):
        assert action in offered, action
    assert set(kube.SKEWS) <= set(offered)

"""A Kubernetes cluster built here goes through the same Engine seam as the container modes:
against the recording fake, its node containers are launched as the layout says, and a
cluster whose API never answers, or whose nodes all exit, is reported with each node's state
and logs and removed. The real build runs in ``tox -e k8s``."""

from __future__ import annotations

from pathlib import Path

import pytest

from topologies.engines import EXITED, Handle, Launch
from topologies.engines.fake import FakeEngine
from topologies.exceptions import FaultError, StartTimeout, UsageError
from topologies.kubernetes.clusters import NodeCluster
from topologies.kubernetes.clusters.layout import CONF, cgroupns, plan


def test_node_containers_are_launched_through_the_engine_and_removed_when_the_api_never_answers(
    tmp_path: Path,
) -> None:
    engine, said = FakeEngine(), list[str]()
    with pytest.raises(StartTimeout, match="the API server answers: not after 2 s"):
        NodeCluster.create("r-fake", tmp_path / "cluster", engine, workers=2, timeout=2, report=said.append)
    names = [launch.name for launch in engine.launched]
    assert names == ["mm-r-fake-kube-control-plane", "mm-r-fake-kube-worker-1", "mm-r-fake-kube-worker-2"]
    for launch in engine.launched:
        assert launch.privileged and launch.image == "modematrix/k8s-node:fake"
        assert launch.cgroupns is None, "a cgroup v1 host: the host's namespace, node.sh binds the hierarchies"
        assert CONF in launch.binds.values(), "each node reads its files from the run's folder"
        assert launch.labels["modematrix.run"] == "r-fake"
    assert ("node_image",) in engine.calls and engine.calls[-1] == ("remove_run", "r-fake")
    assert any("(fake logs of mm-r-fake-kube-worker-2)" in line for line in said), "a failure shows each node's logs"


def test_a_cluster_whose_nodes_all_exit_stops_waiting_at_once(tmp_path: Path) -> None:
    engine = FakeEngine()
    real_launch = engine.launch

    def launch_and_exit(spec: Launch) -> Handle:
        handle = real_launch(spec)
        engine.states[handle.id] = EXITED
        return handle

    engine.launch = launch_and_exit  # type: ignore[method-assign]
    with pytest.raises(StartTimeout, match="every node container has exited"):
        NodeCluster.create("r-gone", tmp_path / "cluster", engine, workers=2, timeout=300)
    assert engine.calls[-1] == ("remove_run", "r-gone")


def test_on_a_cgroup_v2_host_each_node_has_a_cgroup_namespace_of_its_own(tmp_path: Path) -> None:
    engine = FakeEngine()
    engine.cgroups = 2
    with pytest.raises(StartTimeout):
        NodeCluster.create("r-v2", tmp_path / "cluster", engine, workers=2, timeout=1)
    assert [launch.cgroupns for launch in engine.launched] == ["private"] * 3
    assert ("cgroup_version",) in engine.calls
    with pytest.raises(ValueError, match="cgroup version: expected 1 or 2, got 3"):
        cgroupns(3)


def test_node_sh_knows_both_hierarchies() -> None:
    """What node.sh does per version, read from the script (its v2 path cannot run here: this
    machine is cgroup v1; the GitHub workflow's k8s job runs it on cgroup v2 runners)."""
    script = (Path(__file__).parents[2] / "images" / "k8s" / "node" / "node.sh").read_text()
    v2 = script[script.index("fix_cgroups_v2() {") :]
    v2 = v2[: v2.index("\n}\n")]
    assert "/sys/fs/cgroup/cgroup.controllers ]; then fix_cgroups_v2" in script
    assert "init.scope/cgroup.procs" in v2 and "cgroup.subtree_control" in v2 and '"$root/kubelet"' in v2


def test_three_control_planes_start_behind_a_balancer_of_the_runtime_image_with_coredns_bound_in(
    tmp_path: Path,
) -> None:
    engine = FakeEngine()
    with pytest.raises(StartTimeout):
        NodeCluster.create("r-ha", tmp_path / "cluster", engine, workers=2, control_planes=3, timeout=1)
    balancer, *nodes = engine.launched
    assert balancer.name == "mm-r-ha-kube-balancer" and balancer.image == "modematrix/runtime:fake"
    assert balancer.user == "0" and balancer.ip == "10.9.9.5" and not balancer.privileged
    assert balancer.binds[str(tmp_path / "cluster" / "balancer")] == "/etc/modematrix-balancer"
    assert "/usr/local/bin/coredns" in balancer.binds.values()
    assert (tmp_path / "cluster" / "balancer" / "haproxy.cfg").exists()
    assert oct((tmp_path / "cluster" / "balancer" / "coredns.kubeconfig").stat().st_mode & 0o777) == "0o600"
    assert [n.name for n in nodes][:3] == [f"mm-r-ha-kube-control-plane-{i}" for i in (1, 2, 3)]


def _cluster(engine: FakeEngine, tmp_path: Path, control_planes: int) -> NodeCluster:
    nodes = plan("10.9.9", workers=2, control_planes=control_planes)
    handles = {n.name: engine.launch(Launch(name=f"mm-r-{n.name}", image="i", labels={})) for n in nodes}
    balancer = engine.launch(Launch(name="mm-r-kube-balancer", image="i", labels={})) if control_planes > 1 else None
    return NodeCluster("r", engine, tmp_path, nodes, handles, kubectl=Path("kubectl"), balancer=balancer)


@pytest.mark.parametrize(("control_planes", "where"), [(1, "mm-r-kube-control-plane"), (3, "mm-r-kube-balancer")])
def test_dns_is_frozen_and_thawed_where_coredns_runs(tmp_path: Path, control_planes: int, where: str) -> None:
    engine = FakeEngine()
    cluster = _cluster(engine, tmp_path, control_planes)
    engine.on_exec = lambda handle, command: (0, "/proc/42\n")
    cluster.signal_dns("STOP")
    cluster.signal_dns("CONT")
    sent = [call for call in engine.calls if call[0] == "exec"]
    assert [call[1] for call in sent] == [where, where]
    assert "kill -STOP" in sent[0][2] and "kill -CONT" in sent[1][2] and "= coredns ]" in sent[0][2]
    engine.on_exec = lambda handle, command: (0, "")
    with pytest.raises(FaultError, match="SIGSTOP to CoreDNS: no coredns process"):
        cluster.signal_dns("STOP")
    cluster.signal_dns("CONT")  # nothing frozen: healing it is no error


def test_node_sh_restarts_the_leader_elected_components_and_stops_the_node_for_the_others() -> None:
    """A controller manager or scheduler that loses its lease exits by design (kubelet restarts
    its static pod); node.sh runs both again. The soak found it: one exit used to stop the whole
    control-plane node, and with two of three gone, etcd's quorum."""
    script = (Path(__file__).parents[2] / "images" / "k8s" / "node" / "node.sh").read_text()
    assert "run kube-controller-manager again kube-controller-manager" in script
    assert "run kube-scheduler again kube-scheduler" in script
    assert "run etcd etcd " in script and "run kube-apiserver kube-apiserver " in script
    assert 'wait -n "${PIDS[@]}"' in script, "any other component's exit still stops the node"


def test_nodes_keep_images_in_memory_unless_told_disk_and_a_wrong_store_starts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    containerd = "/var/lib/mm-node/containerd"
    for store, want in ((None, True), ("disk", False), ("memory", True)):
        engine = FakeEngine()
        with pytest.raises(StartTimeout):
            NodeCluster.create("r-s", tmp_path / str(store), engine, workers=2, timeout=1, image_store=store)
        assert [containerd in launch.tmpfs for launch in engine.launched] == [want] * 3, store
    monkeypatch.setenv("MODEMATRIX_K8S_IMAGE_STORE", "disk")
    engine = FakeEngine()
    with pytest.raises(StartTimeout):
        NodeCluster.create("r-e", tmp_path / "env", engine, workers=2, timeout=1)
    assert all(containerd not in launch.tmpfs for launch in engine.launched)
    monkeypatch.setenv("MODEMATRIX_K8S_IMAGE_STORE", "ssd")
    engine = FakeEngine()
    with pytest.raises(UsageError, match="MODEMATRIX_K8S_IMAGE_STORE: expected memory or disk, got 'ssd'"):
        NodeCluster.create("r-x", tmp_path / "bad", engine, workers=2, timeout=1)
    assert engine.launched == []


@pytest.mark.parametrize(("store", "imports"), [("memory", 1), ("disk", 0)])
def test_a_worker_restarted_with_its_images_in_memory_gets_them_again(tmp_path: Path, store: str, imports: int) -> None:
    engine = FakeEngine()
    with pytest.raises(StartTimeout):  # what remains of it: the run's record of its image store
        NodeCluster.create("r-h", tmp_path, engine, workers=2, timeout=1, image_store=store)
    nodes = plan("10.9.9", workers=2)
    handles = {n.name: engine.launch(Launch(f"mm-r-h-{n.name}", "node", {})) for n in nodes}
    built = NodeCluster("r-h", engine, tmp_path, nodes, handles, kubectl=Path("/fake/kubectl"))
    built.load_images(["modematrix/runtime:t"])
    engine.calls.clear()
    for node in ("kube-worker-1", "kube-control-plane"):
        engine.kill(built.handles[node])
        built.heal_node(node)
    imported = [c for c in engine.calls if c[0] == "exec" and "images import" in c[2]]
    assert [c[1] for c in imported] == ["mm-r-h-kube-worker-1"] * imports, "a control plane runs none of them"


def test_a_run_on_a_cluster_built_for_another_leaves_it_and_is_found_on_it_from_its_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A matrix's Kubernetes sizes share one cluster built here: each size's run deploys into a
    namespace of it, says so in its record (so another process finds the node containers),
    and on stop removes its namespace and its own folder, never the cluster."""
    from topologies import kubernetes
    from topologies.constants import LABEL_NODE, LABEL_RUN
    from topologies.engines import Launch
    from topologies.kubernetes import apply
    from topologies.kubernetes.clusters.nodes import ROLE
    from topologies.kubernetes.run import KubeRun, built_here_details
    from topologies.runs import RunRecord, run_dir
    from topologies.spec import load

    monkeypatch.setenv("MODEMATRIX_CACHE", str(tmp_path / "cache"))
    engine = FakeEngine()
    nodes = plan("10.9.9", workers=2)
    handles = {
        n.name: engine.launch(
            Launch(
                f"mm-r-cluster-{n.name}", "node", {LABEL_RUN: "r-cluster", LABEL_NODE: n.name, "modematrix.role": ROLE}
            )
        )
        for n in nodes
    }
    (tmp_path / "cluster").mkdir()
    (tmp_path / "cluster" / "kubeconfig").write_text(KUBECONFIG)
    cluster = NodeCluster("r-cluster", engine, tmp_path / "cluster", nodes, handles, kubectl=tmp_path / "kubectl")
    details = {"namespace": "r-size3", "image": "i", **built_here_details(cluster)}
    record = RunRecord("r-size3", "k8s", kubernetes.TARGET, load("scaled").to_dict(), details)
    record.write(run_dir("r-size3"))
    found = kubernetes.attach(RunRecord.read("r-size3"), engine)
    assert isinstance(found.cluster, NodeCluster)
    assert (found.cluster.run_id, found.cluster.workdir) == ("r-cluster", tmp_path / "cluster")
    assert sorted(found.cluster.handles) == sorted(handles), "the other run's node containers"
    deleted: list[str] = []
    monkeypatch.setattr(apply, "delete_namespace", lambda config, namespace: deleted.append(namespace))
    folder = run_dir("r-size3")
    run = KubeRun("r-size3", "k8s", load("scaled"), cluster=cluster, namespace="r-size3", image="i", workdir=folder)
    run.stop()
    assert deleted == ["r-size3"] and ("remove_run", "r-cluster") not in engine.calls
    assert not folder.exists() and (tmp_path / "cluster" / "kubeconfig").exists()
    own = KubeRun(
        "r-cluster", "k8s", load("scaled"), cluster=cluster, namespace="n", image="i", workdir=tmp_path / "own"
    )
    own.stop()  # a run stops the cluster built for it
    assert engine.calls[-1] == ("remove_run", "r-cluster") and deleted == ["r-size3"]


def test_a_run_folder_left_without_a_record_is_listed_and_downed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A matrix that dies leaves its shared cluster's folder (the reaper removes the
    containers): ``status`` lists it, and ``down`` of its id removes it."""
    from topologies import engines
    from topologies.cli import runs
    from topologies.runs import RunRecord, run_dir
    from topologies.spec import load

    monkeypatch.setenv("MODEMATRIX_CACHE", str(tmp_path / "cache"))
    engine = FakeEngine()
    monkeypatch.setattr(engines, "get", lambda name, reaper=True: engine)
    (run_dir("r-orphan") / "cluster").mkdir()
    RunRecord("r-kept", "single", "containers", load("single").to_dict(), {}).write(run_dir("r-kept"))
    rows = {row["run_id"]: row["state"] for row in runs._runs("fake")}
    assert rows == {"r-kept": "no containers", "r-orphan": "a folder, no record (down it)"}
    assert runs._remove("r-orphan", engine).startswith("swept")
    assert not run_dir("r-kept").parent.joinpath("r-orphan").exists()
    assert [row["run_id"] for row in runs._runs("fake")] == ["r-kept"]


KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://10.9.9.10:6443"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
"""

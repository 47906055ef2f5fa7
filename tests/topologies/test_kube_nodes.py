"""A Kubernetes cluster built here goes through the same Engine seam as the container modes:
against the recording fake, its node containers are launched as the layout says, and a
cluster whose API never answers, or whose nodes all exit, is reported with each node's state
and logs and removed. The real build runs in ``tox -e k8s``."""

from __future__ import annotations

from pathlib import Path

import pytest

from topologies.engines import EXITED, Handle, Launch
from topologies.engines.fake import FakeEngine
from topologies.exceptions import StartTimeout
from topologies.kubernetes.clusters import NodeCluster
from topologies.kubernetes.clusters.layout import CONF


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

"""A service file's members on real containers: a member that exits is named with its last
log lines and nothing of the run is left behind; a size the file does not allow is refused
before anything starts; a member killed is started again on its data, the leader probe
names one member; another process attaches the run from its record."""

from __future__ import annotations

from dataclasses import replace

import pytest

import topologies
from topologies import ServiceRun, engines, service
from topologies.containers.faults import Kill
from topologies.containers.service import start_service
from topologies.exceptions import StartTimeout, UsageError
from topologies.faults import injected


def test_a_member_that_exits_is_named_with_its_last_words_and_nothing_is_left() -> None:
    engine = engines.get("docker", reaper=False)
    broken = replace(service.load("etcd"), command=("sh", "-c", "echo 'no such flag: --nmae' >&2; exit 3"))
    with pytest.raises(StartTimeout) as failed:
        start_service(broken, 1, engine, timeout=20, run_id="r-svcfail1")
    assert "etcd-1" in str(failed.value)
    assert "no such flag: --nmae" in (failed.value.logs or "")
    assert engine.list_run("r-svcfail1") == []


def test_a_size_the_file_does_not_allow_is_refused_before_anything_starts() -> None:
    engine = engines.get("docker", reaper=False)
    with pytest.raises(UsageError, match="runs as 3, 5 members, not 1"):
        start_service(service.load("redis-sentinel"), 1, engine, run_id="r-svcsize1")
    assert engine.list_run("r-svcsize1") == []


def test_three_members_one_leader_and_a_killed_one_back_on_its_data() -> None:
    with start_service(service.load("etcd"), 3, engines.get("docker")) as run:
        leader = run.db_leader().name
        assert leader in {n.name for n in run.nodes}
        with injected(run, Kill(leader)):
            assert not run.node(leader).running
        assert run.node(leader).running  # healed, and ready again (injected waits for it)
        code, out = run.exec(leader, ["sh", "-c", "ls /var/lib/etcd/member"])
        assert code == 0 and "member" in out, out  # its data dir kept: it rejoined, not bootstrapped anew
        again = topologies.attach(run.run_id)  # as `modematrix status|fault|logs RUN` find it
        assert isinstance(again, ServiceRun) and again.endpoints == run.endpoints
        assert again.db_leader().name in {n.name for n in run.nodes}

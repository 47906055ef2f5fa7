"""A service file's members on real containers: a member that exits is named with its last
log lines and nothing of the run is left behind; a size the file does not allow is refused
before anything starts; a member killed is started again on its data, the leader probe
names one member; another process attaches the run from its record."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest

import topologies
from topologies import ServiceRun, engines, service
from topologies.cli import schemas
from topologies.containers.faults import Kill, ReplaceMember
from topologies.containers.service import start_service
from topologies.exceptions import NotFound, StartTimeout, UsageError
from topologies.faults import injected
from topologies.runs import SECRETS_FILE


def test_a_member_that_exits_is_named_with_its_last_words_and_nothing_is_left() -> None:
    engine = engines.get("docker", reaper=False)
    broken = replace(service.load("etcd"), command=("sh", "-c", "echo 'no such flag: --nmae' >&2; exit 3"))
    with pytest.raises(StartTimeout) as failed:
        start_service(broken, 1, engine, timeout=20, run_id="r-svcfail1")
    assert "node etcd-1 (mm-r-svcfail1-etcd-1) not ready and stopped: etcd-1 is exited" in str(failed.value)
    assert "its probe (GET /health over http on port client) said" in str(failed.value)
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
        refused = ReplaceMember(leader).applies_to(run)  # the runtime's procedure, not etcd alone's
        assert refused and "replace-member is the runtime's etcd procedure" in refused, refused
        with injected(run, Kill(leader)):
            assert not run.node(leader).running
        assert run.node(leader).running  # healed, and ready again (injected waits for it)
        code, out = run.exec(leader, ["sh", "-c", "ls /var/lib/etcd/member"])
        assert code == 0 and "member" in out, out  # its data dir kept: it rejoined, not bootstrapped anew
        again = topologies.attach(run.run_id)  # as `modematrix status|fault|logs RUN` find it
        assert isinstance(again, ServiceRun) and again.endpoints == run.endpoints
        assert again.db_leader().name in {n.name for n in run.nodes}
        assert not (run.workdir / SECRETS_FILE).exists()  # the runtime's secrets: etcd has no use for them
        with pytest.raises(NotFound, match="runs etcd, not the runtime"):
            print(again.admin)


def modematrix(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "topologies.cli", *args], capture_output=True, text=True, timeout=300)


def test_up_a_service_from_the_cli_then_status_fault_and_down_as_for_a_mode() -> None:
    done = modematrix("up", "--service", "etcd", "--members", "1", "--json")
    assert done.returncode == 0, done.stderr
    described = json.loads(done.stdout)
    run_id = described["run_id"]
    try:
        assert not schemas.problems("up --service", described)
        assert (described["mode"], described["service"]["service"]) == ("etcd-1", "etcd")
        status = modematrix("status", run_id, "--json")
        assert status.returncode == 0, status.stderr
        assert not schemas.problems("status RUN", json.loads(status.stdout))
        assert modematrix("fault", run_id, "pause", "etcd-1").returncode == 0
        assert modematrix("fault", run_id, "heal").returncode == 0
    finally:
        assert modematrix("down", run_id).returncode == 0


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["up"], "up: which mode?"),
        (["up", "ha", "--service", "etcd"], "a mode or --service FILE, not both"),
        (["up", "ha", "--members", "3"], "--members, --on: only with --service"),
        (["up", "--service", "nope"], "no service 'nope'"),
        (["up", "--service", "redis-sentinel", "--members", "1"], "runs as 3, 5 members, not 1"),
    ],
)
def test_up_with_a_wrong_service_is_one_line_and_exit_2(args: list[str], says: str) -> None:
    done = modematrix(*args)
    assert done.returncode == 2, done
    assert says in done.stderr and done.stderr.strip().count("\n") == 0, done.stderr


def test_pytest_tests_a_service_run_given_with_run_and_leaves_it_running() -> None:
    """``modematrix up --service`` (anywhere: ``--on kubernetes --kubeconfig`` for a cluster
    the user has), then ``pytest scenarios/test_service.py --run RUN``: the service's tests
    against that run, which is left running; with ``--service`` as well it is a usage error."""
    done = modematrix("up", "--service", "etcd", "--members", "1", "--json")
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    try:
        argv = [sys.executable, "-m", "pytest", "-p", "no:randomly", "-q", "scenarios/test_service.py"]
        chosen = ["--run", run_id, "-k", "reads_what or one_member_leads"]
        tested = subprocess.run([*argv, *chosen], capture_output=True, text=True, timeout=300)
        assert tested.returncode == 0 and "2 passed" in tested.stdout, tested.stdout[-2000:]
        assert modematrix("status", run_id).returncode == 0, "left running"
        both = subprocess.run([*argv, "--run", run_id, "--service", "etcd"], capture_output=True, text=True, timeout=60)
        assert both.returncode == 4 and "--run names a service's run" in both.stderr, both.stderr[-500:]
    finally:
        assert modematrix("down", run_id).returncode == 0

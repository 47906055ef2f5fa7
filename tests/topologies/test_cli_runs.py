"""A run started by ``modematrix up`` in one process, reached from others by every verb, as a
user drives it from a shell: status, fault and heal, scale, logs (and ``-f``), exec, down.
Each call is a new process that finds the run from its record alone."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from topologies.cli import schemas

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]


def modematrix(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "topologies.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def json_of(*args: str) -> Any:
    """The verb's --json document, checked against its documented schema (docs/cli.md)."""
    done = modematrix(*args, "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    document = json.loads(done.stdout)
    verb = "status RUN" if args[:1] == ("status",) and len(args) > 1 else args[0]
    assert not schemas.problems(verb, document), schemas.problems(verb, document)
    return document


def states(run_id: str) -> dict[str, str]:
    return {n["name"]: n["state"] for n in json_of("status", run_id)["nodes"]}


@pytest.fixture(scope="module")
def run_id() -> Iterator[str]:
    described = json_of("up", "scaled")
    try:
        yield str(described["run_id"])
    finally:
        modematrix("down", str(described["run_id"]))


def test_up_prints_the_run_as_json_and_status_lists_it(run_id: str) -> None:
    listed = {r["run_id"]: r for r in json_of("status")}
    assert listed[run_id]["mode"] == "scaled" and listed[run_id]["target"] == "containers"
    assert listed[run_id]["state"].startswith("9/9 containers running"), listed[run_id]
    report = json_of("status", run_id)
    assert report["endpoints"] and set(report["envoys"]) == {"envoy-1", "envoy-2"}
    assert all(routes for routes in report["envoys"]["envoy-1"].values()), "every cluster has endpoints"


def test_a_fault_from_one_process_is_healed_from_another(run_id: str) -> None:
    done = json_of("fault", run_id, "kill", "kv-1")
    assert done == {"run_id": run_id, "fault": "kill(kv-1)"}
    assert states(run_id)["kv-1"] == "exited"
    assert json_of("fault", run_id, "heal") == {"run_id": run_id, "healed": True}
    assert set(states(run_id).values()) == {"running"}


def test_a_fault_the_target_does_not_know_or_a_missing_node_is_refused_with_exit_2(run_id: str) -> None:
    unknown = modematrix("fault", run_id, "delete-pod", "kv")
    assert unknown.returncode == 2 and "no fault 'delete-pod' for scaled" in unknown.stderr
    missing = modematrix("fault", run_id, "kill", "kv-9")
    assert missing.returncode == 2 and "kv-9" in missing.stderr
    assert set(states(run_id).values()) == {"running"}, "a refused fault touches nothing"


def test_scale_adds_nodes_that_status_logs_and_exec_then_see(run_id: str) -> None:
    done = json_of("scale", run_id, "kv=3")
    assert "added kv-3" in done["done"]
    assert states(run_id)["kv-3"] == "running"
    logs = modematrix("logs", run_id, "kv-3", "--tail", "20")
    assert logs.returncode == 0 and logs.stdout.strip(), logs.stderr
    whoami = modematrix("exec", run_id, "kv-3", "--", "id", "-u")
    assert (whoami.returncode, whoami.stdout.strip()) == (0, "10001")
    failing = modematrix("exec", run_id, "kv-3", "--", "sh", "-c", "exit 3")
    assert failing.returncode == 3, "exec exits with the command's code"
    parts = modematrix("logs", run_id).stdout.split()
    assert "kv-3" in parts and "envoy-1" in parts
    assert "drained and removed kv-3" in json_of("scale", run_id, "kv=2")["done"]
    assert "kv-3" not in states(run_id)


def test_logs_follow_prints_the_last_lines_then_keeps_following(run_id: str) -> None:
    follower = subprocess.Popen(
        [sys.executable, "-m", "topologies.cli", "logs", run_id, "kv-1", "-f", "--tail", "3"],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ,
    )
    try:
        assert follower.stdout is not None
        readable, _, _ = select.select([follower.stdout], [], [], 60)
        assert readable, "no line within 60 s"
        assert follower.stdout.readline().strip(), "a followed log starts with the node's last lines"
        assert follower.poll() is None, "and keeps following"
    finally:
        follower.kill()
        follower.wait(timeout=30)
        if follower.stdout is not None:
            follower.stdout.close()


def test_pytest_takes_a_running_run_with_dash_dash_run_and_leaves_it_running(run_id: str) -> None:
    """``pytest --run RUN``: the scenarios test the run ``modematrix up`` started (its mode, not
    --mode's) and leave it as they found it; a run that does not exist is a usage error."""
    scenario = os.path.join(os.path.dirname(__file__), "..", "..", "scenarios", "test_functional.py")
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", scenario]
    argv += ["-k", "test_every_service_routes_through_every_front_door"]
    done = subprocess.run([*argv, "--run", run_id], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]
    assert "1 passed" in done.stdout, done.stdout[-2000:]
    assert set(states(run_id).values()) == {"running"}, "the run is left as it was"
    missing = subprocess.run([*argv, "--run", "r-00000000"], capture_output=True, text=True, timeout=600)
    assert missing.returncode == 4 and "--run r-00000000: no run 'r-00000000'" in missing.stderr, missing.stderr


def test_load_image_is_refused_for_a_run_on_containers(run_id: str) -> None:
    done = modematrix("k8s", "load-image", run_id, "modematrix/runtime:latest")
    assert done.returncode == 2 and "is not on a cluster built here" in done.stderr, done.stderr


def test_down_removes_the_run_and_its_record(run_id: str) -> None:
    assert json_of("down", run_id) == {"removed": [run_id]}
    assert run_id not in {r["run_id"] for r in json_of("status")}
    again = modematrix("status", run_id)
    assert again.returncode == 2 and f"no run {run_id!r} on this machine" in again.stderr

"""The locustfiles for real: locust as a subprocess (it monkey-patches on import, so never
in this process), against a cluster each run starts and removes itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.docker


def locust(tmp_path: Path, *args: str, locustfile: str = "single.py") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(ROOT / "loadtests" / locustfile),
            "--headless",
            "-u",
            "4",
            "-r",
            "4",
            "-t",
            "6s",
            *args,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_a_run_starts_its_cluster_meets_its_slos_writes_reports_and_cleans_up(tmp_path: Path) -> None:
    run = locust(tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "no --host: starting the single mode" in run.stderr
    assert "all SLOs met" in run.stderr and "removing the single run started for this load run" in run.stderr
    assert (tmp_path / "results" / "load" / "single.html").exists()
    assert (tmp_path / "results" / "load" / "single_stats.csv").read_text().count("\n") > 2


def test_the_etcd_service_locustfile_starts_its_members_loads_them_over_etcds_api_and_removes_them(
    tmp_path: Path,
) -> None:
    run = locust(tmp_path, "--members", "1", "--only-summary", locustfile="etcd.py")
    assert run.returncode == 0, run.stderr[-3000:]
    for call in ("Put", "Range", "Txn (cas)"):
        assert f"grpc     {call} " in run.stdout + run.stderr, call
    assert " 0(0.00%)" in run.stdout + run.stderr, "no failed call"


def test_the_etcd_locustfile_loads_a_given_run_and_leaves_it_running(tmp_path: Path) -> None:
    from topologies import start_service

    given = start_service("etcd", 1)
    try:
        run = locust(tmp_path, "--run", given.run_id, "--only-summary", locustfile="etcd.py")
        assert run.returncode == 0, run.stderr[-3000:]
        assert " 0(0.00%)" in run.stdout + run.stderr, "no failed call"
        assert "removing" not in run.stderr
        given.wait_healthy(timeout=30)  # still there, still answering
    finally:
        given.stop()


def test_a_run_that_is_not_there_is_one_line_and_exit_2(tmp_path: Path) -> None:
    run = locust(tmp_path, "--run", "r-00000000", locustfile="etcd.py")
    assert run.returncode == 2, run.stderr[-3000:]
    assert "no run 'r-00000000' on this machine" in run.stderr and "Traceback" not in run.stderr


def test_an_impossible_threshold_fails_the_run_and_names_it(tmp_path: Path) -> None:
    run = locust(tmp_path, "--slo-p99-ms", "0.01")
    assert run.returncode == 1
    assert "SLO p99 ms > 0.01: measured" in run.stderr


def test_recovery_is_measured_from_the_fault() -> None:
    code = (
        "from loadtests.timeline import recovery; "
        "print(recovery({10: [9, 1], 11: [0, 10], 12: [10, 0], 13: [10, 0], 14: [10, 0]}, 11.0))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "(1.0, 1.0)"

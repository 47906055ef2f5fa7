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

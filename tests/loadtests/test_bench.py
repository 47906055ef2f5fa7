"""modematrix bench: wrk's report read right, and the command run for real (short rows)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loadtests.bench import GRPC_FLOORS, Measured, parse_wrk
from topologies.cli import schemas

WRK_REPORT = """Running 8s test @ https://127.0.0.1:40001/v1/kv/bench-get
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     9.63ms    3.20ms  48.27ms   82.03%
    Req/Sec     6.63k   412.10     7.21k    78.75%
  Latency Distribution
     50%    8.71ms
     75%   10.62ms
     90%   13.09ms
     99%   19.52ms
  52763 requests in 8.00s, 11.58MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 11
Requests/sec:   6593.41
Transfer/sec:      1.45MB
"""


def test_wrk_report_is_read_with_its_units_and_every_error_counted() -> None:
    assert parse_wrk(WRK_REPORT) == Measured(rps=6593.41, p50_ms=8.71, p99_ms=19.52, errors=16)
    assert parse_wrk(WRK_REPORT.replace("19.52ms", "1.20s")).p99_ms == 1200.0
    assert parse_wrk(WRK_REPORT.replace("8.71ms", "812.00us")).p50_ms == pytest.approx(0.812)


def test_a_report_without_latency_is_an_error_that_shows_it() -> None:
    with pytest.raises(ValueError, match="no latency report"):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused")


@pytest.mark.docker
def test_bench_single_runs_for_real_and_writes_its_table(tmp_path: Path) -> None:
    if subprocess.run(["which", "wrk"], capture_output=True).returncode != 0:
        pytest.skip("wrk is not installed (apt-get install wrk; .ci/run installs it)")
    argv = ["bench", "--mode", "single", "--seconds", "1", "--connections", "8", "--results", str(tmp_path), "--json"]
    done = subprocess.run(
        [sys.executable, "-m", "topologies.cli", *argv],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(next(tmp_path.glob("bench-*.json")).read_text())
    assert json.loads(done.stdout) == rows and not schemas.problems("bench", rows), schemas.problems("bench", rows)
    floors = [f"{name}: Kv {method}" for name in GRPC_FLOORS.values() for method in ("Put", "Get")]
    assert [r["target"] for r in rows] == [
        "bare Starlette JSON (TLS), same stack",
        *floors,  # loadtests/baseline_grpc.py: what grpcio alone serves here, each kind of server
        "kv PUT",
        "kv GET",
        "kv PUT over gRPC",  # loadtests/grpcload, through the node's gRPC port
        "kv GET over gRPC",
    ]
    assert all(r["rps"] > 0 and r["errors"] == 0 for r in rows), rows
    assert "| single | kv GET |" in (tmp_path / "bench.md").read_text()
    memory = json.loads(next(tmp_path.glob("memory-*.json")).read_text())
    assert [(m["part"], m["role"], m["budget_mib"]) for m in memory] == [("node-1", "runtime", 64)], memory
    assert 10 < memory[0]["rss_mib"] < 1024, memory  # a Python process's, in MiB: not bytes, not the cache
    assert "| single | node-1 | runtime |" in (tmp_path / "bench.md").read_text()
    costs = json.loads(next(tmp_path.glob("cpu-*.json")).read_text())
    assert [c["target"] for c in costs] == ["kv GET", "kv PUT", "kv PUT over gRPC", "kv GET over gRPC"], costs
    assert all(c["cores_us"] > 0 and c["parts_us"]["node-1"] > 0 for c in costs), costs
    assert "| single | kv GET |" in (tmp_path / "bench.md").read_text().split("server cores µs/req")[1]


def test_bench_of_a_run_that_does_not_exist_is_refused_before_anything_starts() -> None:
    from topologies.cli import main

    assert main(["bench", "--run", "r-00000000", "--seconds", "1"]) == 2


def test_bench_start_times_up_to_ready_and_refuses_what_it_cannot_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from topologies.cli import main

    assert main(["bench", "--start", "--run", "r-00000000"]) == 2
    assert main(["bench", "--start", "--repeat", "0"]) == 2
    assert "--repeat from 1 to 20" in capsys.readouterr().err
    assert main(["bench", "--start", "--mode", "single", "--results", str(tmp_path), "--json"]) == 0
    starts = json.loads(capsys.readouterr().out)
    assert not schemas.problems("bench --start", starts), schemas.problems("bench --start", starts)
    assert [s["mode"] for s in starts] == ["single"] and starts[0]["seconds"] > 0
    assert json.loads(next(tmp_path.glob("start-*.json")).read_text()) == starts


def test_idle_memory_without_figures_says_why_and_leaves_the_load_rows_alone(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from loadtests.bench import idle_memory
    from topologies.exceptions import FaultError
    from topologies.run import Footprint

    class Denied:
        mode = "k8s"

        def memory(self) -> list[Footprint]:
            raise FaultError("the kubelet of w1 gave no memory figures: nodes/proxy is forbidden")

    class Measured:
        mode = "ha"

        def memory(self) -> list[Footprint]:
            return [Footprint("node-1", "runtime + etcd member", 100 << 20), Footprint("lb", "haproxy", 11 << 20)]

    assert idle_memory(Denied()) == []  # type: ignore[arg-type]
    assert "no idle memory figures for k8s: the kubelet of w1" in capsys.readouterr().err
    rows = idle_memory(Measured())  # type: ignore[arg-type]
    assert [(r.part, r.rss_mib, r.budget_mib, r.within) for r in rows] == [
        ("node-1", 100.0, 96, False),
        ("lb", 11.0, None, None),
    ]


def test_a_row_of_a_run_of_containers_costs_each_part_its_cpu_per_request(tmp_path: Path) -> None:
    """The meter reads each container's CPU time before and after a row: the difference over
    the row's requests is what a request cost that part; the server cores too, when pinned."""
    from loadtests.bench import Meter
    from topologies import ContainerRun
    from topologies.containers.node import Node
    from topologies.engines import Launch
    from topologies.engines.fake import FakeEngine
    from topologies.spec import ModeSpec, NodeSpec

    engine = FakeEngine()
    nodes = []
    for name in ("envoy-1", "kv-1"):
        handle = engine.launch(Launch(f"mm-r-{name}", "img", {"modematrix.run": "r"}))
        nodes.append(Node(NodeSpec(name, ("kv",)), "10.0.0.2", 1, handle, engine))
    run = ContainerRun("r", ModeSpec("scaled", "", "etcd", tuple(n.spec for n in nodes)), image="img",
                       engine=engine, workdir=tmp_path, nodes=nodes)  # fmt: skip
    engine.cpu = {"mm-r-envoy-1": 10.0, "mm-r-kv-1": 20.0}

    def load() -> Measured:  # 2 s of 500 requests/s: 1,000 requests
        engine.cpu = {"mm-r-envoy-1": 10.2, "mm-r-kv-1": 20.5}
        return Measured(500.0, 1.0, 2.0, 0)

    meter = Meter(run, "0", seconds=2.0)
    assert meter("kv PUT", load) == Measured(500.0, 1.0, 2.0, 0)
    (cost,) = meter.named({"kv PUT": "kv PUT through Envoy"})
    assert (cost.target, cost.requests) == ("kv PUT through Envoy", 1000)
    assert cost.parts_us == {"envoy-1": 200.0, "kv-1": 500.0}
    assert cost.cores_us is not None and cost.cores_us >= 0  # this host's core 0, whatever else ran on it
    unpinned = Meter(run, None, seconds=2.0)
    unpinned("kv GET", load)  # the same figures again: nothing used
    assert unpinned.costs[0].cores_us is None and unpinned.costs[0].parts_us == {"envoy-1": 0.0, "kv-1": 0.0}

"""A full disk, single mode: the node's data dir (a 32 MiB file system of its own) filled to
the last byte while clients write, twice. Writes are refused with 507 while reads go on;
nothing acknowledged is lost; the node writes again once the ballast is gone, without a
restart. The catalogue's ``full-disk`` scenario, on a run of its own (a sized data dir is
memory: the crash tests keep the ordinary run, whose data dir is on the host's disk).

    pytest scenarios/test_full_disk.py --mode single
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import topologies
from scenarios import runner
from scenarios.catalogue import by_name
from scenarios.history import OK
from scenarios.runner import Result
from topologies import ContainerRun, faults
from topologies.containers.faults import DiskFull, Kill
from topologies.exceptions import FaultError, UsageError

pytestmark = pytest.mark.single
DATA_SIZE = 32 << 20


@pytest.fixture(scope="module")
def sized(request: pytest.FixtureRequest) -> Iterator[ContainerRun]:
    if "single" not in request.config.getoption("--mode").split(","):
        pytest.skip("runs with --mode single")
    with topologies.start("single", data_size=DATA_SIZE) as run:
        assert isinstance(run, ContainerRun)
        yield run


def test_a_full_disk_refuses_writes_with_507_loses_nothing_and_recovers(
    sized: ContainerRun, failover_results: list[Result]
) -> None:
    result = runner.run(sized, by_name("full-disk"))
    assert result.skipped is None, result.skipped
    failover_results.append(result)
    failing = [f"{v.check}: {v.result} ({v.detail})" for v in result.verdicts if not v.passed]
    assert not result.traffic_errors, result.traffic_errors
    assert not failing, "; ".join(failing)
    history = result.history
    assert history is not None
    applied = [t for t, e in history.events if e.startswith("apply ")]
    windows = list(zip(applied, [t for t, e in history.events if e.startswith("heal ")], strict=True))
    assert len(windows) == 2, history.events
    refused = 0
    for start, healed in windows:
        during = [op for op in history.ops if start < op.call and op.ret < healed]
        refused += sum(op.result.get("status") == 507 for op in during)
        assert any(op.kind == "read" and op.outcome == OK for op in during), "no read answered on a full disk"
    # SQLite writes on as long as its WAL file has room it allocated before (a checkpoint that
    # cannot grow the DB file fails quietly, and the WAL keeps every acknowledged write): the
    # first fill, of a fresh WAL, refuses writes at once; a later one may not within 4 s
    assert refused, "no write of the traffic was refused with 507 while the disk was full"


def test_a_sized_data_dir_outlives_its_nodes_kill_and_restart(sized: ContainerRun) -> None:
    """Docker's local driver empties a tmpfs volume when the last container using it stops;
    the run's holder container keeps it mounted, so what the node acknowledged is still there
    after kill -9 and a start."""
    with sized.client() as api:
        assert api.put("/v1/kv/kept-over-restart", content=b"acknowledged").status_code == 200
    with faults.injected(sized, Kill(sized.nodes[0].name)):
        pass
    with sized.client() as api:
        read = api.get("/v1/kv/kept-over-restart")
        assert (read.status_code, read.content) == (200, b"acknowledged")


def test_the_fault_refuses_a_node_whose_data_dir_is_the_hosts_disk(run: ContainerRun) -> None:
    """The ordinary run's data dir is a volume on the host's disk: filling it would fill that."""
    with pytest.raises(FaultError, match="--data-size"), faults.injected(run, DiskFull(run.nodes[0].name)):
        pass


def test_a_data_size_too_small_for_a_node_is_refused_before_anything_starts() -> None:
    with pytest.raises(UsageError, match="--data-size: expected 16 MiB"):
        topologies.start("single", data_size=1 << 20)

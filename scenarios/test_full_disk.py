"""A full disk: a node's data dir (a file system of its own) filled to the last byte while
clients write, twice; nothing acknowledged is lost, and the node recovers once the ballast is
gone, without a restart of its container.

- single (SQLite, 32 MiB): writes are refused with 507 while reads go on.
- ha (etcd, 256 MiB: a member preallocates 2 x 64 MB of WAL): the filled node's etcd member
  stops (etcd's fail-stop on a failed commit), the other two keep the quorum so writes go on
  everywhere, the runtime starts the member again until there is room, and it catches up.

The catalogue's ``full-disk`` scenario, on a run of its own (a sized data dir is memory: the
crash tests keep the ordinary run, whose data dir is on the host's disk).

    pytest scenarios/test_full_disk.py --mode single,ha
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
from topologies.pytest_plugin import selected_modes

pytestmark = [pytest.mark.single, pytest.mark.ha]
DATA_SIZE = {"single": 32 << 20, "ha": 256 << 20}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "sized_mode" in metafunc.fixturenames:
        chosen = [m for m in selected_modes(metafunc.config) if m in DATA_SIZE]
        metafunc.parametrize("sized_mode", chosen, scope="module")


@pytest.fixture(scope="module")
def sized(sized_mode: str) -> Iterator[ContainerRun]:
    with topologies.start(sized_mode, data_size=DATA_SIZE[sized_mode]) as run:
        assert isinstance(run, ContainerRun)
        yield run


def test_a_full_disk_loses_nothing_and_the_node_recovers(sized: ContainerRun, failover_results: list[Result]) -> None:
    result = runner.run(sized, by_name("full-disk"))
    assert result.skipped is None, result.skipped
    failover_results.append(result)
    assert not result.traffic_errors, result.traffic_errors
    assert not result.failing, "; ".join(result.failing)
    assert result.history is not None
    windows = result.history.fault_windows()
    assert len(windows) == 2, result.history.events
    refused = 0
    for during in windows:
        refused += sum(op.result.get("status") == 507 for op in during)
        assert any(op.kind == "read" and op.outcome == OK for op in during), "no read answered on a full disk"
        if sized.mode == "ha":  # two members of three keep the quorum
            assert any(op.kind == "write" and op.outcome == OK for op in during), "no write acknowledged"
    if sized.mode == "ha":  # the filled member did stop, and was started again
        events = result.history.events
        filled = {e.split("(", 1)[1].rstrip(")") for _, e in events if e.startswith("apply disk-full(")}
        for name in filled:
            assert "the DB member exited; starting it again" in sized.node(name).logs(tail=2000), name
    if sized.mode == "single":
        # SQLite writes on as long as its WAL file has room it allocated before (a checkpoint
        # that cannot grow the DB file fails quietly, and the WAL keeps every acknowledged
        # write): the first fill, of a fresh WAL, refuses writes at once; a later one may not
        assert refused, "no write of the traffic was refused with 507 while the disk was full"


def test_a_sized_data_dir_outlives_its_nodes_kill_and_restart(sized: ContainerRun) -> None:
    """Docker's local driver empties a tmpfs volume when the last container using it stops;
    the run's holder container keeps it mounted, so what the node acknowledged is still there
    after kill -9 and a start."""
    assert sized.status()["data_size"] == DATA_SIZE[sized.mode]  # what `modematrix status RUN` shows
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

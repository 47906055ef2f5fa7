"""Durability below the DB: each node's data dir on lazyfs (images/lazyfs), which loses every
write no fsync covered when the node is killed, as a power cut does, and which can fail or slow
the node's I/O.

- The layer bites: a file written in the node without fsync is empty after a kill.
- single's kill -9 crash loop and an etcd member's crash: 0 acknowledged writes lost (SQLite's
  group commit and etcd sync before they acknowledge).
- The catalogue's ``power-cut``, ``io-errors`` and ``slow-io`` scenarios, with every check.

On a run of its own, with ``--lazy-fs`` (a FUSE mount in each node: /dev/fuse and
CAP_SYS_ADMIN, the binary built here with Go):

    pytest scenarios/test_lazy_fs.py --mode single,ha
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import topologies
from scenarios import runner
from scenarios.catalogue import by_name
from scenarios.history import OK
from scenarios.runner import Result
from scenarios.test_crash_loop import crash_loop
from topologies import ContainerRun, faults
from topologies.constants import DATA_DIR
from topologies.containers.faults import BadIo, Kill
from topologies.exceptions import FaultError
from topologies.pytest_plugin import selected_modes

pytestmark = [pytest.mark.single, pytest.mark.ha]
LAZY_MODES = ("single", "ha")
CRASHES = 5


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "lazy_mode" in metafunc.fixturenames:
        chosen = [m for m in selected_modes(metafunc.config) if m in LAZY_MODES]
        metafunc.parametrize("lazy_mode", chosen, scope="module")


@pytest.fixture(scope="module")
def lazy(lazy_mode: str) -> Iterator[ContainerRun]:
    with topologies.start(lazy_mode, lazy_fs=True) as run:
        assert isinstance(run, ContainerRun)
        yield run


PROBE = f"{DATA_DIR}/unsynced-probe"


def test_a_kill_loses_what_was_not_fsynced(lazy: ContainerRun) -> None:
    """Written in the node with and without fsync, then the node killed: only the synced
    bytes are there when it is back. (Without lazyfs both would be: the host's page cache
    outlives a container.)"""
    assert lazy.status()["lazy_fs"] is True  # what `modematrix status RUN` shows
    node = lazy.nodes[0]
    write = (
        "import os; f = os.open({path!r}, os.O_WRONLY | os.O_CREAT, 0o600); os.write(f, b'synced'); os.fsync(f); "
        "os.write(f, b' and not'); os.close(f)"
    )
    code, out = node.exec(["/opt/venv/bin/python", "-c", write.format(path=PROBE)])
    assert code == 0, out
    assert node.exec(["cat", PROBE]) == (0, "synced and not")
    with faults.injected(lazy, Kill(node.name)):
        pass
    assert node.exec(["cat", PROBE]) == (0, "synced")
    assert "lazyfs: undid" in node.logs(tail=200)


@pytest.mark.timeout(600)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning", "ignore::ResourceWarning")
def test_no_acknowledged_write_is_lost_to_power_cuts(lazy: ContainerRun) -> None:
    lost = crash_loop(lazy, CRASHES)
    assert not lost, lost[:10]


@pytest.mark.parametrize("scenario", ["power-cut", "io-errors", "slow-io"])
def test_lazy_scenarios_keep_every_promise(lazy: ContainerRun, scenario: str, failover_results: list[Result]) -> None:
    result = runner.run(lazy, by_name(scenario))
    assert result.skipped is None, result.skipped
    failover_results.append(result)
    assert not result.traffic_errors, result.traffic_errors
    assert not result.failing, "; ".join(result.failing)
    assert result.history is not None
    if scenario == "io-errors":
        for during in result.history.fault_windows():
            assert any(op.kind == "read" and op.outcome == OK for op in during), "no read answered while I/O failed"
            if lazy.mode == "ha":  # two members of three keep the quorum
                assert any(op.kind == "write" and op.outcome == OK for op in during), "no write acknowledged"


def test_io_faults_need_a_run_on_lazyfs(run: ContainerRun) -> None:
    with pytest.raises(FaultError, match="--lazy-fs"), faults.injected(run, BadIo(run.nodes[0].name)):
        pass

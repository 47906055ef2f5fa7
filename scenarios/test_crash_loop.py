"""Crash loop, single mode: kill -9 the one node while clients write, start it again, and
check that every write it acknowledged is still there, cycle after cycle.

    pytest scenarios/test_crash_loop.py --mode single                      # 10 cycles (CI)
    MODEMATRIX_CRASH_CYCLES=100 pytest scenarios/test_crash_loop.py --mode single

SQLite commits (group commit, fsync) before a write is acknowledged, on a volume that
outlives the container; a write in flight at the kill may or may not have landed, and is
not counted either way.
"""

from __future__ import annotations

import os
import threading
import time

import httpx
import pytest

from topologies import ContainerRun, faults
from topologies.containers.faults import Kill
from topologies.wait import wait_until

pytestmark = pytest.mark.single
CYCLES = int(os.environ.get("MODEMATRIX_CRASH_CYCLES", "10"))
WRITERS = 4
WRITES_PER_CYCLE = 100  # acknowledged before each kill; the writers keep going until it lands


def _writer(run: ContainerRun, name: str, stop: threading.Event, acked: dict[str, bytes]) -> None:
    while not stop.is_set():
        try:
            _write(run, name, stop, acked)
            return
        except httpx.HTTPError:  # the kill landed while this writer was still logging in
            stop.wait(0.05)


def _write(run: ContainerRun, name: str, stop: threading.Event, acked: dict[str, bytes]) -> None:
    with run.client(timeout=5, budget=0) as api:  # no resends: an acknowledgement is this call's own
        i = 0
        while not stop.is_set():
            i += 1
            key, value = f"crash-{name}-{i}", f"{name}:{i}:{time.time_ns()}".encode()
            try:
                reply = api.put(f"/v1/kv/{key}", content=value)
            except httpx.HTTPError:
                continue  # in flight at the kill: unknown, not counted
            if reply.status_code == 200:
                acked[key] = value


def _missing(run: ContainerRun, expected: dict[str, bytes], when: str) -> list[str]:
    """Every key of ``expected`` read back with its value, or a line saying what came back."""
    lost = []
    with run.client(timeout=10) as api:
        for key, value in expected.items():
            reply = api.get(f"/v1/kv/{key}")
            if reply.status_code != 200 or reply.content != value:
                lost.append(f"{when}: {key} -> {reply.status_code} {reply.content[:40]!r}")
    return lost


def crash_loop(run: ContainerRun, cycles: int) -> list[str]:
    """``cycles`` kills of the run's first node while clients write, each followed by a read of
    every write acknowledged so far; what was lost, one line each (also on lazyfs:
    scenarios/test_lazy_fs.py)."""
    node = run.nodes[0]
    acked: dict[str, bytes] = {}
    lost: list[str] = []
    for cycle in range(cycles):
        stop = threading.Event()
        writers = [
            threading.Thread(target=_writer, args=(run, f"c{cycle}w{w}", stop, acked), daemon=True)
            for w in range(WRITERS)
        ]
        earlier = set(acked)
        for thread in writers:
            thread.start()

        def enough(before: int = len(earlier)) -> bool:
            return len(acked) >= before + WRITES_PER_CYCLE

        wait_until(
            enough,
            timeout=60,
            interval=0.02,
            message=f"{WRITES_PER_CYCLE} writes acknowledged before the kill",
        )
        with faults.injected(run, Kill(node.name)):
            stop.set()
            for thread in writers:
                thread.join(10)
        now = dict(acked)
        lost += _missing(run, {k: v for k, v in now.items() if k not in earlier}, f"cycle {cycle}")
    lost += _missing(run, dict(acked), "at the end")  # earlier cycles' writes, after every later crash
    print(f"\n{run.mode}: {cycles} kill -9 cycles, {len(acked)} acknowledged writes, {len(lost)} lost")
    return lost


@pytest.mark.timeout(120 + 10 * CYCLES)  # about 3 s a cycle here
# a connection cut by the kill is dropped by httpx's pool unclosed; its ResourceWarning is the
# kill's doing, not a leak of the test's (100 cycles made pytest turn them into an error)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning", "ignore::ResourceWarning")
def test_every_acknowledged_write_survives_kill_9(run: ContainerRun) -> None:
    lost = crash_loop(run, CYCLES)
    assert not lost, lost[:10]

"""``children.supervise``: a child that exits is started again, with a growing pause, and
the one running when the supervisor is cancelled is stopped. Real processes."""

from __future__ import annotations

import asyncio
import sys

import pytest

from runtime import children

pytestmark = pytest.mark.anyio


async def test_an_exited_child_is_started_again_and_the_last_one_stopped_on_cancel() -> None:
    started: list[asyncio.subprocess.Process] = []

    async def start() -> asyncio.subprocess.Process:
        # the first two die at once (exit 3), as etcd does on a full disk; the third stays
        code = "import sys, time; sys.exit(3)" if len(started) < 2 else "import time; time.sleep(60)"
        process = await asyncio.create_subprocess_exec(sys.executable, "-c", code)
        started.append(process)
        return process

    keeper = asyncio.ensure_future(children.supervise("child", start, pause=0.05, longest_pause=0.1))
    async with asyncio.timeout(20):
        while len(started) < 3:
            await asyncio.sleep(0.02)
    assert [p.returncode for p in started[:2]] == [3, 3]
    assert started[2].returncode is None
    keeper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await keeper
    assert started[2].returncode is not None, "the running child outlived its supervisor"
    assert len(started) == 3


async def test_a_child_already_started_is_supervised_and_stopped() -> None:
    first = await asyncio.create_subprocess_exec(sys.executable, "-c", "import time; time.sleep(60)")

    async def start() -> asyncio.subprocess.Process:
        raise AssertionError("the first child never exited; nothing should start another")

    keeper = asyncio.ensure_future(children.supervise("child", start, first))
    await asyncio.sleep(0)  # the supervisor is waiting on the child
    keeper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await keeper
    assert first.returncode is not None


async def test_a_child_that_cannot_start_is_tried_again() -> None:
    tries: list[int] = []

    async def start() -> asyncio.subprocess.Process:
        tries.append(1)
        if len(tries) < 3:
            raise FileNotFoundError("no such binary (yet)")
        return await asyncio.create_subprocess_exec(sys.executable, "-c", "import time; time.sleep(60)")

    keeper = asyncio.ensure_future(children.supervise("child", start, pause=0.01, longest_pause=0.02))
    async with asyncio.timeout(20):
        while len(tries) < 3:
            await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)
    assert len(tries) == 3, "a child that started was started again"
    keeper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await keeper

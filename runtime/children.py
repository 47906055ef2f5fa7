"""The processes a node starts (an etcd member, Envoy): what they inherit, a scrubbed
environment, and how they are kept running (:func:`supervise`).

The runtime's own environment may hold settings a child has no use for, secrets among them
(``RUNTIME_CLUSTER_SECRET``, ``RUNTIME_ADMIN_PASSWORD``, ``RUNTIME_TLS_BUNDLE`` when a user
sets them directly): a child gets only what every program needs.

>>> environment({"PATH": "/bin", "RUNTIME_CLUSTER_SECRET": "s3cret", "HOME": "/h", "ETCD_X": "1"})
{'PATH': '/bin', 'HOME': '/h'}
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping

log = logging.getLogger("runtime.children")

KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "TZ")


def environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    source = os.environ if base is None else base
    return {name: source[name] for name in KEEP if name in source}


async def stop(process: asyncio.subprocess.Process, timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; returns once it has exited."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        await asyncio.wait_for(process.wait(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


async def supervise(
    name: str,
    start: Callable[[], Awaitable[asyncio.subprocess.Process]],
    first: asyncio.subprocess.Process | None = None,
    *,
    pause: float = 0.5,
    longest_pause: float = 5.0,
    settled_after: float = 30.0,
) -> None:
    """Keep a child running until cancelled: started again whenever it exits, after a pause
    that doubles up to ``longest_pause`` and starts over once a child has lived
    ``settled_after`` seconds. On cancel the child is stopped (:func:`stop`). ``first`` is a
    child already started (the DB member starts before the node opens)."""
    process, wait = first, pause
    while True:
        if process is None:
            try:
                process = await start()
            except OSError as exc:  # the binary gone, no memory for a fork: try again later
                log.error("%s could not start", name, extra={"fields": {"error": str(exc), "in_s": wait}})
                await asyncio.sleep(wait)
                wait = min(longest_pause, wait * 2)
                continue
            log.info("%s started", name, extra={"fields": {"pid": process.pid}})
        began = time.monotonic()
        try:
            code = await process.wait()
        except asyncio.CancelledError:
            await stop(process)
            raise
        if time.monotonic() - began >= settled_after:
            wait = pause
        log.error("%s exited; starting it again", name, extra={"fields": {"exit_code": code, "in_s": wait}})
        process = None
        await asyncio.sleep(wait)
        wait = min(longest_pause, wait * 2)

"""A steady, bounded load through a mode's front door that counts every outcome: what
scaling scenarios run while they add and drain nodes or pods, and then require 0 failures.

    with Load(run) as load:
        ...scale...
    assert load.failed == 0, load.failures[:10]
"""

from __future__ import annotations

import functools
import threading
import time
from collections import Counter
from collections.abc import Callable

import httpx

from topologies import Run

LOAD_SECONDS_MAX = 120  # the load stops by itself even if a test fails to stop it


class Load:
    """A bounded writer and reader through the front door, counting every outcome."""

    def __init__(self, run: Run) -> None:
        self.run, self.outcomes = run, Counter[str]()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + LOAD_SECONDS_MAX
        with self.run.client(timeout=10) as api:
            i = 0
            while not self._stop.is_set() and time.monotonic() < deadline:
                i += 1
                key = f"/v1/kv/scale-{i % 50}"
                self._one("PUT", functools.partial(api.put, key, content=b"v"))
                self._one("GET", functools.partial(api.get, key))

    def _one(self, method: str, call: Callable[[], httpx.Response]) -> None:
        try:
            status = call().status_code
        except httpx.HTTPError as exc:
            status = 0
            self.failures.append(f"{method}: {exc!r}")
        ok = 200 <= status < 300 or (method == "GET" and status == 404)
        self.outcomes["ok" if ok else f"{method} {status}"] += 1
        if not ok and status:
            self.failures.append(f"{method} answered {status}")

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)

    @property
    def failed(self) -> int:
        return sum(n for outcome, n in self.outcomes.items() if outcome != "ok")

"""Concurrent clients that record a history: register reads, writes, CAS and deletes on a
bounded set of keys, through a workload (:mod:`scenarios.workload`: the runtime's HTTP or
gRPC API), and queue enqueue / claim / ack. Bounded in ops and in time; stops by itself.

Every written value is unique (``<client>-<n>``), so a read names the write it saw.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx

from scenarios.checkers.queue import unaccounted
from scenarios.history import FAIL, OK, UNKNOWN, WRITE_KINDS, History, Op
from scenarios.workload import Invocation, Register, classify, workload
from topologies import ClusterClient, Run


@dataclass(frozen=True)
class Traffic:
    kv_clients: int = 4
    queue_clients: int = 2
    keys: int = 12
    timeout: float = 6.0  # a little over the runtime's own DB timeout (5 s)
    think_s: float = 0.02  # pause between one client's ops: bounds the rate
    lease_s: float = 2.0
    max_ops_per_client: int = 20_000
    max_seconds: float = 900.0
    workload: str = "http"  # the register's clients (scenarios.workload.WORKLOADS)


class TrafficRun:
    def __init__(self, run: Run, traffic: Traffic, history: History, tag: str, seed: int = 0) -> None:
        self.run, self.traffic, self.history, self.tag, self.seed = run, traffic, history, tag, seed
        self.workload = workload(traffic.workload)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.errors: list[str] = []

    def keys(self) -> list[str]:
        return [f"{self.tag}-k{i}" for i in range(self.traffic.keys)]

    @property
    def queue(self) -> str:
        return f"{self.tag}-q"

    def start(self) -> None:
        workers = [(f"kv{i}", self._kv_worker) for i in range(self.traffic.kv_clients)]
        if self.workload.queue:
            workers += [(f"q{i}", self._queue_worker) for i in range(self.traffic.queue_clients)]
        for index, (name, target) in enumerate(workers):
            thread = threading.Thread(target=self._guard, args=(name, partial(target, name, index)), name=name)
            thread.daemon = True
            self._threads.append(thread)
            thread.start()

    def run_for(self, seconds: float) -> None:
        """Let traffic flow for ``seconds`` (the traffic window, not a wait for a condition)."""
        self._stop.wait(seconds)

    def run_until_write_after(self, since: float, timeout: float) -> bool:
        """Let traffic flow until some write that started after ``since`` succeeded, at most
        ``timeout`` s: after a heal, clients blocked on a call from before it need that long to
        come back. False if none did (the availability check then says so)."""
        return self.run_until(
            lambda: any(op.outcome == OK and op.kind in WRITE_KINDS and op.call >= since for op in self.history.ops),
            timeout,
            interval=0.1,
        )

    def run_until(self, condition: Callable[[], bool], timeout: float, interval: float = 0.5) -> bool:
        """Let traffic flow until ``condition()`` holds (asked every ``interval`` s), at most
        ``timeout`` s; whether it came to hold."""
        deadline = time.monotonic() + timeout
        while not self._stop.is_set() and time.monotonic() < deadline:
            if condition():
                return True
            self._stop.wait(interval)
        return False

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.traffic.timeout * 3)

    def _guard(self, name: str, client: Callable[[], None]) -> None:
        try:
            client()
        except Exception as exc:  # recorded, and reported by the scenario
            self.errors.append(f"{name}: {type(exc).__name__}: {exc}")

    def _running(self, started: float, count: int) -> bool:
        return (
            not self._stop.is_set()
            and count < self.traffic.max_ops_per_client
            and time.monotonic() - started < self.traffic.max_seconds
        )

    def record(
        self,
        client: str,
        kind: str,
        key: str,
        args: dict[str, Any],
        call: Callable[[], httpx.Response],
        parse: Callable[[httpx.Response], dict[str, Any]],
    ) -> Op:
        """One HTTP call of the runtime's queue, timed and recorded."""
        began = time.monotonic()
        done = classify(kind, call, parse)
        op = Op(client, kind, key, began, time.monotonic(), done.outcome, args, done.result)
        self.history.add(op)
        return op

    def invoke(self, client: str, register: Register, invocation: Invocation) -> Op:
        """One register operation through the workload, timed and recorded."""
        began = time.monotonic()
        done = register.invoke(invocation)
        op = Op(
            client, invocation.kind, invocation.key, began, time.monotonic(), done.outcome, invocation.args, done.result
        )
        self.history.add(op)
        return op

    def _kv_worker(self, name: str, index: int) -> None:
        """Clients start on different endpoints, as real HA clients would."""
        rng = random.Random(f"{self.seed}-{name}")
        revisions: dict[str, int] = {}
        started, count = time.monotonic(), 0
        with self.workload.client(self.run, index=index, timeout=self.traffic.timeout) as register:
            while self._running(started, count):
                count += 1
                key = rng.choice(self.keys())
                invocation = _kv_invocation(rng.random(), key, f"{name}-{count}", revisions.get(key, 0))
                op = self.invoke(name, register, invocation)
                if op.outcome == OK and "revision" in op.result:
                    revisions[key] = op.result["revision"]
                elif op.kind == "delete" and op.outcome == OK:
                    revisions[key] = 0
                self._stop.wait(self.traffic.think_s)

    def _queue_worker(self, name: str, index: int) -> None:
        with self.run.client(timeout=self.traffic.timeout, first=index, resend_idempotent=False) as api:
            self._queue_ops(name, api)

    def _queue_ops(self, name: str, api: ClusterClient) -> None:
        started, count = time.monotonic(), 0
        base = f"/v1/queue/{self.queue}"
        while self._running(started, count):
            count += 1
            self.record(
                name,
                "enqueue",
                self.queue,
                {"payload": f"{name}-{count}"},
                partial(api.post, f"{base}/jobs", json=f"{name}-{count}"),
                lambda r: {"id": r.json()["id"]},
            )
            claim = self.record(
                name,
                "claim",
                self.queue,
                {"lease": self.traffic.lease_s},
                lambda: api.post(f"{base}/claim", params={"lease": self.traffic.lease_s}),
                lambda r: r.json() if r.status_code == 200 else {},
            )
            job = claim.result.get("id")
            if claim.outcome == OK and job:
                lease = claim.result["lease_id"]
                self.record(
                    name,
                    "ack",
                    self.queue,
                    {"id": job},
                    partial(api.post, f"{base}/jobs/{job}/ack", json={"lease_id": lease}),
                    lambda _: {},
                )
            self._stop.wait(self.traffic.think_s)

    # -- after healing ----------------------------------------------------------------------

    def final_reads(self, timeout: float = 60.0) -> None:
        """Each key read once more after the faults, through the workload, until answered."""
        with self.workload.client(self.run, index=0, timeout=self.traffic.timeout) as register:
            for key in self.keys():
                read = Invocation("final-read", key)
                self._until_answered(partial(self.invoke, "final", register, read), timeout)

    def drain(self, api: ClusterClient, timeout: float = 60.0, max_jobs: int = 100_000, rounds: int = 4) -> None:
        """Claim and ack everything left. Leases still held by traffic expire first. Then, after
        each pass, look up by id every job the history cannot account for: one still under a
        lease (a claim whose outcome was unknown can reach its node late, after the client
        gave up, and take a lease from then) is waited for and drained in the next pass."""
        lease = 5.0
        # Traffic has stopped (its stop event is set), so wait for the clock itself: a lease
        # taken by traffic, or by an uncertain claim, hides its job until it ends.
        time.sleep(self.traffic.lease_s + 0.5)
        for _ in range(rounds):
            uncertain = self._drain_round(api, timeout, max_jobs, lease)
            if not uncertain and not self._held(api, timeout):
                return
            time.sleep(max(lease, self.traffic.lease_s) + 0.5)

    def _held(self, api: ClusterClient, timeout: float, most: int = 50) -> bool:
        """Look up the unaccounted jobs (``final-state`` ops); True if one is under a lease, or
        ready (its lease ended since the pass, or the pass ended early): another pass takes it."""
        held = False
        for job in unaccounted(self.history.ops)[:most]:
            attempts = self._until_answered(
                partial(
                    self.record,
                    "drain",
                    "final-state",
                    self.queue,
                    {"id": job},
                    partial(api.get, f"/v1/queue/{self.queue}/jobs/{job}"),
                    lambda r: {"state": r.json()["state"], "attempts": r.json()["attempts"]},
                ),
                timeout,
                until_ok=True,
            )
            held = held or attempts[-1].result.get("state") in ("claimed", "ready")
        return held

    def _drain_round(self, api: ClusterClient, timeout: float, max_jobs: int, lease: float) -> bool:
        """One pass until the queue answers empty; True if some claim's outcome was unknown."""
        base = f"/v1/queue/{self.queue}"
        uncertain = False
        for _ in range(max_jobs):
            attempts = self._until_answered(
                lambda: self.record(
                    "drain",
                    "final-claim",
                    self.queue,
                    {"lease": lease},
                    lambda: api.post(f"{base}/claim", params={"lease": lease}),
                    lambda r: r.json() if r.status_code == 200 else {},
                ),
                timeout,
                until_ok=True,  # a 503 not_applied right after healing (no healthy upstream yet)
            )
            uncertain = uncertain or any(a.outcome == UNKNOWN for a in attempts)
            claim = attempts[-1]
            job = claim.result.get("id")
            if claim.outcome != OK or not job:
                return uncertain
            lease_id = claim.result["lease_id"]
            self._until_answered(
                partial(
                    self.record,
                    "drain",
                    "final-ack",
                    self.queue,
                    {"id": job},
                    partial(api.post, f"{base}/jobs/{job}/ack", json={"lease_id": lease_id}),
                    lambda _: {},
                ),
                timeout,
            )
        return uncertain

    def _until_answered(self, attempt: Callable[[], Op], timeout: float, *, until_ok: bool = False) -> list[Op]:
        """Repeat ``attempt`` until its outcome is known (``until_ok``: until it succeeds, for a
        claim or a lookup that a front door refused while its upstreams came back); every
        attempt, the last one last."""
        deadline = time.monotonic() + timeout
        attempts = [attempt()]
        while attempts[-1].outcome in ((UNKNOWN, FAIL) if until_ok else (UNKNOWN,)) and time.monotonic() < deadline:
            time.sleep(0.2)  # back off between retries of a call whose outcome was unknown
            attempts.append(attempt())
        return attempts


def _kv_invocation(dice: float, key: str, value: str, known: int) -> Invocation:
    """40 % reads, 30 % writes, 20 % compare-and-set against the last revision this client
    saw (0: only if absent), 10 % deletes."""
    if dice < 0.4:
        return Invocation("read", key)
    if dice < 0.7:
        return Invocation("write", key, {"value": value})
    if dice < 0.9:
        return Invocation("cas", key, {"value": value, "expected": known})
    return Invocation("delete", key)

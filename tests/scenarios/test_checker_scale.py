"""The kv linearizability checker at scale and under generated histories.

Valid histories are made by simulating registers: each op takes effect at one instant inside
[call, return], so the history is linearizable by construction; some writes are recorded as
unknown (applied or not). Anomalies are then injected: a read of a value never written, a
read of a value overwritten before the read began, or a write acknowledged with a revision
it could not have. A valid history must never fail; a broken one must fail or be "unknown"
within the budget, never pass.
"""

from __future__ import annotations

import itertools
import random
import time
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scenarios.checkers import FAIL, PASS, UNKNOWN, linearizable_kv
from scenarios.history import OK, Op
from scenarios.history import UNKNOWN as OP_UNKNOWN


def valid_history(seed: int, ops: int, keys: int = 10, clients: int = 8, unknown: float = 0.02) -> list[Op]:
    """``clients`` each run ops back to back (one at a time, as a client does), at random
    durations; each op's effect lands at a random instant inside its call and return."""
    rng = random.Random(seed)
    per_client = max(1, ops // clients)
    timeline: list[tuple[float, int, str, str, float, float, str]] = []  # (effect, n, client, kind, call, ret, key)
    n = 0
    for c in range(clients):
        now = rng.random()
        for _ in range(per_client):
            call = now
            ret = call + rng.uniform(0.001, 0.05)
            effect = rng.uniform(call, ret)
            key = f"k{rng.randrange(keys)}"
            kind = "write" if rng.random() < 0.5 else "read"
            timeline.append((effect, n, f"c{c}", kind, call, ret, key))
            n += 1
            now = ret + rng.uniform(0, 0.01)
    timeline.sort()
    registers: dict[str, tuple[str, int] | None] = {}
    revision = 0
    history = []
    for _effect, number, client, kind, call, ret, key in timeline:
        if kind == "write":
            value = f"v{number}"
            if rng.random() < unknown:  # the client never heard back; it landed or it did not
                if rng.random() < 0.5:
                    revision += 1
                    registers[key] = (value, revision)
                history.append(Op(client, "write", key, call, ret, OP_UNKNOWN, {"value": value}, {}))
                continue
            revision += 1
            registers[key] = (value, revision)
            history.append(Op(client, "write", key, call, ret, OK, {"value": value}, {"revision": revision}))
        else:
            current = registers.get(key)
            result = {"value": current[0], "revision": current[1]} if current else {"value": None}
            history.append(Op(client, "read", key, call, ret, OK, {}, result))
    return history


def with_anomaly(history: list[Op], rng: random.Random) -> list[Op]:
    reads = [i for i, op in enumerate(history) if op.kind == "read" and op.result.get("value") is not None]
    i = rng.choice(reads)
    broken = list(history)
    broken[i] = replace(history[i], result={"value": "never-written", "revision": 10**9})
    return broken


def stale_read(history: list[Op]) -> list[Op] | None:
    """A read after every op of its key has returned, showing a value that a later write
    (one that began after it had returned) replaced."""
    by_key: dict[str, list[Op]] = {}
    for op in sorted(history, key=lambda o: o.call):
        by_key.setdefault(op.key, []).append(op)
    for ops in by_key.values():
        writes = [o for o in ops if o.kind == "write" and o.outcome == OK]
        for first, second in itertools.pairwise(writes):
            if second.call <= first.ret:  # only a write that began after the first had returned
                continue
            end = max(o.ret for o in ops)
            seen = dict(first.result, value=first.args["value"])
            return [*history, Op("late", "read", first.key, end + 1, end + 2, OK, {}, seen)]
    return None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), size=st.integers(5, 400), keys=st.integers(1, 5))
def test_a_valid_history_is_never_failed(seed: int, size: int, keys: int) -> None:
    verdict = linearizable_kv(valid_history(seed, size, keys=keys), budget_s=10)
    assert verdict.result in (PASS, UNKNOWN), verdict.detail
    assert verdict.result == PASS, f"small valid histories are decided: {verdict.detail}"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), size=st.integers(20, 400), keys=st.integers(1, 5))
def test_an_injected_anomaly_is_caught_or_unknown_never_passed(seed: int, size: int, keys: int) -> None:
    history = valid_history(seed, size, keys=keys, unknown=0.0)
    if not any(op.kind == "read" and op.result.get("value") is not None for op in history):
        return
    verdict = linearizable_kv(with_anomaly(history, random.Random(seed)), budget_s=10)
    assert verdict.result in (FAIL, UNKNOWN), verdict.detail
    stale = stale_read(history)
    if stale is not None:
        assert linearizable_kv(stale, budget_s=10).result in (FAIL, UNKNOWN), "a stale read passed"


def test_the_budget_turns_into_unknown_not_a_verdict() -> None:
    history = with_anomaly(valid_history(7, 20_000, keys=1, unknown=0.2), random.Random(7))
    verdict = linearizable_kv(history, budget_s=0.01)
    assert verdict.result in (UNKNOWN, FAIL)
    assert verdict.result != PASS


@pytest.mark.parametrize("size", [10_000, 50_000, 100_000])
def test_large_histories_over_ten_keys(size: int) -> None:
    """Prints how long each size takes; the verdict must be a pass (valid by construction)."""
    history = valid_history(size, size, keys=10)
    started = time.monotonic()
    verdict = linearizable_kv(history, budget_s=120)
    took = time.monotonic() - started
    print(f"\nlinearizable-kv: {size:,} ops over 10 keys checked in {took:.2f} s: {verdict.result}")
    assert verdict.result == PASS, verdict.detail

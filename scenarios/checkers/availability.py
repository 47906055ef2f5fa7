"""Availability: how long writes stopped succeeding around each fault, and heal -> first success.

For each fault cycle (from ``apply`` to ``healthy``) the write unavailability is the longest
gap between successful writes that overlaps the cycle. Reported per cycle, with median and
worst, and the longest single call during any cycle (how long a client waited for an
answer, of any kind); the verdict fails only when writes never came back after a heal.
"""

from __future__ import annotations

import itertools
import statistics

from scenarios.checkers.base import FAIL, PASS, UNKNOWN, Verdict
from scenarios.history import OK, WRITE_KINDS, Op


def _cycles(events: list[tuple[float, str]], end: float) -> list[tuple[float, float]]:
    """(applied, healthy) for each fault, from the timeline."""
    cycles, applied = [], None
    for at, event in sorted(events):
        if event.startswith("apply "):
            applied = at
        elif event == "healthy" and applied is not None:
            cycles.append((applied, at))
            applied = None
    if applied is not None:
        cycles.append((applied, end))
    return cycles


def availability(ops: list[Op], events: list[tuple[float, str]]) -> Verdict:
    traffic = [op for op in ops if not op.kind.startswith("final")]
    if not traffic:
        return Verdict("availability", UNKNOWN, "no traffic recorded")
    start, end = min(op.call for op in traffic), max(op.ret for op in traffic)
    successes = sorted(op.ret for op in traffic if op.kind in WRITE_KINDS and op.outcome == OK)
    gaps = list(itertools.pairwise([start, *successes, end]))
    longest = max((b - a for a, b in gaps), default=end - start)
    per_fault = [
        max((b - a for a, b in gaps if b >= applied and a <= healthy), default=0.0)
        for applied, healthy in _cycles(events, end)
    ]
    longest_call = [
        max((op.ret - op.call for op in traffic if op.ret >= applied and op.call <= healthy), default=0.0)
        for applied, healthy in _cycles(events, end)
    ]
    recovery = []
    for healed in (at for at, event in events if event.startswith("heal ")):
        after = [t for t in successes if t >= healed]
        recovery.append(round(after[0] - healed, 3) if after else None)
    numbers = {
        "longest_write_gap_s": round(longest, 3),
        "fault_unavailability_s": [round(g, 3) for g in per_fault],
        "fault_unavailability_median_s": round(statistics.median(per_fault), 3) if per_fault else None,
        "fault_unavailability_worst_s": round(max(per_fault), 3) if per_fault else None,
        "heal_to_first_write_s": recovery,
        "longest_call_in_fault_s": round(max(longest_call), 3) if longest_call else None,
        "successful_writes": len(successes),
    }
    if any(r is None for r in recovery):
        return Verdict("availability", FAIL, "no successful write after a heal", numbers)
    return Verdict("availability", PASS, f"longest gap without a write {longest:.2f} s", numbers)

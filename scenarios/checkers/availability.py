"""Availability: the longest window with no successful write, and heal -> first success.

Reported as numbers; the verdict fails only when writes never came back after healing.
"""

from __future__ import annotations

import itertools

from scenarios.checkers.base import FAIL, PASS, UNKNOWN, Verdict
from scenarios.history import OK, Op

WRITE_KINDS = ("write", "cas", "delete", "enqueue")


def availability(ops: list[Op], events: list[tuple[float, str]]) -> Verdict:
    traffic = [op for op in ops if not op.kind.startswith("final")]
    if not traffic:
        return Verdict("availability", UNKNOWN, "no traffic recorded")
    start, end = min(op.call for op in traffic), max(op.ret for op in traffic)
    successes = sorted(op.ret for op in traffic if op.kind in WRITE_KINDS and op.outcome == OK)
    marks = [start, *successes, end]
    gaps = [b - a for a, b in itertools.pairwise(marks)]
    longest = max(gaps) if gaps else end - start
    heals = [at for at, event in events if event.startswith("heal ")]
    recovery = []
    for healed in heals:
        after = [t for t in successes if t >= healed]
        recovery.append(after[0] - healed if after else None)
    numbers = {
        "longest_write_gap_s": round(longest, 3),
        "heal_to_first_write_s": [None if r is None else round(r, 3) for r in recovery],
        "successful_writes": len(successes),
    }
    if any(r is None for r in recovery):
        return Verdict("availability", FAIL, "no successful write after a heal", numbers)
    return Verdict("availability", PASS, f"longest gap without a write {longest:.2f} s", numbers)

"""Every read served: what a planned disruption promises (a node drained within the
PodDisruptionBudgets, a rolling restart), where a read is safe to send again and a client
that does so should never see one fail. Not run under the unplanned faults, where a read can
fail honestly (no quorum, every endpoint down for longer than a client waits).
"""

from __future__ import annotations

from collections import Counter

from scenarios.checkers.base import FAIL, PASS, UNKNOWN, Verdict
from scenarios.history import OK, Op


def reads_served(ops: list[Op]) -> Verdict:
    reads = [op for op in ops if op.kind == "read"]
    if not reads:
        return Verdict("reads-served", UNKNOWN, "no read recorded")
    missed = [op for op in reads if op.outcome != OK]
    why = Counter(str(op.result.get("error") or op.result.get("code") or op.result.get("status")) for op in missed)
    numbers = {
        "reads": len(reads),
        "failed": sum(op.outcome != OK and op.outcome != "unknown" for op in missed),
        "unknown": sum(op.outcome == "unknown" for op in missed),
        "why": dict(why.most_common(5)),
    }
    if missed:
        first = missed[0]
        detail = f"{len(missed)} of {len(reads)} reads not served; first: {first.client} {first.key} {first.result}"
        return Verdict("reads-served", FAIL, detail, numbers)
    return Verdict("reads-served", PASS, f"all {len(reads)} reads served", numbers)

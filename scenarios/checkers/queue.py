"""Queue safety: every acknowledged enqueue is claimable or acked in the end; no double ack.

The history must hold the final drain (``final-claim`` / ``final-ack`` ops after healing):
a job is accounted for if some ack of it succeeded, or might have (unknown outcome), or the
drain claimed it.
"""

from __future__ import annotations

from collections import Counter

from scenarios.checkers.base import FAIL, PASS, UNKNOWN, Verdict
from scenarios.history import OK, Op
from scenarios.history import UNKNOWN as OP_UNKNOWN


def queue_safety(ops: list[Op]) -> Verdict:
    enqueued = {op.result["id"] for op in ops if op.kind == "enqueue" and op.outcome == OK}
    acks = Counter(op.args["id"] for op in ops if op.kind in ("ack", "final-ack") and op.outcome == OK)
    maybe_acked = {op.args["id"] for op in ops if op.kind in ("ack", "final-ack") and op.outcome == OP_UNKNOWN}
    drained = {op.result["id"] for op in ops if op.kind == "final-claim" and op.outcome == OK and op.result.get("id")}
    finals = [op for op in ops if op.kind == "final-claim"]
    drain_done = bool(finals) and finals[-1].outcome == OK and not finals[-1].result.get("id")
    twice = sorted(job for job, n in acks.items() if n > 1)
    lost = sorted(enqueued - set(acks) - maybe_acked - drained)
    numbers = {
        "enqueued": len(enqueued),
        "acked": len(acks),
        "drained": len(drained),
        "double_acks": len(twice),
        "lost": len(lost),
    }
    if twice:
        return Verdict("queue-safety", FAIL, f"acked more than once: {', '.join(twice[:5])}", numbers)
    if lost and drain_done:
        return Verdict("queue-safety", FAIL, f"enqueued, never acked, not claimable: {', '.join(lost[:5])}", numbers)
    if lost:
        return Verdict("queue-safety", UNKNOWN, "the final drain did not finish", numbers)
    return Verdict(
        "queue-safety", PASS, f"{len(enqueued)} jobs: {len(acks)} acked once, {len(drained)} drained", numbers
    )

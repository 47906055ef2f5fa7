"""Queue safety: every acknowledged enqueue is claimable or acked in the end; no double ack.

The history must hold the final drain (``final-claim`` / ``final-ack`` ops after healing):
a job is accounted for if some ack of it succeeded, or might have (unknown outcome), or the
drain claimed it. A job the drain did not find is looked up by id (``final-state`` ops): one
still under a lease is not lost but not proven either (a claim whose outcome was unknown may
reach its node late and hide the job for a lease from then); one that is gone, dead-lettered,
or ready while the queue answered empty after that lookup is a failure.
"""

from __future__ import annotations

from collections import Counter

from scenarios.checkers.base import FAIL, PASS, UNKNOWN, Verdict
from scenarios.history import OK, Op
from scenarios.history import UNKNOWN as OP_UNKNOWN


def unaccounted(ops: list[Op]) -> list[str]:
    """Jobs enqueued for sure that no ack (certain or not) and no drain claim accounts for."""
    enqueued = {op.result["id"] for op in ops if op.kind == "enqueue" and op.outcome == OK}
    acked = {op.args["id"] for op in ops if op.kind in ("ack", "final-ack") and op.outcome in (OK, OP_UNKNOWN)}
    drained = {op.result["id"] for op in ops if op.kind == "final-claim" and op.outcome == OK and op.result.get("id")}
    return sorted(enqueued - acked - drained)


DRAIN_LEASE_S = 5.0  # what the final drain's claims ask for (scenarios/traffic.py)


def overlapping_leases(ops: list[Op]) -> list[str]:
    """Jobs granted to a claim while an earlier claim's lease certainly still ran.

    A lease runs from some moment of its claim's call to at least ``call + lease``; a later
    claim of the same job that returned before then was granted inside it. Only claims that
    answered count (an unknown one proves nothing), and an acked job cannot be claimed again,
    so nothing else explains it: the nodes' clocks disagreed, or the queue is wrong.

    "Later" is the queue's order, which each grant carries (``attempts``, the job's claims so
    far); the order of the calls is used only without it. A claim called first may be
    granted second: one that waited out a worker's failure (2.7 s) was granted after another
    client's claim of the same job had come and gone, and its early call read as an overlap.
    """
    claims: dict[str, list[Op]] = {}
    for op in sorted(ops, key=lambda o: o.call):
        if op.kind in ("claim", "final-claim") and op.outcome == OK and op.result.get("id"):
            claims.setdefault(op.result["id"], []).append(op)
    found = []
    for job, granted in claims.items():
        if all(isinstance(op.result.get("attempts"), int) for op in granted):
            granted.sort(key=lambda op: op.result["attempts"])
        ends = [op.call + float(op.args.get("lease", DRAIN_LEASE_S)) for op in granted]
        if any(later.ret < max(ends[:i]) for i, later in enumerate(granted) if i):
            found.append(job)
    return sorted(found)


def lease_exclusive(ops: list[Op]) -> Verdict:
    """No job held by two claims at once (:func:`overlapping_leases`)."""
    overlapping = overlapping_leases(ops)
    numbers = {"overlapping_leases": len(overlapping)}
    if overlapping:
        return Verdict(
            "lease-exclusive", FAIL, f"claimed again while a lease ran: {', '.join(overlapping[:5])}", numbers
        )
    return Verdict("lease-exclusive", PASS, "no job held by two claims at once", numbers)


def queue_safety(ops: list[Op]) -> Verdict:
    enqueued = {op.result["id"] for op in ops if op.kind == "enqueue" and op.outcome == OK}
    acks = Counter(op.args["id"] for op in ops if op.kind in ("ack", "final-ack") and op.outcome == OK)
    drained = {op.result["id"] for op in ops if op.kind == "final-claim" and op.outcome == OK and op.result.get("id")}
    finals = [op for op in ops if op.kind == "final-claim"]
    drain_done = bool(finals) and finals[-1].outcome == OK and not finals[-1].result.get("id")
    looked = {op.args["id"]: op for op in ops if op.kind == "final-state" and op.outcome == OK}  # the last of each
    states = {job: op.result.get("state") for job, op in looked.items()}
    twice = sorted(job for job, n in acks.items() if n > 1)
    lost = unaccounted(ops)
    # still held at the end: under a lease, or ready when last looked up with no empty answer
    # of the queue after that (its lease may have ended between the drain's pass and the lookup)
    empty_after = [op.call for op in finals if op.outcome == OK and not op.result.get("id")]
    held = [
        job
        for job in lost
        if states.get(job) == "claimed"
        or (states.get(job) == "ready" and not any(at > looked[job].ret for at in empty_after))
    ]
    numbers = {
        "enqueued": len(enqueued),
        "acked": len(acks),
        "drained": len(drained),
        "double_acks": len(twice),
        "lost": len(lost) - len(held),
        "held_at_end": len(held),
        "overlapping_leases": len(overlapping_leases(ops)),  # judged by lease-exclusive; counted here too
    }
    if twice:
        return Verdict("queue-safety", FAIL, f"acked more than once: {', '.join(twice[:5])}", numbers)
    lost = [job for job in lost if job not in held]
    if lost and drain_done:
        detail = ", ".join(f"{job} ({_said(states, job)})" for job in lost[:5])
        return Verdict("queue-safety", FAIL, f"enqueued, never acked, not claimable: {detail}", numbers)
    if lost:
        return Verdict("queue-safety", UNKNOWN, "the final drain did not finish", numbers)
    if held:
        return Verdict(
            "queue-safety", UNKNOWN, f"still under a lease when the drain ended: {', '.join(held[:5])}", numbers
        )
    return Verdict(
        "queue-safety", PASS, f"{len(enqueued)} jobs: {len(acks)} acked once, {len(drained)} drained", numbers
    )


def _said(states: dict[str, str | None], job: str) -> str:
    if job not in states:
        return "not looked up"
    return "gone" if states[job] is None else f"state {states[job]}"

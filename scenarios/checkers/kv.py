"""No acknowledged kv write is lost: every final read is explained by the history.

Values are unique per write, so a final value names the write that produced it. A final read
of key k showing the value of write w is explained only if w did not fail and no write or
delete of k that was *acknowledged* began after w had returned (that one would be later in
every linearization, so w's value could not be the last). A final "absent" is explained the
same way by a delete, or by no acknowledged write at all.
"""

from __future__ import annotations

from collections import defaultdict

from scenarios.checkers.base import FAIL, PASS, UNKNOWN, Verdict
from scenarios.history import FAIL as OP_FAIL
from scenarios.history import OK, Op

WRITES = ("write", "cas")
MUTATIONS = ("write", "cas", "delete")


def no_lost_writes(ops: list[Op]) -> Verdict:
    by_key: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        if op.kind in (*MUTATIONS, "final-read"):
            by_key[op.key].append(op)
    problems: list[str] = []
    unread = []
    acknowledged = sum(1 for op in ops if op.kind in MUTATIONS and op.outcome == OK)
    for key, key_ops in sorted(by_key.items()):
        finals = [op for op in key_ops if op.kind == "final-read" and op.outcome == OK]
        if not finals:
            if any(op.outcome == OK for op in key_ops):
                unread.append(key)
            continue
        problem = _explain(key, finals[-1], [op for op in key_ops if op.kind in MUTATIONS])
        if problem:
            problems.append(problem)
    numbers = {"acknowledged_writes": acknowledged, "keys": len(by_key), "lost": len(problems)}
    if problems:
        return Verdict("no-lost-writes", FAIL, "; ".join(problems[:5]), numbers)
    if unread:
        return Verdict("no-lost-writes", UNKNOWN, f"no final read of {', '.join(unread)}", numbers)
    return Verdict("no-lost-writes", PASS, f"{acknowledged} acknowledged writes, all accounted for", numbers)


def _explain(key: str, final: Op, mutations: list[Op]) -> str | None:
    value = final.result.get("value")
    if value is None:
        sources = [op for op in mutations if op.kind == "delete" and op.outcome != OP_FAIL]
        if not sources and not any(op.kind in WRITES and op.outcome == OK for op in mutations):
            return None
    else:
        sources = [op for op in mutations if op.kind in WRITES and op.args.get("value") == value]
        if not sources:
            return f"{key}: final value {value!r} was never written"
        if all(op.outcome == OP_FAIL for op in sources):
            return f"{key}: final value {value!r} comes from a write that failed"
        sources = [op for op in sources if op.outcome != OP_FAIL]
    if not sources:
        return f"{key}: final read finds it absent, but acknowledged writes exist and no delete could explain it"
    latest_end = max(op.effective_ret for op in sources)  # an unknown op may apply at any later time
    later = [op for op in mutations if op.outcome == OK and op.call > latest_end and op not in sources]
    if later:
        lost = later[-1]
        shown = "absent" if value is None else repr(value)
        return (
            f"{key}: final read shows {shown}, but acknowledged {lost.kind} {lost.args.get('value')!r} "
            f"by {lost.client} began after it and is lost"
        )
    return None

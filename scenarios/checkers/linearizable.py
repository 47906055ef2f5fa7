"""kv linearizability, per key: the Wing-Gong search with Lowe's memoisation (WGL).

The model is one register per key: absent, or (value, revision). Revisions come from the DB
and only grow, so they are checked too: a read must show the revision of the write it saw.
Ops:

    read   -> value, revision | absent        write v      -> revision r
    cas(e) -> revision r (ok) | 412 (fail)    delete       -> 204 (ok) | 404 (ok, was absent)

An ``unknown`` op may take effect at any time after its call, or never; a search may leave
it out. Reads whose outcome is unknown observed nothing and are dropped. Each key is checked
on its own (P-compositionality). Over the time budget the verdict is ``unknown``, never pass.
A failed op is kept only when it observed something: a 412 says the revision differed.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass

from scenarios.checkers.base import FAIL, PASS, UNKNOWN, Verdict
from scenarios.history import FAIL as OP_FAIL
from scenarios.history import OK, Op
from scenarios.history import UNKNOWN as OP_UNKNOWN

State = tuple[str, int | None] | None  # None: absent; revision None: written by an unknown op, not yet seen
KINDS = ("read", "final-read", "write", "cas", "delete")


class OverBudget(Exception):
    pass


@dataclass(frozen=True)
class Entry:
    op: Op
    index: int

    @property
    def optional(self) -> bool:
        return self.op.outcome == OP_UNKNOWN


def step(state: State, op: Op) -> tuple[bool, State]:
    """Apply ``op`` to the register; (False, _) when the op's answer is impossible there."""
    kind, result = op.kind, op.result
    known = op.outcome == OK
    if kind in ("read", "final-read"):
        if result.get("value") is None:
            return state is None, state
        if state is None or state[0] != result["value"]:
            return False, state
        return state[1] is None or state[1] == result["revision"], (state[0], result["revision"])
    if kind == "write":
        if known and state is not None and state[1] is not None and result["revision"] <= state[1]:
            return False, state
        return True, (op.args["value"], result["revision"] if known else None)
    if kind == "cas":
        expected, current = op.args["expected"], None if state is None else state[1]
        if expected == 0:  # If-None-Match: * (create only)
            may_match, must_match = state is None, state is None
        else:
            may_match = state is not None and (current is None or current == expected)
            must_match = state is not None and current == expected
        if op.outcome == OP_FAIL:  # a definite 412
            return not must_match, state
        if not may_match:
            return False, state
        return True, (op.args["value"], result["revision"] if known else None)
    if kind == "delete":
        if known and result.get("deleted") is False:
            return state is None, state
        if known and state is None:
            return False, state
        return True, None
    raise ValueError(f"not a kv op: {kind}")


@dataclass
class _Frame:
    """One node of the search: the ops done so far, the register's state, and the ops that
    may go next (invoked before every pending op's return), tried in order."""

    done: int
    state: State
    candidates: list[Entry]
    tried: int = 0


def _frame(entries: list[Entry], done: int, state: State) -> _Frame:
    pending = [e for e in entries if not done & (1 << e.index)]
    horizon = min(e.op.effective_ret for e in pending)  # nothing invoked after this may go first
    return _Frame(done, state, [e for e in pending if e.op.call <= horizon])


def check_key(ops: list[Op], deadline: float) -> bool:
    """True if some linearization explains every definite op of one key.

    Depth-first over an explicit stack, so a history of any length needs no recursion;
    (done, state) pairs already explored are not explored again (Lowe's memoisation).
    """
    entries = [Entry(op, i) for i, op in enumerate(sorted(ops, key=lambda o: o.call))]
    required = sum(1 << e.index for e in entries if not e.optional)
    if required == 0:
        return True
    seen: set[tuple[int, State]] = {(0, None)}
    stack = [_frame(entries, 0, None)]
    while stack:
        top = stack[-1]
        if top.tried == len(top.candidates):
            stack.pop()
            continue
        entry = top.candidates[top.tried]
        top.tried += 1
        ok, after = step(top.state, entry.op)
        done = top.done | (1 << entry.index)
        if not ok or (done, after) in seen:
            continue
        if done & required == required:
            return True
        if time.monotonic() > deadline:
            raise OverBudget
        seen.add((done, after))
        stack.append(_frame(entries, done, after))
    return False


def linearizable_kv(ops: list[Op], *, budget_s: float = 20.0) -> Verdict:
    by_key: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        if op.kind not in KINDS:
            continue
        if op.kind in ("read", "final-read") and op.outcome != OK:
            continue  # a read that did not answer observed nothing
        if op.outcome == OP_FAIL and op.result.get("status") != 412:
            continue  # a definite failure (refused connection, 4xx) had no effect and observed nothing
        by_key[op.key].append(op)
    deadline = time.monotonic() + budget_s
    bad, undecided = [], []
    for key, key_ops in sorted(by_key.items()):
        try:
            if not check_key(key_ops, deadline):
                bad.append(key)
        except OverBudget:
            undecided.append(key)
    numbers = {
        "keys": len(by_key),
        "ops": sum(map(len, by_key.values())),
        "violations": len(bad),
        "undecided": len(undecided),
    }
    if bad:
        return Verdict("linearizable-kv", FAIL, f"no linearization for key(s) {', '.join(bad)}", numbers)
    if undecided:
        return Verdict(
            "linearizable-kv", UNKNOWN, f"over the {budget_s:.0f} s budget on {', '.join(undecided)}", numbers
        )
    return Verdict("linearizable-kv", PASS, f"{numbers['ops']} ops on {len(by_key)} keys linearizable", numbers)

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


@dataclass(eq=False)
class _Node:
    """One event of a key's history in a doubly linked list: an op's call, or its return."""

    entry: Entry | None  # None: the list's head
    is_call: bool = True
    at: float = 0.0
    match: _Node | None = None  # a call's return
    prev: _Node | None = None
    next: _Node | None = None


def _events(entries: list[Entry]) -> _Node:
    """Calls and returns in time order (a return at the same moment as a call comes first:
    the op ended before the other began). An unknown op's return is at infinity."""
    events: list[tuple[float, int, _Node]] = []
    for e in entries:
        call = _Node(e, True, e.op.call)
        ret = _Node(e, False, e.op.effective_ret)
        call.match = ret
        events += [(call.at, 1, call), (ret.at, 0, ret)]
    events.sort(key=lambda item: (item[0], item[1], item[2].entry.index if item[2].entry else -1))
    head = _Node(None)
    last = head
    for _, _, node in events:
        last.next, node.prev = node, last
        last = node
    return head


def _lift(call: _Node) -> None:
    """Take an op (its call and its return) out of the list."""
    for node in (call, call.match):
        assert node is not None and node.prev is not None
        node.prev.next = node.next
        if node.next is not None:
            node.next.prev = node.prev


def _unlift(call: _Node) -> None:
    for node in (call.match, call):
        assert node is not None and node.prev is not None
        node.prev.next = node
        if node.next is not None:
            node.next.prev = node


def check_key(ops: list[Op], deadline: float, *, max_states: int = 2_000_000) -> bool:
    """True if some linearization explains every definite op of one key.

    Lowe's WGL over a linked list of events, as Porcupine does it: walk the calls in time
    order, linearize the first one whose effect fits (take it out of the list), back up at
    the first return reached of an op not yet linearized. (linearized ops, state) pairs seen
    before are not explored again. An unknown op's return is at infinity, so reaching one
    means every definite op has been placed. Over ``deadline`` or ``max_states`` remembered
    pairs: OverBudget, so the verdict is unknown, never a guess.
    """
    entries = [Entry(op, i) for i, op in enumerate(sorted(ops, key=lambda o: o.call))]
    if not any(not e.optional for e in entries):
        return True
    head = _events(entries)
    seen: set[tuple[int, State]] = set()
    calls: list[tuple[_Node, State]] = []
    state: State = None
    linearized = 0
    node = head.next
    steps = 0
    while node is not None:
        entry = node.entry
        assert entry is not None
        if not node.is_call:
            if entry.optional:  # at infinity: every definite op is placed
                return True
            if not calls:
                return False
            node, state = calls.pop()  # back up: undo the last op placed, try what follows it
            assert node.entry is not None
            linearized &= ~(1 << node.entry.index)
            _unlift(node)
            node = node.next
            continue
        ok, after = step(state, entry.op)
        placed = linearized | (1 << entry.index)
        if ok and (placed, after) not in seen:
            seen.add((placed, after))
            if len(seen) > max_states:
                raise OverBudget
            calls.append((node, state))
            state, linearized = after, placed
            _lift(node)
            node = head.next
        else:
            node = node.next
        steps += 1
        if steps % 4096 == 0 and time.monotonic() > deadline:
            raise OverBudget
    return True


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

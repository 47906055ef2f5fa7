"""Checkers against hand-made histories: ones that must fail, and ones that must pass."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from scenarios.checkers import (
    FAIL,
    PASS,
    UNKNOWN,
    availability,
    lease_exclusive,
    linearizable_kv,
    no_lost_writes,
    queue_safety,
    reads_served,
)
from scenarios.history import OK, History, Op


def op(kind: str, key: str, call: float, ret: float, outcome: str = "ok", client: str = "c1", **fields: Any) -> Op:
    args: dict[str, Any] = {
        k: fields.pop(k) for k in ("value", "expected", "id") if k in fields and kind not in ("read", "final-read")
    }
    if kind in ("read", "final-read") and "value" in fields:
        fields.setdefault("revision", None)
    return Op(client, kind, key, call, ret, outcome, args, fields)


def write(
    key: str, value: str, call: float, ret: float, rev: int | None = None, outcome: str = "ok", client: str = "c1"
) -> Op:
    return op("write", key, call, ret, outcome, client, value=value, **({"revision": rev} if rev else {}))


def read(key: str, value: str | None, call: float, ret: float, rev: int | None = None, kind: str = "read") -> Op:
    return Op("c2", kind, key, call, ret, "ok", {}, {"value": value, "revision": rev})


# -- lost writes --------------------------------------------------------------------------


def test_lost_acknowledged_write_fails() -> None:
    history = [write("k", "a", 0, 1, 10), write("k", "b", 2, 3, 11), read("k", "a", 10, 11, 10, "final-read")]
    verdict = no_lost_writes(history)
    assert verdict.result == FAIL and "'b'" in verdict.detail


def test_final_value_nobody_wrote_fails() -> None:
    assert no_lost_writes([write("k", "a", 0, 1, 10), read("k", "zzz", 5, 6, 99, "final-read")]).result == FAIL


def test_final_value_from_a_failed_write_fails() -> None:
    history = [
        write("k", "a", 0, 1, 10),
        op("cas", "k", 2, 3, "fail", value="b", expected=3),
        read("k", "b", 5, 6, 11, "final-read"),
    ]
    assert no_lost_writes(history).result == FAIL


def test_concurrent_writes_either_may_win() -> None:
    history = [
        write("k", "a", 0, 3, 10),
        write("k", "b", 1, 2, 11, client="c2"),
        read("k", "a", 5, 6, 10, "final-read"),
    ]
    assert no_lost_writes(history).result == PASS


def test_an_unknown_write_may_land_late_and_win() -> None:
    history = [
        write("k", "a", 0, 1, outcome="unknown"),
        write("k", "b", 2, 3, 11),
        read("k", "a", 5, 6, 12, "final-read"),
    ]
    assert no_lost_writes(history).result == PASS


def test_absent_after_a_delete_passes_and_unread_keys_are_unknown() -> None:
    history = [
        write("k", "a", 0, 1, 10),
        op("delete", "k", 2, 3, deleted=True),
        read("k", None, 5, 6, kind="final-read"),
    ]
    assert no_lost_writes(history).result == PASS
    assert no_lost_writes([write("k", "a", 0, 1, 10)]).result == UNKNOWN


# -- linearizability ----------------------------------------------------------------------


def test_stale_read_after_a_completed_write_is_not_linearizable() -> None:
    history = [write("k", "a", 0, 1, 10), write("k", "b", 2, 3, 11), read("k", "a", 4, 5, 10)]
    verdict = linearizable_kv(history)
    assert verdict.result == FAIL and "k" in verdict.detail


def test_read_of_a_revision_that_does_not_match_its_value_fails() -> None:
    history = [write("k", "a", 0, 1, 10), read("k", "a", 2, 3, 17)]
    assert linearizable_kv(history).result == FAIL


def test_concurrent_read_may_see_old_or_new() -> None:
    for seen, rev in (("a", 10), ("b", 11)):
        history = [write("k", "a", 0, 1, 10), write("k", "b", 2, 6, 11), read("k", seen, 3, 4, rev)]
        assert linearizable_kv(history).result == PASS, seen


def test_cas_against_a_stale_revision_must_not_succeed() -> None:
    history = [
        write("k", "a", 0, 1, 10),
        write("k", "b", 2, 3, 11),
        op("cas", "k", 4, 5, value="c", expected=10, revision=12),
    ]
    assert linearizable_kv(history).result == FAIL


def test_failed_cas_is_fine_when_the_revision_moved() -> None:
    history = [
        write("k", "a", 0, 1, 10),
        write("k", "b", 2, 3, 11),
        op("cas", "k", 4, 5, "fail", value="c", expected=10, status=412),
        read("k", "b", 6, 7, 11),
    ]
    assert linearizable_kv(history).result == PASS


def test_unknown_write_may_or_may_not_apply() -> None:
    base = [write("k", "a", 0, 1, 10), write("k", "x", 2, 3, outcome="unknown")]
    assert linearizable_kv([*base, read("k", "a", 4, 5, 10)]).result == PASS
    assert linearizable_kv([*base, read("k", "x", 4, 5, 12), read("k", "x", 6, 7, 12)]).result == PASS
    assert linearizable_kv([*base, read("k", "x", 4, 5, 12), read("k", "a", 6, 7, 10)]).result == FAIL


def test_delete_then_read_absent_and_revisions_must_grow() -> None:
    ok = [write("k", "a", 0, 1, 10), op("delete", "k", 2, 3, deleted=True), read("k", None, 4, 5)]
    assert linearizable_kv(ok).result == PASS
    shrinking = [write("k", "a", 0, 1, 10), write("k", "b", 2, 3, 9)]
    assert linearizable_kv(shrinking).result == FAIL


def test_over_budget_is_unknown_never_pass() -> None:
    many = [write("k", f"v{i}", 0, 100, outcome="unknown", client=f"c{i}") for i in range(40)]
    verdict = linearizable_kv([*many, read("k", "nope", 200, 201, 5)], budget_s=0.01)
    assert verdict.result in (UNKNOWN, FAIL)
    assert verdict.result != PASS


# -- queue --------------------------------------------------------------------------------


def enq(job: str, t: float, outcome: str = "ok") -> Op:
    return Op("c1", "enqueue", "q", t, t + 1, outcome, {}, {"id": job} if outcome == "ok" else {})


def ack(job: str, t: float, outcome: str = "ok", kind: str = "ack") -> Op:
    return Op("c1", kind, "q", t, t + 1, outcome, {"id": job}, {})


def drained(job: str | None, t: float) -> Op:
    return Op("drain", "final-claim", "q", t, t + 1, "ok", {}, {"id": job} if job else {})


def test_double_ack_fails() -> None:
    verdict = queue_safety([enq("j1", 0), ack("j1", 2), ack("j1", 3), drained(None, 9)])
    assert verdict.result == FAIL and "j1" in verdict.detail


def test_vanished_job_fails() -> None:
    assert queue_safety([enq("j1", 0), enq("j2", 1), ack("j1", 2), drained(None, 9)]).result == FAIL


def test_every_job_acked_or_drained_passes() -> None:
    history = [
        enq("j1", 0),
        enq("j2", 1),
        enq("j3", 1, "unknown"),
        ack("j1", 2),
        ack("j4", 3, "unknown"),
        drained("j2", 8),
        drained(None, 9),
    ]
    assert queue_safety(history).result == PASS


def looked_up(job: str, state: str | None, t: float) -> Op:
    return Op("drain", "final-state", "q", t, t + 1, "ok", {"id": job}, {"state": state})


def test_a_job_still_under_a_lease_at_the_end_is_unknown_not_lost() -> None:
    """Found by CI (scaled, partition-one): a claim whose outcome was unknown reached its node
    late and hid a job for a lease while the drain ran; the job was there all along."""
    verdict = queue_safety([enq("j1", 0), drained(None, 9), looked_up("j1", "claimed", 10)])
    assert verdict.result == UNKNOWN and "j1" in verdict.detail
    assert verdict.numbers["held_at_end"] == 1 and verdict.numbers["lost"] == 0


def test_a_job_that_is_gone_or_dead_or_ready_but_not_handed_out_fails() -> None:
    for state, said in ((None, "gone"), ("dead", "state dead")):
        verdict = queue_safety([enq("j1", 0), drained(None, 9), looked_up("j1", state, 10)])
        assert verdict.result == FAIL and f"j1 ({said})" in verdict.detail, verdict
    ready_then_empty = [enq("j1", 0), drained(None, 9), looked_up("j1", "ready", 10), drained(None, 16)]
    verdict = queue_safety(ready_then_empty)
    assert verdict.result == FAIL and "j1 (state ready)" in verdict.detail, verdict


def test_a_job_ready_when_last_looked_up_is_not_lost_until_the_queue_says_empty_after() -> None:
    """CI (k8s, a worker killed): the drain's first claim got Envoy's 503 (no healthy upstream
    yet); the job was ready, and only a pass after the lookup can say it is not handed out."""
    verdict = queue_safety([enq("j1", 0), drained(None, 9), looked_up("j1", "ready", 10)])
    assert verdict.result == UNKNOWN and verdict.numbers["held_at_end"] == 1, verdict


def test_a_held_job_the_next_pass_drains_passes() -> None:
    history = [enq("j1", 0), drained(None, 9), looked_up("j1", "claimed", 10), drained("j1", 16), drained(None, 17)]
    assert queue_safety(history).result == PASS


def test_unfinished_drain_is_unknown() -> None:
    assert queue_safety([enq("j1", 0)]).result == UNKNOWN


# -- availability -------------------------------------------------------------------------


def test_availability_measures_the_gap_and_the_recovery() -> None:
    history = [
        write("k", "a", 0, 1, 10),
        write("k", "b", 1, 2, 11),
        write("k", "c", 2, 9, outcome="unknown"),
        write("k", "d", 9, 10, 12),
    ]
    verdict = availability(history, [(3.0, "apply kill"), (8.0, "heal kill"), (8.5, "healthy")])
    assert verdict.result == PASS
    assert verdict.numbers["longest_write_gap_s"] == 8.0 and verdict.numbers["heal_to_first_write_s"] == [2.0]
    assert verdict.numbers["fault_unavailability_s"] == [8.0]


def test_unavailability_is_measured_per_fault_cycle() -> None:
    history = [write("k", str(t), t, t + 0.1, int(t * 10) + 1) for t in (0, 1, 2, 5, 6, 7, 10, 11)]
    events = [(1.5, "apply a"), (4.0, "heal a"), (4.5, "healthy"), (7.5, "apply b"), (9.0, "heal b"), (9.5, "healthy")]
    verdict = availability(history, events)
    assert verdict.numbers["fault_unavailability_s"] == [3.0, 3.0]  # 2.1 -> 5.1 and 7.1 -> 10.1
    assert verdict.numbers["fault_unavailability_median_s"] == 3.0


def test_no_write_after_heal_fails() -> None:
    history = [write("k", "a", 0, 1, 10), write("k", "b", 5, 6, outcome="unknown")]
    assert availability(history, [(2.0, "heal kill")]).result == FAIL


def test_create_only_cas_on_an_absent_key_cannot_fail() -> None:
    assert linearizable_kv([op("cas", "k", 0, 1, "fail", value="a", expected=0, status=412)]).result == FAIL
    history = [write("k", "a", 0, 1, 10), op("cas", "k", 2, 3, "fail", value="b", expected=0, status=412)]
    assert linearizable_kv(history).result == PASS


def test_a_drain_that_ended_on_an_error_is_not_a_finished_drain() -> None:
    ended_badly = Op("drain", "final-claim", "q", 10, 11, "fail", {}, {"status": 401})
    history = [enq("j1", 0), drained(None, 5), ended_badly]
    assert queue_safety(history).result == UNKNOWN


def test_a_write_that_failed_to_connect_had_no_effect() -> None:
    """Found by a real scaled run: a write refused at connect must not be linearized."""
    refused = Op("c3", "write", "k", 2, 2.1, "fail", {"value": "never"}, {"error": "ConnectError"})
    refused_cas = Op("c3", "cas", "k", 2, 2.1, "fail", {"value": "never", "expected": 10}, {"error": "ConnectError"})
    history = [write("k", "a", 0, 1, 10), refused, refused_cas, read("k", "a", 3, 4, 10)]
    assert linearizable_kv(history).result == PASS


def long_history(length: int) -> list[Op]:
    """One client writing then reading its write, ``length`` times in a row on one key."""
    ops = []
    for i in range(length):
        t = 4.0 * i
        ops.append(op("write", "k", t, t + 1, value=f"v{i}", revision=i + 1))
        ops.append(op("read", "k", t + 2, t + 3, value=f"v{i}", revision=i + 1))
    return ops


def test_a_history_deeper_than_the_recursion_limit_is_checked_without_raising_it() -> None:
    limit = sys.getrecursionlimit()
    depth = 2 * limit  # a recursive search would need one frame per op
    assert linearizable_kv(long_history(depth // 2 + 1)).result == PASS
    stale = [*long_history(depth // 2), op("read", "k", 1e9, 1e9 + 1, value="v0", revision=1)]
    assert linearizable_kv(stale).result == FAIL
    assert sys.getrecursionlimit() == limit


def claimed(job: str, call: float, ret: float, lease: float = 2.0, kind: str = "claim") -> Op:
    return Op("c1", kind, "q", call, ret, "ok", {"lease": lease}, {"id": job})


def test_a_job_granted_again_inside_a_lease_that_certainly_still_ran_breaks_exclusivity() -> None:
    """What the clock-skew scenario found in ha: a node five minutes ahead saw every lease over."""
    overlapping = [enq("j1", 0), claimed("j1", 1.0, 1.1), claimed("j1", 2.0, 2.2)]  # 2.2 < 1.0 + 2
    verdict = lease_exclusive(overlapping)
    assert verdict.result == FAIL and "j1" in verdict.detail and verdict.numbers == {"overlapping_leases": 1}
    assert queue_safety([*overlapping, drained(None, 9)]).numbers["overlapping_leases"] == 1


def test_a_claim_after_the_earlier_lease_could_have_ended_or_an_unknown_one_is_no_overlap() -> None:
    after = [claimed("j1", 1.0, 1.1), claimed("j1", 2.9, 3.05)]  # 3.05 >= 1.0 + 2: the lease may have ended
    unknown = Op("c2", "claim", "q", 1.5, 1.6, "unknown", {"lease": 2.0}, {})
    drain = [claimed("j2", 1.0, 1.1), claimed("j2", 3.5, 3.6, lease=5.0, kind="final-claim")]
    assert lease_exclusive([*after, unknown, *drain]).result == PASS
    assert lease_exclusive([claimed("j3", 0, 0.1, lease=5.0, kind="final-claim"), claimed("j3", 1, 1.1)]).result == FAIL


def test_a_claim_called_first_but_granted_second_is_ordered_by_the_queue_not_by_its_call() -> None:
    """k8s, kill-a-worker-until-rescheduled (CI of 2026-12-07): q0's claim waited 2.7 s out a
    worker's failure and got attempt 2, after q1's claim (attempt 1) had its lease; q0's
    grant came after q1's lease could have ended (2.70 > 0.41 + 2), so nothing overlapped."""

    def granted(client: str, call: float, ret: float, attempts: int) -> Op:
        return Op(client, "claim", "q", call, ret, "ok", {"lease": 2.0}, {"id": "j1", "attempts": attempts})

    late = [enq("j1", 0), granted("q0", 0.0, 2.75, attempts=2), granted("q1", 0.41, 0.45, attempts=1)]
    assert lease_exclusive(late).result == PASS
    inside = [enq("j1", 0), granted("q0", 0.0, 2.30, attempts=2), granted("q1", 0.41, 0.45, attempts=1)]
    assert lease_exclusive(inside).result == FAIL  # granted second, and back before 0.41 + 2


def test_fault_windows_hold_the_ops_inside_each_fault_and_refuse_an_unhealed_one() -> None:
    history = History()
    for event, at in (("apply kill(node-1)", 1.0), ("heal kill(node-1)", 3.0), ("apply pause(node-2)", 5.0)):
        history.mark(at, event)
    history.mark(7.0, "heal pause(node-2)")
    for client, call, ret in (("before", 0.5, 1.5), ("inside", 1.5, 2.5), ("across", 2.5, 5.5), ("second", 5.5, 6.0)):
        history.add(Op(client, "read", "k", call, ret, OK))
    assert [[op.client for op in window] for window in history.fault_windows()] == [["inside"], ["second"]]
    history.mark(8.0, "apply kill(node-3)")
    with pytest.raises(ValueError, match="3 faults applied, 2 healed"):
        history.fault_windows()


def test_reads_served_fails_on_any_read_not_served_and_ignores_writes() -> None:
    served = [read("k", "a", 0.0, 0.1), write("k", "b", 0.2, 0.3, outcome="unknown"), read("k", None, 0.4, 0.5)]
    assert reads_served(served).result == PASS
    cut = op("read", "k", 0.6, 0.7, "unknown", error="RemoteProtocolError")
    refused = op("read", "k", 0.8, 0.9, "fail", error="ConnectError")
    verdict = reads_served([*served, cut, refused])
    assert verdict.result == FAIL and "2 of 4 reads not served" in verdict.detail
    assert verdict.numbers["why"] == {"RemoteProtocolError": 1, "ConnectError": 1}
    assert (verdict.numbers["failed"], verdict.numbers["unknown"]) == (1, 1)
    assert reads_served([write("k", "b", 0.2, 0.3)]).result == UNKNOWN

"""The workload protocol's two implementations, against stand-ins: what each answer of the
runtime means for the history (ok, fail: nothing applied, unknown: maybe applied), and the
calls each operation makes. Shown against real runs in scenarios/test_grpc.py."""

from __future__ import annotations

import time
from typing import Any

import grpc
import httpx
import pytest

from scenarios.history import FAIL, OK, UNKNOWN
from scenarios.traffic import Traffic, TrafficRun, _kv_invocation
from scenarios.workload import Completion, EtcdKv, HttpKv, Invocation, classify, grpc_completion, workload
from tests.conftest import EtcdCluster, free_port


class Refused(grpc.RpcError):  # type: ignore[misc]
    def __init__(self, code: grpc.StatusCode, details: str = "") -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(
    ("kind", "code", "details", "outcome"),
    [
        ("cas", grpc.StatusCode.FAILED_PRECONDITION, "revision_mismatch: ...", FAIL),
        ("write", grpc.StatusCode.UNAVAILABLE, "not_applied: the DB is unavailable; nothing was applied", FAIL),
        ("write", grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses; last error: refused", FAIL),
        ("write", grpc.StatusCode.UNAVAILABLE, "Socket closed", UNKNOWN),
        ("write", grpc.StatusCode.UNKNOWN, "outcome_unknown: the DB did not confirm in time", UNKNOWN),
        ("write", grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", UNKNOWN),
        ("write", grpc.StatusCode.RESOURCE_EXHAUSTED, "full: no space left", FAIL),
        ("read", grpc.StatusCode.UNAUTHENTICATED, "token expired", FAIL),
        ("read", grpc.StatusCode.NOT_FOUND, "not_found: k", OK),
        ("delete", grpc.StatusCode.NOT_FOUND, "not_found: k", OK),
    ],
)
def test_a_grpc_status_means_what_the_runtime_says_it_means(kind: str, code: Any, details: str, outcome: str) -> None:
    assert grpc_completion(kind, Refused(code, details)).outcome == outcome


def test_an_absent_key_reads_as_none_and_deletes_as_not_deleted_over_grpc() -> None:
    assert grpc_completion("read", Refused(grpc.StatusCode.NOT_FOUND)).result["value"] is None
    assert grpc_completion("delete", Refused(grpc.StatusCode.NOT_FOUND)).result["deleted"] is False


class Api:
    """A stand-in ClusterClient: records each call, answers from ``replies``."""

    def __init__(self, *replies: httpx.Response) -> None:
        self.replies, self.calls = list(replies), []  # type: list[httpx.Response], list[tuple[str, str, Any]]
        self.resent: list[bool] = []

    def _answer(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        self.calls.append((method, path, kwargs.get("headers")))
        self.resent.append(kwargs.get("resend", False))
        return self.replies.pop(0)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self._answer("GET", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> httpx.Response:
        return self._answer("PUT", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return self._answer("DELETE", path, **kwargs)


def test_http_cas_sends_if_match_or_if_none_match_and_reads_carry_the_revision() -> None:
    api = Api(
        httpx.Response(200, json={"revision": 7}),
        httpx.Response(200, json={"revision": 8}),
        httpx.Response(200, content=b"c0-2", headers={"etag": '"8"'}),
        httpx.Response(412, json={"error": "revision_mismatch"}),
    )
    kv = HttpKv(api)  # type: ignore[arg-type]
    assert kv.invoke(Invocation("cas", "k", {"value": "c0-1", "expected": 0})).result["revision"] == 7
    assert kv.invoke(Invocation("cas", "k", {"value": "c0-2", "expected": 7})).result["revision"] == 8
    read = kv.invoke(Invocation("read", "k"))
    assert (read.outcome, read.result["value"], read.result["revision"]) == (OK, "c0-2", 8)
    assert kv.invoke(Invocation("cas", "k", {"value": "c0-3", "expected": 7})).outcome == FAIL
    assert [c[2] for c in api.calls] == [{"If-None-Match": "*"}, {"If-Match": "7"}, None, {"If-Match": "7"}]
    assert api.resent == [False, False, True, False]  # only the read may go to the next endpoint


def _nothing(reply: httpx.Response) -> dict[str, Any]:
    return {}


def test_http_outcomes_nothing_sent_is_fail_a_cut_reply_is_unknown() -> None:
    def refused() -> httpx.Response:
        raise httpx.ConnectError("refused")

    def cut() -> httpx.Response:
        raise httpx.ReadTimeout("timed out")

    assert classify("write", refused, _nothing).outcome == FAIL
    assert classify("write", cut, _nothing).outcome == UNKNOWN
    not_applied = httpx.Response(503, json={"error": "not_applied", "detail": "the DB is unavailable"})
    assert classify("write", lambda: not_applied, _nothing).outcome == FAIL
    assert classify("write", lambda: httpx.Response(504), _nothing).outcome == UNKNOWN
    assert classify("write", lambda: httpx.Response(507), _nothing).outcome == FAIL


def test_an_unknown_operation_or_workload_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match="no operation 'increment'; expected one of read, write, cas, delete"):
        HttpKv(Api()).invoke(Invocation("increment", "k"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no workload 'soap'; expected one of http, grpc, etcd"):
        TrafficRun(None, Traffic(workload="soap"), None, tag="t")  # type: ignore[arg-type]
    assert workload("grpc").name == "grpc"


def test_the_traffic_mixes_reads_writes_cas_and_deletes_against_what_it_last_saw() -> None:
    assert _kv_invocation(0.1, "k", "c-1", 5) == Invocation("read", "k")
    assert _kv_invocation(0.5, "k", "c-1", 5) == Invocation("write", "k", {"value": "c-1"})
    assert _kv_invocation(0.8, "k", "c-1", 5) == Invocation("cas", "k", {"value": "c-1", "expected": 5})
    assert _kv_invocation(0.95, "k", "c-1", 5) == Invocation("delete", "k")


def test_etcd_register_semantics_against_a_real_etcd(etcd: EtcdCluster) -> None:
    """EtcdKv against a real etcd member (loopback, no TLS): a read of an absent key, a CAS
    that creates, a stale CAS refused (fail: nothing applied), a write, a read that carries the
    write's revision, a delete, and the register as the checkers see it."""
    endpoint = etcd.endpoints[0].removeprefix("http://")
    key = f"t-{time.time_ns()}"
    with EtcdKv([endpoint], None, 0, 5.0) as kv:
        assert kv.invoke(Invocation("read", key)) == Completion(OK, {"code": "OK", "value": None})
        created = kv.invoke(Invocation("cas", key, {"value": "a-1", "expected": 0}))
        assert created.outcome == OK
        stale = kv.invoke(Invocation("cas", key, {"value": "a-2", "expected": 0}))
        assert stale.outcome == FAIL
        written = kv.invoke(Invocation("write", key, {"value": "a-3"}))
        assert written.outcome == OK and written.result["revision"] > created.result["revision"]
        read = kv.invoke(Invocation("read", key))
        assert read.result == {"code": "OK", "value": "a-3", "revision": written.result["revision"]}
        moved = kv.invoke(Invocation("cas", key, {"value": "a-4", "expected": created.result["revision"]}))
        assert moved.outcome == FAIL
        assert kv.invoke(Invocation("cas", key, {"value": "a-5", "expected": read.result["revision"]})).outcome == OK
        assert kv.invoke(Invocation("delete", key)).result["deleted"] is True
        assert kv.invoke(Invocation("delete", key)).result["deleted"] is False


def test_etcd_register_a_member_that_is_gone_reads_at_the_next_a_write_fails_then_the_next(
    etcd: EtcdCluster,
) -> None:
    """A call to a member nothing listens on: a read is sent again to the next member (it
    changes nothing) and served; a write fails (gRPC never sent it: no connection to send it
    on) and is not sent again; the next call goes to the next member, and succeeds. With no
    member answering, a read fails."""
    members = [f"127.0.0.1:{free_port()}", etcd.endpoints[0].removeprefix("http://")]
    with EtcdKv(members, None, 0, 1.0) as kv:
        assert kv.invoke(Invocation("read", "k")).outcome == OK
        assert kv.invoke(Invocation("write", "k", {"value": "v"})).outcome == OK
    with EtcdKv(members[:1], None, 0, 1.0) as kv:
        assert kv.invoke(Invocation("read", "k")).outcome == FAIL
    with EtcdKv(members, None, 0, 1.0) as kv:
        assert kv.invoke(Invocation("write", "k", {"value": "v"})).outcome == FAIL
        assert kv.invoke(Invocation("write", "k", {"value": "w"})).outcome == OK


def test_a_read_refused_as_every_endpoint_would_is_not_sent_again_and_the_history_has_no_marker() -> None:
    from scenarios.workload import read_again, repeated

    sent: list[str] = []

    def once(answer: Completion) -> Any:
        def call(op: Invocation) -> Completion:
            sent.append(op.kind)
            return answer

        return call

    denied = Completion(FAIL, {"code": "PERMISSION_DENIED", "error": "no"})
    assert read_again(once(denied), Invocation("read", "k"), tries=4, budget=5, final=repeated) is denied
    assert sent == ["read"] and "final" not in denied.result
    lost = Completion(FAIL, {"code": "UNAVAILABLE", "error": "gone"})
    assert read_again(once(lost), Invocation("read", "k"), tries=4, budget=5, final=repeated) is lost
    assert len(sent) == 5, "a read another endpoint may answer is sent again"
    relogin = Completion(FAIL, {"code": "UNAUTHENTICATED"})
    assert not repeated(relogin), "sent again after a new login"

"""The gRPC API through each mode's front door: the same store as the HTTP API, calls spread
per call over a service's nodes (behind Envoy or HAProxy), service nodes closed to
non-members.

    pytest scenarios/test_grpc.py --mode scaled
"""

from __future__ import annotations

import time
from dataclasses import replace

import grpc
import httpx
import pytest

from runtime.rpc import pb, pb_grpc
from scenarios import runner
from scenarios.catalogue import by_name
from scenarios.history import OK
from topologies import ContainerRun
from topologies.containers.node import Node


def unique(name: str) -> str:
    return f"{name}-{time.time_ns()}"


def _token(run: ContainerRun) -> tuple[tuple[str, str], ...]:
    with run.client() as api:
        return (("authorization", f"Bearer {api.login()}"),)


def test_grpc_and_http_are_one_store_through_every_grpc_front_door(run: ContainerRun) -> None:
    token = _token(run)
    assert run.grpc_endpoints, f"{run.mode} has a gRPC front door"
    with run.client() as api:
        api.login()
        for endpoint in run.grpc_endpoints:
            key = unique("grpc")
            with run.grpc_channel(endpoint) as channel:
                kv, queue = pb_grpc.KvStub(channel), pb_grpc.QueueStub(channel)
                written = kv.Put(pb.PutRequest(key=key, value=b"by grpc", if_revision=0), metadata=token, timeout=10)
                over_http = api.get(f"/v1/kv/{key}")
                assert over_http.content == b"by grpc" and over_http.headers["etag"] == f'"{written.revision}"'
                assert api.put(f"/v1/kv/{key}", content=b"by http").status_code == 200
                assert kv.Get(pb.GetRequest(key=key), metadata=token, timeout=10).value == b"by http"
                name = unique("gq")
                job = queue.Enqueue(pb.EnqueueRequest(queue=name, payload_json='{"n": 1}'), metadata=token, timeout=10)
                claimed = api.post(f"/v1/queue/{name}/claim").json()
                assert claimed["id"] == job.id and claimed["payload"] == {"n": 1}
                with pytest.raises(grpc.RpcError) as no_token:
                    kv.Get(pb.GetRequest(key=key), timeout=10)
                assert no_token.value.code() is grpc.StatusCode.UNAUTHENTICATED
                with pytest.raises(grpc.RpcError) as stale:
                    kv.Put(pb.PutRequest(key=key, value=b"x", if_revision=written.revision), metadata=token, timeout=10)
                assert stale.value.code() is grpc.StatusCode.FAILED_PRECONDITION


def _grpc_calls(run: ContainerRun, node: Node, token: str) -> int:
    """kv calls this node answered over gRPC, from its own /metrics."""
    headers = {"Authorization": f"Bearer {token}"}
    text = httpx.get(f"{node.url}/metrics", headers=headers, verify=run.tls_context(), timeout=5).text
    found = [
        line.rsplit(" ", 1)[1]
        for line in text.splitlines()
        if line.startswith("runtime_requests_total{")
        and all(label in line for label in ('method="GRPC"', 'route="kv.put"', 'status="OK"'))
    ]
    return int(sum(float(n) for n in found))


def test_calls_of_one_connection_are_spread_over_every_kv_node(run: ContainerRun) -> None:
    kv_nodes = [n for n in run.nodes if "kv" in n.services]
    if len(kv_nodes) < 2 or not (run.lb or any(n.spec.is_envoy for n in run.nodes)):
        pytest.skip(f"{run.mode}: no balancer in front of two kv nodes")
    token = _token(run)
    bearer = token[0][1].split(" ", 1)[1]
    before = {n.name: _grpc_calls(run, n, bearer) for n in kv_nodes}
    with run.grpc_channel() as channel:
        kv = pb_grpc.KvStub(channel)
        for i in range(60):
            kv.Put(pb.PutRequest(key=unique(f"spread-{i}"), value=b"v"), metadata=token, timeout=10)
    served = {n.name: _grpc_calls(run, n, bearer) - before[n.name] for n in kv_nodes}
    assert sum(served.values()) == 60 and min(served.values()) >= 10, served


def test_service_nodes_take_grpc_only_from_members(run: ContainerRun) -> None:
    behind = [n for n in run.nodes if "kv" in n.services and not n.spec.is_edge and n.grpc_target]
    if not behind:
        pytest.skip(f"{run.mode}: every kv node is an edge node")
    token = _token(run)
    with run.grpc_channel(behind[0].grpc_target) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            pb_grpc.KvStub(channel).Get(pb.GetRequest(key="k"), metadata=token, timeout=10)
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE  # no handshake without a member's certificate


def test_the_failover_runner_and_its_checkers_work_with_the_register_over_grpc(run: ContainerRun) -> None:
    """The workload protocol's gRPC clients (scenarios.workload.GrpcKv) drive the failover
    runner: a node killed where the mode has several (traffic alone in single), every check
    green on a history whose every register op was a gRPC call."""
    base = by_name("kill-random-node")
    scenario = replace(
        base,
        traffic=replace(base.traffic, workload="grpc"),
        modes=(run.mode,),
        cycles=0 if run.mode == "single" else 1,
        during_s=2.0,
    )
    result = runner.run(run, scenario)
    assert result.skipped is None, result.skipped
    assert not result.traffic_errors and not result.failing, (result.traffic_errors, result.failing)
    assert result.history is not None
    register = [op for op in result.history.ops if op.kind in ("read", "write", "cas", "delete", "final-read")]
    assert sum(op.outcome == OK for op in register) > 20, result.counts
    assert all(op.result.get("code") for op in register if op.outcome == OK)  # gRPC's answers, not HTTP's

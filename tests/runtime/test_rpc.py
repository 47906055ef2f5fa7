"""kv and queue over gRPC, against a real node process over TLS: the same operations,
authorization and errors as over HTTP, and the same data."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from runtime.routing import GRPC_METHODS, ROUTES, grpc_method
from runtime.rpc import pb, pb_grpc
from tests.conftest import RuntimeProcess

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def node() -> Iterator[RuntimeProcess]:
    with tempfile.TemporaryDirectory() as root:
        proc = RuntimeProcess(Path(root) / "node").start().wait_ready()
        try:
            yield proc
        finally:
            assert proc.terminate() == 0, proc.log_tail()  # the gRPC server stops with the node


@pytest.fixture(scope="module")
def channel(node: RuntimeProcess) -> Iterator[grpc.Channel]:
    credentials = grpc.ssl_channel_credentials(root_certificates=node.ca_file.read_bytes())
    with grpc.secure_channel(f"127.0.0.1:{node.grpc_port}", credentials) as made:
        yield made


@pytest.fixture(scope="module")
def admin(node: RuntimeProcess) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {node.login()}"),)


def _code(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    return caught.value.code()


def test_every_method_of_the_proto_is_in_the_route_table_and_back() -> None:
    in_proto = {
        f"/{service.full_name}/{method.name}"
        for service in pb.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    assert in_proto == {m.path for m in GRPC_METHODS}
    assert all(m.route in ROUTES for m in GRPC_METHODS)
    assert grpc_method("/modematrix.v1.Kv/Nope") is None


def test_kv_round_trip_with_revisions(channel: grpc.Channel, admin: tuple[tuple[str, str], ...]) -> None:
    kv = pb_grpc.KvStub(channel)
    first = kv.Put(pb.PutRequest(key="rpc/a", value=b"one", if_revision=0), metadata=admin)
    got = kv.Get(pb.GetRequest(key="rpc/a"), metadata=admin)
    assert (got.value, got.revision) == (b"one", first.revision)
    second = kv.Put(pb.PutRequest(key="rpc/a", value=b"two", if_revision=first.revision), metadata=admin)
    assert second.revision > first.revision
    with pytest.raises(grpc.RpcError) as stale:
        kv.Put(pb.PutRequest(key="rpc/a", value=b"lost", if_revision=first.revision), metadata=admin)
    assert stale.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert dict(stale.value.trailing_metadata())["modematrix-revision"] == str(second.revision)
    assert _code(lambda: kv.Put(pb.PutRequest(key="rpc/a", value=b"x", if_revision=0), metadata=admin)) is (
        grpc.StatusCode.FAILED_PRECONDITION
    )
    kv.Put(pb.PutRequest(key="rpc/b", value=b"b"), metadata=admin)
    listed = kv.List(pb.ListRequest(prefix="rpc/", limit=1), metadata=admin)
    assert [i.key for i in listed.items] == ["rpc/a"] and listed.next == "rpc/a"
    kv.Delete(pb.DeleteRequest(key="rpc/a"), metadata=admin)
    assert _code(lambda: kv.Get(pb.GetRequest(key="rpc/a"), metadata=admin)) is grpc.StatusCode.NOT_FOUND
    assert _code(lambda: kv.Delete(pb.DeleteRequest(key="rpc/a"), metadata=admin)) is grpc.StatusCode.NOT_FOUND


def test_grpc_and_http_see_the_same_data(
    node: RuntimeProcess, channel: grpc.Channel, admin: tuple[tuple[str, str], ...]
) -> None:
    kv = pb_grpc.KvStub(channel)
    written = kv.Put(pb.PutRequest(key="shared/one", value=b"from grpc"), metadata=admin)
    with node.client(admin[0][1].split(" ", 1)[1]) as http:
        reply = http.get("/v1/kv/shared/one")
        assert reply.content == b"from grpc" and reply.headers["etag"] == f'"{written.revision}"'
        http.put("/v1/kv/shared/two", content=b"from http")
    assert kv.Get(pb.GetRequest(key="shared/two"), metadata=admin).value == b"from http"


def test_bad_input_is_invalid_argument_and_changes_nothing(
    channel: grpc.Channel, admin: tuple[tuple[str, str], ...]
) -> None:
    kv, queue = pb_grpc.KvStub(channel), pb_grpc.QueueStub(channel)
    for request in (pb.PutRequest(key="", value=b"x"), pb.PutRequest(key="a\x00b", value=b"x")):
        assert _code(lambda r=request: kv.Put(r, metadata=admin)) is grpc.StatusCode.INVALID_ARGUMENT
    too_big = pb.PutRequest(key="big", value=b"x" * (1024 * 1024 + 1))
    assert _code(lambda: kv.Put(too_big, metadata=admin)) is grpc.StatusCode.INVALID_ARGUMENT
    assert _code(lambda: kv.Get(pb.GetRequest(key="big"), metadata=admin)) is grpc.StatusCode.NOT_FOUND
    assert _code(lambda: kv.List(pb.ListRequest(limit=5000), metadata=admin)) is grpc.StatusCode.INVALID_ARGUMENT
    assert _code(lambda: queue.Enqueue(pb.EnqueueRequest(queue="q", payload_json="{nope"), metadata=admin)) is (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    assert _code(lambda: queue.Enqueue(pb.EnqueueRequest(queue="bad name!", payload_json="1"), metadata=admin)) is (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    assert _code(lambda: queue.Claim(pb.ClaimRequest(queue="q", lease_seconds=-1), metadata=admin)) is (
        grpc.StatusCode.INVALID_ARGUMENT
    )


def test_tokens_and_permissions_as_over_http(node: RuntimeProcess, channel: grpc.Channel) -> None:
    kv = pb_grpc.KvStub(channel)
    assert _code(lambda: kv.Get(pb.GetRequest(key="k"))) is grpc.StatusCode.UNAUTHENTICATED
    forged = (("authorization", "Bearer not-a-token"),)
    assert _code(lambda: kv.Get(pb.GetRequest(key="k"), metadata=forged)) is grpc.StatusCode.UNAUTHENTICATED
    wrong_scheme = (("authorization", "Basic abc"),)
    assert _code(lambda: kv.Get(pb.GetRequest(key="k"), metadata=wrong_scheme)) is grpc.StatusCode.UNAUTHENTICATED
    with node.client(node.login()) as http:
        made = http.post(
            "/v1/auth/users", json={"username": "rpc-reader", "password": "long-enough", "roles": ["reader"]}
        )
        assert made.status_code == 201, made.text
    reader = (("authorization", f"Bearer {node.login('rpc-reader', 'long-enough')}"),)
    assert _code(lambda: kv.Get(pb.GetRequest(key="nothing"), metadata=reader)) is grpc.StatusCode.NOT_FOUND
    assert _code(lambda: kv.Put(pb.PutRequest(key="k", value=b"v"), metadata=reader)) is (
        grpc.StatusCode.PERMISSION_DENIED
    )


def test_queue_enqueue_claim_ack(channel: grpc.Channel, admin: tuple[tuple[str, str], ...]) -> None:
    queue = pb_grpc.QueueStub(channel)
    job = queue.Enqueue(pb.EnqueueRequest(queue="rpc-q", payload_json='{"n": 1}'), metadata=admin)
    claimed = queue.Claim(pb.ClaimRequest(queue="rpc-q", lease_seconds=30), metadata=admin)
    assert claimed.has_job and claimed.id == job.id and json.loads(claimed.payload_json) == {"n": 1}
    assert queue.GetJob(pb.JobRef(queue="rpc-q", id=job.id), metadata=admin).state == "claimed"
    assert not queue.Claim(pb.ClaimRequest(queue="rpc-q"), metadata=admin).has_job
    wrong = pb.AckRequest(queue="rpc-q", id=job.id, lease_id="0" * 16)
    assert _code(lambda: queue.Ack(wrong, metadata=admin)) is grpc.StatusCode.FAILED_PRECONDITION
    queue.Ack(pb.AckRequest(queue="rpc-q", id=job.id, lease_id=claimed.lease_id), metadata=admin)
    assert _code(lambda: queue.GetJob(pb.JobRef(queue="rpc-q", id=job.id), metadata=admin)) is (
        grpc.StatusCode.NOT_FOUND
    )


def test_calls_are_counted_in_metrics(
    node: RuntimeProcess, channel: grpc.Channel, admin: tuple[tuple[str, str], ...]
) -> None:
    pb_grpc.KvStub(channel).Put(pb.PutRequest(key="counted", value=b"1"), metadata=admin)
    with node.client(node.login()) as http:
        text = http.get("/metrics").text
    assert 'route="kv.put",status="OK"' in text.replace('method="GRPC",', "")


def test_a_token_of_a_key_not_loaded_yet_is_checked_again_on_the_loop() -> None:
    """gRPC calls are admitted in grpcio's threads, from the key store's cache; a token whose
    key this node has not loaded yet goes to the event loop, where the keys are reloaded."""
    import asyncio
    import threading

    from runtime.exceptions import InvalidToken
    from runtime.rpc.api import Gate
    from runtime.security import Principal

    class Keys:
        def __init__(self) -> None:
            self.fresh_on: list[str] = []

        def verify(self, token: str) -> Principal:
            raise InvalidToken(f"this node does not know the key of {token}")

        async def verify_fresh(self, token: str) -> Principal:
            self.fresh_on.append(threading.current_thread().name)
            return Principal("ann", ("reader",), 4e9)

    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, name="the loop", daemon=True)
    runner.start()
    try:
        keys = Keys()
        gate = Gate(keys, None, members_only=False, loop=loop)  # type: ignore[arg-type]
        assert gate.principal((("authorization", "Bearer t1"),)).username == "ann"
        assert keys.fresh_on == ["the loop"]
        with pytest.raises(InvalidToken, match="expected 'Bearer <token>'"):
            gate.principal((("authorization", "Basic x"),))
        with pytest.raises(InvalidToken, match="a bearer token is required"):
            gate.principal(())
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join(5)
        loop.close()


class _Context:
    """What a handler thread sees of a call: its headers, whether its caller is still there."""

    def __init__(self, active: bool) -> None:
        self.active = active
        self.aborted: tuple[grpc.StatusCode, str] | None = None
        self.callbacks: list[object] = []

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", "Bearer t"),)

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}

    def add_callback(self, callback: object) -> bool:
        self.callbacks.append(callback)
        return True

    def is_active(self) -> bool:
        return self.active

    def set_trailing_metadata(self, trailers: object) -> None: ...

    def abort(self, code: grpc.StatusCode, detail: str) -> None:
        self.aborted = (code, detail)
        raise Exception(detail)


@pytest.mark.parametrize(
    ("active", "code", "logged"), [(True, grpc.StatusCode.INTERNAL, True), (False, grpc.StatusCode.CANCELLED, False)]
)
def test_a_failed_call_is_answered_and_logged_unless_its_caller_is_gone(
    active: bool, code: grpc.StatusCode, logged: bool, caplog: pytest.LogCaptureFixture
) -> None:
    import asyncio
    import threading

    from runtime.metrics import Metrics
    from runtime.rpc.api import Gate
    from runtime.security import Principal

    class Keys:
        def verify(self, token: str) -> Principal:
            return Principal("ann", ("admin",), 4e9)

    async def boom(request: object) -> object:
        raise RuntimeError("a bug")

    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    try:
        gate = Gate(Keys(), Metrics(), members_only=False, loop=loop)  # type: ignore[arg-type]
        context = _Context(active)
        with pytest.raises(Exception, match=r"internal error|ended before its answer"):
            gate.serve("/modematrix.v1.Kv/Put", boom, iter([pb.PutRequest(key="k")]), context)
        assert context.aborted is not None and context.aborted[0] == code
        assert ("unhandled error" in caplog.text) is logged
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join(5)
        loop.close()

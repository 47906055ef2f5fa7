"""The simulated gRPC client: the HTTP user's mix (kv get, put, compare-and-swap; queue
enqueue, claim, ack) over ``modematrix.v1`` through the mode's gRPC front door.

grpcio does its I/O in C; :func:`grpc.experimental.gevent.init_gevent` makes it yield to
locust's gevent loop, so one process runs many gRPC users (without it, one user would block
every other). Each call is a locust request of type ``grpc``, counted by the same SLO.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.experimental.gevent as grpc_gevent
import httpx
from locust import User, between, task
from locust.env import Environment

from runtime.rpc import pb, pb_grpc

grpc_gevent.init_gevent()
T = TypeVar("T")
FINE = {grpc.StatusCode.OK}
TIMEOUT = 10.0


class GrpcRuntimeUser(User):
    """Logs in over HTTP once, then calls kv and queue over gRPC. Users are spread over the
    gRPC endpoints and move to the next one when a call reached no node (UNAVAILABLE)."""

    abstract = True
    wait_time = between(0.005, 0.05)
    keys = 200

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        options = environment.parsed_options
        self.targets: list[str] = list(getattr(options, "grpc_endpoints", None) or [])
        self.http = list(getattr(options, "endpoints", None) or [environment.host or ""])
        self.ca_file = getattr(options, "ca_file", "") or None
        self.password = getattr(options, "admin_password", "")
        self.prefix = f"load-grpc-{getattr(options, 'load_mode', 'run')}"
        self._target = random.randrange(max(1, len(self.targets)))
        self.metadata: tuple[tuple[str, str], ...] = ()
        self.channel: grpc.Channel | None = None

    def on_start(self) -> None:
        if not self.targets:
            raise RuntimeError("no gRPC endpoint: give --grpc-target, or --cluster-json of `modematrix up --json`")
        self.metadata = (("authorization", f"Bearer {self._login()}"),)
        self._connect()

    def _login(self) -> str:
        """A token from the first HTTP endpoint that answers (an HA client knows them all)."""
        refused: httpx.TransportError | None = None
        for endpoint in self.http:
            try:
                reply = httpx.post(
                    endpoint + "/v1/auth/login",
                    json={"username": "admin", "password": self.password},
                    verify=self.ca_file or True,
                    timeout=TIMEOUT,
                )
            except httpx.TransportError as exc:
                refused = exc
                continue
            reply.raise_for_status()
            return str(reply.json()["token"])
        raise refused or RuntimeError("no HTTP endpoint to log in at")

    def on_stop(self) -> None:
        if self.channel is not None:
            self.channel.close()

    def _connect(self) -> None:
        if self.channel is not None:
            self.channel.close()
        root = Path(self.ca_file).read_bytes() if self.ca_file else None
        credentials = grpc.ssl_channel_credentials(root_certificates=root)
        self.channel = grpc.secure_channel(self.targets[self._target % len(self.targets)], credentials)
        self.kv, self.queue = pb_grpc.KvStub(self.channel), pb_grpc.QueueStub(self.channel)

    def call(self, name: str, send: Callable[[], T], fine: frozenset[grpc.StatusCode] = frozenset(FINE)) -> T | None:
        """Send one call and report it to locust; codes in ``fine`` are correct answers."""
        started = time.perf_counter()
        result: T | None = None
        error: BaseException | None = None
        try:
            result = send()
        except grpc.RpcError as exc:
            code = exc.code()
            if code not in fine:
                error = exc
            if code is grpc.StatusCode.UNAVAILABLE and len(self.targets) > 1:
                self._target += 1  # nothing was applied: the next call goes to the next door
                self._connect()
        report(self.environment, name, started, error)
        return result

    def key(self) -> str:
        return f"{self.prefix}/{random.randrange(self.keys)}"

    def _get(self, key: str) -> Any:
        return self.kv.Get(pb.GetRequest(key=key), metadata=self.metadata, timeout=TIMEOUT)

    @task(50)
    def kv_get(self) -> None:
        self.call("Kv/Get", lambda: self._get(self.key()), frozenset({grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND}))

    @task(15)
    def kv_put(self) -> None:
        request = pb.PutRequest(key=self.key(), value=random.randbytes(32))
        self.call("Kv/Put", lambda: self.kv.Put(request, metadata=self.metadata, timeout=TIMEOUT))

    @task(8)
    def kv_cas(self) -> None:
        key = self.key()
        found = self.call(
            "Kv/Get (cas)", lambda: self._get(key), frozenset({grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND})
        )
        request = pb.PutRequest(key=key, value=b"cas", if_revision=found.revision if found is not None else 0)
        losing_a_race_is_correct = frozenset({grpc.StatusCode.OK, grpc.StatusCode.FAILED_PRECONDITION})
        self.call(
            "Kv/Put if_revision",
            lambda: self.kv.Put(request, metadata=self.metadata, timeout=TIMEOUT),
            losing_a_race_is_correct,
        )

    @task(6)
    def enqueue(self) -> None:
        request = pb.EnqueueRequest(queue=self.prefix, payload_json=json.dumps({"t": time.time()}))
        self.call("Queue/Enqueue", lambda: self.queue.Enqueue(request, metadata=self.metadata, timeout=TIMEOUT))

    @task(6)
    def claim_and_ack(self) -> None:
        request = pb.ClaimRequest(queue=self.prefix, lease_seconds=30)
        claimed = self.call("Queue/Claim", lambda: self.queue.Claim(request, metadata=self.metadata, timeout=TIMEOUT))
        if claimed is None or not claimed.has_job:
            return
        ack = pb.AckRequest(queue=self.prefix, id=claimed.id, lease_id=claimed.lease_id)
        self.call("Queue/Ack", lambda: self.queue.Ack(ack, metadata=self.metadata, timeout=TIMEOUT))


def report(environment: Environment, name: str, started: float, error: BaseException | None) -> None:
    """One gRPC call into locust's statistics: its name, its time since ``started`` (a
    ``time.perf_counter()``) and its error, if it failed."""
    environment.events.request.fire(
        request_type="grpc",
        name=name,
        response_time=(time.perf_counter() - started) * 1000,
        response_length=0,
        exception=error,
        context={},
    )

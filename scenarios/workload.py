"""The workload protocol: what the traffic, the checkers and the report need of a service's
register (a key-value store with compare-and-set), in the shape of Jepsen's clients.

    workload = WORKLOADS["grpc"]                  # or "http"
    with workload.client(run, index=0, timeout=6.0) as register:
        done = register.invoke(Invocation("cas", "k1", {"value": "c0-1", "expected": 0}))
        done.outcome                              # ok | fail | unknown (Jepsen's :info)

A :class:`Workload` opens clients of a run (``setup`` and ``teardown`` are the client's own
``__enter__`` and ``__exit__``); a :class:`Register` turns one :class:`Invocation` into one
:class:`Completion`, and nothing else: the traffic times and records it (an
:class:`scenarios.history.Op`), and the checkers read only those records. So a service is
checked by writing its two classes, not by touching the checkers.

The operations, and what a completion carries:

=========  ===========================  ==================================================
kind       args                         result when ok
=========  ===========================  ==================================================
read       -                            ``value`` (None: absent), ``revision``
write      ``value``                    ``revision``
cas        ``value``, ``expected``      ``revision``; ``expected`` 0: only if absent
delete     -                            ``deleted``
=========  ===========================  ==================================================

``fail`` means the service says nothing was applied; ``unknown``, that it may have been.
A read changes nothing, so a register sends a read that did not complete to its next
endpoint, within its timeout (:func:`read_again`): the history records it once, from its
first call to its last answer, which covers every try. A change is sent once.
Four implementations here: the runtime's two APIs (:class:`HttpKv`, :class:`GrpcKv`),
etcd's own KV API straight to a run's members (:class:`EtcdKv`), and Redis through its
Sentinels (:class:`RedisKv`): stores this project did not write, checked by the same checkers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, Self

import grpc
import httpx
from aetcd import rpc

from runtime.rpc import pb, pb_grpc
from scenarios.history import FAIL, OK, UNKNOWN
from topologies import ClusterClient, ContainerRun, Run, retry
from topologies.constants import DB_CLIENT_PORT
from topologies.containers.service import ServiceRun
from topologies.kubernetes.service import ServiceKubeRun
from topologies.pki import RunPki
from topologies.retry import Outcome

KINDS = ("read", "write", "cas", "delete")
READS = ("read", "final-read")


@dataclass(frozen=True)
class Invocation:
    kind: str  # one of KINDS, or "final-read" (a read after the faults, for the checkers)
    key: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Completion:
    outcome: str  # OK, FAIL or UNKNOWN
    result: dict[str, Any] = field(default_factory=dict)


class Register(Protocol):
    """One client of the service's register, used by one thread."""

    def invoke(self, op: Invocation) -> Completion: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


class Workload(Protocol):
    """Opens clients of a run; ``index`` spreads them over the run's endpoints."""

    @property
    def name(self) -> str: ...

    @property
    def queue(self) -> bool:
        """The service is the runtime, whose queue the traffic also drives (over HTTP)."""
        ...

    def client(self, run: Run, *, index: int, timeout: float) -> Register: ...


def read_again(
    once: Callable[[Invocation], Completion],
    op: Invocation,
    *,
    tries: int,
    budget: float,
    final: Callable[[Completion], bool] = lambda done: False,
) -> Completion:
    """``once(op)``, and for a read that did not complete, again (``once`` has moved on to
    its next endpoint), up to ``tries`` calls in all and while ``budget`` seconds last. A
    refusal that another endpoint would repeat (``final`` says which) is not sent again.

    >>> answers = iter([Completion(UNKNOWN), Completion(OK, {"value": "v"})])
    >>> read_again(lambda op: next(answers), Invocation("read", "k"), tries=2, budget=5).result
    {'value': 'v'}
    >>> read_again(lambda op: Completion(UNKNOWN), Invocation("write", "k"), tries=2, budget=5).outcome
    'unknown'
    """
    ends = time.monotonic() + budget
    done = once(op)
    for _ in range(tries - 1 if op.kind in READS else 0):
        if done.outcome == OK or final(done) or time.monotonic() >= ends:
            break
        done = once(op)
    return done


# -- the runtime's HTTP API ---------------------------------------------------------------------


def classify(
    kind: str, call: Callable[[], httpx.Response], parse: Callable[[httpx.Response], dict[str, Any]]
) -> Completion:
    """Run one HTTP call of the runtime and say what it means for the history."""
    try:
        reply = call()
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        return Completion(FAIL, {"error": type(exc).__name__})  # no endpoint took the connection: nothing sent
    except httpx.HTTPError as exc:
        return Completion(UNKNOWN, {"error": type(exc).__name__})
    status = reply.status_code
    if status in (200, 201, 204):
        return Completion(OK, {"status": status, **parse(reply)})
    if status == 404 and kind in READS:
        return Completion(OK, {"status": 404, "value": None})
    if status == 404 and kind == "delete":
        return Completion(OK, {"status": 404, "deleted": False})
    if status == 404 and kind == "final-state":
        return Completion(OK, {"status": 404, "state": None})  # observed: no such job
    if status == 503 and retry.of_reply(status, reply.text) is Outcome.REFUSED:
        return Completion(FAIL, {"status": status, "error": reply.text[:200]})  # the runtime applied nothing
    if status == 507:
        return Completion(FAIL, {"status": status, "error": reply.text[:200]})  # a full disk: rolled back
    if status >= 500:
        return Completion(UNKNOWN, {"status": status, "error": reply.text[:200]})
    return Completion(FAIL, {"status": status, "error": reply.text[:200]})


def _revision(reply: httpx.Response) -> dict[str, Any]:
    return {"revision": int(reply.json()["revision"])}


def _read(reply: httpx.Response) -> dict[str, Any]:
    return {"value": reply.content.decode(), "revision": int(reply.headers["etag"].strip('"'))}


class HttpKv:
    """The runtime's ``/v1/kv`` through the run's front door (:class:`ClusterClient`: it moves
    to the next endpoint when one does not answer, sends a read again there, and never sends
    a write twice)."""

    def __init__(self, api: ClusterClient) -> None:
        self.api = api

    def invoke(self, op: Invocation) -> Completion:
        path, value = f"/v1/kv/{op.key}", str(op.args.get("value", ""))
        if op.kind in READS:  # sent again at the next endpoint, within the client's budget
            return classify(op.kind, lambda: self.api.get(path, resend=True), _read)
        if op.kind == "write":
            return classify(op.kind, lambda: self.api.put(path, content=value.encode()), _revision)
        if op.kind == "cas":
            expected = int(op.args["expected"])
            header = {"If-Match": str(expected)} if expected else {"If-None-Match": "*"}
            return classify(op.kind, lambda: self.api.put(path, content=value.encode(), headers=header), _revision)
        if op.kind == "delete":
            return classify(op.kind, lambda: self.api.delete(path), lambda _: {"deleted": True})
        raise ValueError(f"no operation {op.kind!r}; expected one of {', '.join(KINDS)}")

    def __enter__(self) -> Self:
        self.api.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.api.__exit__(*exc)


@dataclass(frozen=True)
class Http:
    name: str = "http"
    queue: bool = True

    def client(self, run: Run, *, index: int, timeout: float) -> HttpKv:
        return HttpKv(run.client(timeout=timeout, first=index, resend_idempotent=False))


# -- the runtime's gRPC API ---------------------------------------------------------------------

# what a gRPC status means for the history; UNAVAILABLE says not_applied when the runtime sent
# it, and is also what a broken connection gives (which may have carried the call): unknown
REFUSED_CODES = {grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT}
REFUSED_CODES |= {grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED}
REFUSED_CODES |= {grpc.StatusCode.RESOURCE_EXHAUSTED}  # a full disk: rolled back
# a refusal every endpoint would repeat: not sent again (UNAUTHENTICATED is, after a new login)
REPEATED = frozenset(code.name for code in REFUSED_CODES - {grpc.StatusCode.UNAUTHENTICATED})


def repeated(done: Completion) -> bool:
    """A refusal another endpoint would give too (:data:`REPEATED`)."""
    return done.outcome != OK and done.result.get("code") in REPEATED


def never_sent(error: grpc.RpcError) -> bool:
    """The call failed at the channel's pick, before any connection carried it: gRPC fails a
    call "fast" when its channel is in TRANSIENT_FAILURE, unable to transmit it (gRPC's
    wait-for-ready semantics, doc/wait-for-ready.md), and says "failed to connect to all
    addresses". A connection that broke after the call was sent says something else: unknown.

    >>> class Refused(grpc.RpcError):
    ...     def code(self): return grpc.StatusCode.UNAVAILABLE
    ...     def details(self): return "failed to connect to all addresses; last error: Connection refused"
    >>> never_sent(Refused())
    True
    """
    return error.code() is grpc.StatusCode.UNAVAILABLE and (error.details() or "").startswith(
        "failed to connect to all addresses"
    )


def grpc_completion(kind: str, error: grpc.RpcError) -> Completion:
    """What a failed gRPC call of the runtime means for the history."""
    code, detail = error.code(), error.details() or ""
    found = {"code": code.name, "error": detail[:200]}
    if code is grpc.StatusCode.NOT_FOUND and kind in READS:
        return Completion(OK, {"code": code.name, "value": None})
    if code is grpc.StatusCode.NOT_FOUND and kind == "delete":
        return Completion(OK, {"code": code.name, "deleted": False})
    if code in REFUSED_CODES or (code is grpc.StatusCode.UNAVAILABLE and detail.startswith("not_applied")):
        return Completion(FAIL, found)
    if never_sent(error):
        return Completion(FAIL, found)
    return Completion(UNKNOWN, found)


class Channels:
    """One gRPC channel at a time, to one of ``endpoints``: ``next()`` closes it and moves on
    to the next endpoint, as a client that knows every address does after a call that did not
    complete."""

    def __init__(self, endpoints: list[str], index: int, connect: Callable[[str], grpc.Channel]) -> None:
        self.endpoints, self._connect = endpoints, connect
        self._at = index % len(endpoints)
        self._channel: grpc.Channel | None = None

    def current(self) -> grpc.Channel:
        if self._channel is None:
            self._channel = self._connect(self.endpoints[self._at])
        return self._channel

    def next(self) -> None:
        self.close()
        self._at = (self._at + 1) % len(self.endpoints)

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
        self._channel = None


class GrpcKv:
    """The runtime's ``Kv`` service over gRPC, to one of the run's gRPC endpoints at a time:
    after a call that did not complete it moves to the next (as an HA client that knows every
    address does), and logs in again (over HTTP) when its token is refused."""

    def __init__(self, run: Run, index: int, timeout: float) -> None:
        self.run, self.timeout = run, timeout
        self.endpoints = list(run.grpc_endpoints)
        if not self.endpoints:
            raise ValueError(f"run {run.run_id} ({run.mode}): no gRPC endpoint reaches its front door")
        self.channels = Channels(self.endpoints, index, run.grpc_channel)
        self._login = run.client(timeout=timeout, first=index)
        self._token = ""

    def _stub(self) -> pb_grpc.KvStub:
        return pb_grpc.KvStub(self.channels.current())

    def invoke(self, op: Invocation) -> Completion:
        return read_again(self._once, op, tries=2 * len(self.endpoints), budget=self.timeout, final=repeated)

    def _once(self, op: Invocation) -> Completion:
        if not self._token:
            try:
                self._token = self._login.login()
            except httpx.HTTPError as exc:  # no call was made: nothing applied
                return Completion(FAIL, {"error": f"login: {type(exc).__name__}"})
        try:
            return self._call(self._stub(), op, (("authorization", f"Bearer {self._token}"),))
        except grpc.RpcError as exc:
            done = grpc_completion(op.kind, exc)
            if exc.code() is grpc.StatusCode.UNAUTHENTICATED:
                self._token = ""  # logs in again, and a read is sent again
            elif done.outcome != OK and exc.code() not in REFUSED_CODES:
                self.channels.next()
            return done

    def _call(self, kv: pb_grpc.KvStub, op: Invocation, token: tuple[tuple[str, str], ...]) -> Completion:
        value = str(op.args.get("value", "")).encode()
        if op.kind in READS:
            entry = kv.Get(pb.GetRequest(key=op.key), metadata=token, timeout=self.timeout)
            return Completion(OK, {"code": "OK", "value": entry.value.decode(), "revision": entry.revision})
        if op.kind == "write":
            put = kv.Put(pb.PutRequest(key=op.key, value=value), metadata=token, timeout=self.timeout)
            return Completion(OK, {"code": "OK", "revision": put.revision})
        if op.kind == "cas":
            request = pb.PutRequest(key=op.key, value=value, if_revision=int(op.args["expected"]))
            put = kv.Put(request, metadata=token, timeout=self.timeout)
            return Completion(OK, {"code": "OK", "revision": put.revision})
        if op.kind == "delete":
            kv.Delete(pb.DeleteRequest(key=op.key), metadata=token, timeout=self.timeout)
            return Completion(OK, {"code": "OK", "deleted": True})
        raise ValueError(f"no operation {op.kind!r}; expected one of {', '.join(KINDS)}")

    def __enter__(self) -> Self:
        self._login.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.channels.close()
        self._login.__exit__(*exc)


@dataclass(frozen=True)
class Grpc:
    name: str = "grpc"
    queue: bool = True

    def client(self, run: Run, *, index: int, timeout: float) -> GrpcKv:
        return GrpcKv(run, index, timeout)


# -- etcd's own KV API: a service nobody here wrote ------------------------------------------

ETCD_PREFIX = "/modematrix-workload/"  # beside the runtime's namespaces, which it never touches


class EtcdKv:
    """etcd's KV service over its gRPC API, straight to the run's etcd members (not through
    the runtime), as root (a certificate of the run's CA): the same checkers, on a store this
    project did not write. A read is linearizable (etcd's default); a compare-and-set is a
    transaction on the key's ``mod_revision`` (0: absent), the revision a read returns and a
    write answers with (the store's revision after it). After a call that did not complete
    it moves to the next member, as etcd's own clients do."""

    def __init__(
        self, endpoints: list[str], credentials: grpc.ChannelCredentials | None, index: int, timeout: float
    ) -> None:
        self.endpoints, self._credentials, self.timeout = endpoints, credentials, timeout
        self.channels = Channels(endpoints, index, self._connect)

    def _connect(self, target: str) -> grpc.Channel:
        if self._credentials is None:
            return grpc.insecure_channel(target)
        return grpc.secure_channel(target, self._credentials)

    def _kv(self) -> rpc.KVStub:
        return rpc.KVStub(self.channels.current())

    def invoke(self, op: Invocation) -> Completion:
        return read_again(self._once, op, tries=2 * len(self.endpoints), budget=self.timeout, final=repeated)

    def _once(self, op: Invocation) -> Completion:
        try:
            return self._call(self._kv(), op, (ETCD_PREFIX + op.key).encode())
        except grpc.RpcError as exc:
            self.channels.next()
            code = exc.code()
            found = {"code": code.name, "error": (exc.details() or "")[:200]}
            # a read changes nothing: failed; a change that did not complete may have been applied
            refused = code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT)
            if refused:
                return Completion(FAIL, found)
            return Completion(FAIL if op.kind in READS or never_sent(exc) else UNKNOWN, found)

    def _call(self, kv: rpc.KVStub, op: Invocation, key: bytes) -> Completion:
        value = str(op.args.get("value", "")).encode()
        if op.kind in READS:
            found = kv.Range(rpc.RangeRequest(key=key), timeout=self.timeout)
            if not found.kvs:
                return Completion(OK, {"code": "OK", "value": None})
            return Completion(
                OK, {"code": "OK", "value": found.kvs[0].value.decode(), "revision": found.kvs[0].mod_revision}
            )
        if op.kind == "write":
            put = kv.Put(rpc.PutRequest(key=key, value=value), timeout=self.timeout)
            return Completion(OK, {"code": "OK", "revision": put.header.revision})
        if op.kind == "cas":
            same = rpc.Compare(
                key=key,
                target=rpc.Compare.CompareTarget.MOD,
                result=rpc.Compare.CompareResult.EQUAL,
                mod_revision=int(op.args["expected"]),
            )
            write = rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value))
            done = kv.Txn(rpc.TxnRequest(compare=[same], success=[write]), timeout=self.timeout)
            if not done.succeeded:
                return Completion(FAIL, {"code": "OK", "error": "compare failed: the revision moved"})
            return Completion(OK, {"code": "OK", "revision": done.header.revision})
        if op.kind == "delete":
            deleted = kv.DeleteRange(rpc.DeleteRangeRequest(key=key), timeout=self.timeout)
            return Completion(OK, {"code": "OK", "deleted": deleted.deleted > 0})
        raise ValueError(f"no operation {op.kind!r}; expected one of {', '.join(KINDS)}")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.channels.close()


@dataclass(frozen=True)
class Etcd:
    """Clients of a container run's etcd members (ha, scaled), as root over TLS; or of etcd
    alone (a :class:`ServiceRun` of ``services/etcd.yaml``), each member's client port."""

    name: str = "etcd"
    queue: bool = False

    def client(self, run: Run, *, index: int, timeout: float) -> EtcdKv:
        if isinstance(run, ServiceRun | ServiceKubeRun):  # etcd alone (services/etcd.yaml): plain gRPC
            return EtcdKv([e.split("://", 1)[1] for e in run.endpoints], None, index, timeout)
        if not isinstance(run, ContainerRun) or run.spec.db != "etcd" or not run.spec.members:
            raise ValueError(f"the etcd workload needs a container mode with etcd members (ha, scaled), not {run.mode}")
        endpoints = [f"{run.node(m.name).ip}:{DB_CLIENT_PORT}" for m in run.spec.members]
        root = RunPki.load(run.workdir).root()
        cert, key = root.pairs["node"]
        return EtcdKv(endpoints, grpc.ssl_channel_credentials(root.ca_pem, key, cert), index, timeout)


# -- Redis, through its Sentinels -----------------------------------------------------------------

# a register per key as a hash {value, rev}: rev counts the key's writes, so a read shows which
# write it saw and a compare-and-set compares it (0: absent); each a script, atomic in Redis
_WRITE = "local r = redis.call('HINCRBY', KEYS[1], 'rev', 1) redis.call('HSET', KEYS[1], 'value', ARGV[1]) return r"
_CAS = (
    "if tonumber(redis.call('HGET', KEYS[1], 'rev') or '0') ~= tonumber(ARGV[2]) then return -1 end "
    "local r = redis.call('HINCRBY', KEYS[1], 'rev', 1) redis.call('HSET', KEYS[1], 'value', ARGV[1]) return r"
)
REDIS_PREFIX = "modematrix-register/"
PRIMARY = "primary"  # the name the Sentinels monitor it by (images/services/redis/member.sh)


class RedisKv:
    """A register on Redis, its primary found through the Sentinels as redis-py's Sentinel
    client finds it (asked again on each new connection, and after a connection fails). A
    read is ``HMGET``; a write and a compare-and-set are Lua scripts that bump the key's own
    revision. A call refused by Redis (a replica's READONLY, no primary known) is fail; a
    connection lost or a timeout after the call was sent is unknown."""

    def __init__(self, sentinels: list[tuple[str, int]], timeout: float) -> None:
        from redis import Redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
        from redis.sentinel import Sentinel

        self.timeout = timeout
        self._sentinel = Sentinel(sentinels, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._primary: Redis = self._sentinel.master_for(
            PRIMARY, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0)
        )

    def invoke(self, op: Invocation) -> Completion:
        return read_again(self._once, op, tries=3, budget=self.timeout)

    def _once(self, op: Invocation) -> Completion:
        from redis import exceptions
        from redis.sentinel import MasterNotFoundError

        key = REDIS_PREFIX + op.key
        try:
            return self._call(op, key)
        except (exceptions.ReadOnlyError, exceptions.ResponseError) as exc:  # refused: nothing applied
            return Completion(FAIL, {"error": f"{type(exc).__name__}: {exc}"[:200]})
        except exceptions.ConnectionError as exc:
            nothing_sent = isinstance(exc, MasterNotFoundError) or "Connection refused" in str(exc)
            outcome = FAIL if op.kind in READS or nothing_sent else UNKNOWN
            return Completion(outcome, {"error": f"{type(exc).__name__}: {exc}"[:200]})
        except exceptions.TimeoutError as exc:
            return Completion(FAIL if op.kind in READS else UNKNOWN, {"error": f"TimeoutError: {exc}"[:200]})

    def _call(self, op: Invocation, key: str) -> Completion:
        primary = self._primary
        if op.kind in READS:
            value, revision = primary.hmget(key, ["value", "rev"])
            if value is None:
                return Completion(OK, {"value": None})
            return Completion(OK, {"value": _text(value), "revision": int(_text(revision))})
        if op.kind == "write":
            return Completion(OK, {"revision": int(primary.eval(_WRITE, 1, key, str(op.args["value"])))})
        if op.kind == "cas":
            done = int(primary.eval(_CAS, 1, key, str(op.args["value"]), int(op.args["expected"])))
            if done < 0:
                return Completion(FAIL, {"error": "compare failed: the revision moved"})
            return Completion(OK, {"revision": done})
        if op.kind == "delete":
            return Completion(OK, {"deleted": primary.delete(key) > 0})
        raise ValueError(f"no operation {op.kind!r}; expected one of {', '.join(KINDS)}")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self._primary.close()
        for sentinel in self._sentinel.sentinels:
            sentinel.close()


def _text(found: bytes | str | None) -> str:
    return found.decode() if isinstance(found, bytes) else str(found)


@dataclass(frozen=True)
class RedisSentinel:
    """Clients of a service run whose client port is its Sentinels' (redis-sentinel.yaml)."""

    name: str = "redis"
    queue: bool = False

    def client(self, run: Run, *, index: int, timeout: float) -> RedisKv:
        if not isinstance(run, ServiceRun):
            raise ValueError(f"the redis workload needs a service run of redis-sentinel.yaml on Docker, not {run.mode}")
        doors = [e.split("://", 1)[1].rsplit(":", 1) for e in run.endpoints]
        sentinels = [(host, int(port)) for host, port in doors]
        return RedisKv(sentinels[index % len(sentinels) :] + sentinels[: index % len(sentinels)], timeout)


WORKLOADS: dict[str, Workload] = {"http": Http(), "grpc": Grpc(), "etcd": Etcd(), "redis": RedisSentinel()}


ENTRY_POINTS = "modematrix.workloads"  # a package's own registers: name = "pkg.module:Workload"


def known() -> dict[str, Workload]:
    """Every workload: the ones here, and those installed packages declare in the
    ``modematrix.workloads`` entry point group (a service's register, without a change here)."""
    from importlib.metadata import entry_points

    found = dict(WORKLOADS)
    for entry in entry_points(group=ENTRY_POINTS):
        found.setdefault(entry.name, entry.load()())
    return found


def workload(name: str) -> Workload:
    """The workload called ``name``; ValueError naming the known ones."""
    found = WORKLOADS if name in WORKLOADS else known()
    if name not in found:
        raise ValueError(f"no workload {name!r}; expected one of {', '.join(found)}")
    return found[name]

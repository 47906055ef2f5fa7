"""etcd v3 over its native gRPC API, with failover across members.

The stubs are aetcd's generated ones (``aetcd.rpc``); the channels are our own ``grpc.aio``
channels, one per member, with keepalive, so a dead member is noticed without a request
waiting on it. Every call carries a deadline and etcd's ``hasleader`` metadata: a member
without a leader refuses at once ("etcdserver: no leader") instead of holding the request.

Every key is stored as ``/modematrix/<namespace>/<key>``. Reads are linearizable (etcd's
default). When to try another member is :func:`runtime.retry.may_retry`, reads idempotent:

- the connection was never made, or the member refused before proposing (no leader): any
  operation moves on, and when every member refused it waits a moment and goes round again,
  until the operation's deadline;
- anything else after the request left (deadline, reset, "request timed out"): a read moves
  on; a write raises ``StorageUnavailable(applied=None)``: it may or may not have been applied.

Within ``deadline`` seconds every call returns or raises: nothing waits longer.

With ``https://`` endpoints the link is TLS both ways: the member's certificate is checked
against the cluster CA, and this node presents its own, whose common name etcd takes as the
DB user (roles per service, :mod:`runtime.storage.etcd_auth`). :meth:`EtcdBackend.reconnect`
opens new channels with renewed files and retires the old ones once their calls are done.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import grpc.aio
from aetcd import rpc

from runtime.exceptions import Conflict, StorageUnavailable
from runtime.retry import Outcome, may_retry
from runtime.storage.base import Entry, prefix_end, range_start

ROOT = "/modematrix/"
MAX_REVISION = 2**63 - 1  # etcd revisions are int64
PING_KEY = f"{ROOT}_cluster/signing-keys".encode()
_DENIED = (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)
REQUIRE_LEADER = (("hasleader", "true"),)  # etcd's rpctypes.MetadataRequireLeaderKey
_REFUSED_BEFORE_PROPOSAL = ("etcdserver: no leader", "etcdserver: not capable")
_AUTH_CHANGED = "etcdserver: revision of auth store is old"  # users or roles changed meanwhile
_NOT_CONNECTED = ("failed to connect to all addresses", "connection refused", "no route to host")
_ROUND_PAUSE = 0.05  # between rounds in which every member refused: an election takes ~1 s
_CHANNEL_OPTIONS = (
    ("grpc.keepalive_time_ms", 5_000),
    ("grpc.keepalive_timeout_ms", 2_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
    ("grpc.min_reconnect_backoff_ms", 100),
)


@dataclass(frozen=True)
class ClientTls:
    """Files read at every (re)connect, so a renewed certificate is picked up."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_file.read_bytes(),
            private_key=self.key_file.read_bytes(),
            certificate_chain=self.cert_file.read_bytes(),
        )


@dataclass
class _Member:
    target: str
    channel: grpc.aio.Channel
    kv: Any  # aetcd.rpc.KVStub: generated, untyped
    watch: Any  # aetcd.rpc.WatchStub
    lease: Any  # aetcd.rpc.LeaseStub


def _target(endpoint: str) -> str:
    """``https://10.0.0.5:2379`` -> ``10.0.0.5:2379``."""
    parts = urlsplit(endpoint if "//" in endpoint else f"//{endpoint}")
    if not parts.hostname or not parts.port:
        raise ValueError(f"etcd endpoint {endpoint!r}: expected https://HOST:PORT")
    return f"{parts.hostname}:{parts.port}"


def uses_tls(endpoints: list[str]) -> bool:
    """True if every endpoint is ``https://``; a mix is refused."""
    schemes = {urlsplit(e).scheme or "http" for e in endpoints}
    if len(schemes) > 1:
        raise ValueError(f"etcd endpoints mix schemes {sorted(schemes)}; expected all https:// (or all http://)")
    return schemes == {"https"}


class EtcdBackend:
    name = "etcd"

    def __init__(self, endpoints: list[str], *, deadline: float = 1.8, tls: ClientTls | None = None) -> None:
        if not endpoints:
            raise ValueError("EtcdBackend needs at least one endpoint")
        if uses_tls(endpoints) and tls is None:
            raise ValueError("https:// etcd endpoints need this node's certificate files (ClientTls)")
        self.targets = [_target(e) for e in endpoints]
        self.deadline, self.tls = deadline, tls if uses_tls(endpoints) else None
        self._current = 0
        self._members: list[_Member] = []
        self._retiring: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        self._members = self._connect()

    def _connect(self) -> list[_Member]:
        members = []
        credentials = self.tls.credentials() if self.tls is not None else None
        for target in self.targets:
            if credentials is None:
                channel = grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS)
            else:
                channel = grpc.aio.secure_channel(target, credentials, options=_CHANNEL_OPTIONS)
            stubs = (rpc.KVStub(channel), rpc.WatchStub(channel), rpc.LeaseStub(channel))
            members.append(_Member(target, channel, *stubs))
        return members

    async def reconnect(self) -> None:
        """New channels from the certificate files as they are now; the old ones close once
        every call on them has had its deadline."""
        old, self._members = self._members, self._connect()

        async def retire() -> None:
            await asyncio.sleep(self.deadline + 0.5)
            await asyncio.gather(*(m.channel.close() for m in old), return_exceptions=True)

        task = asyncio.ensure_future(retire())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def close(self) -> None:
        members, self._members = self._members, []
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*(m.channel.close() for m in members), return_exceptions=True)

    async def ping(self) -> None:
        """A linearizable read of one key every DB user may read."""
        await self._call("Range", rpc.RangeRequest(key=PING_KEY, count_only=True), write=False)

    async def get(self, ns: str, key: str) -> Entry | None:
        reply = await self._call("Range", rpc.RangeRequest(key=self._full(ns, key)), write=False)
        return self._entry(ns, reply.kvs[0]) if reply.kvs else None

    async def put(self, ns: str, key: str, value: bytes, if_revision: int | None) -> int:
        full = self._full(ns, key)
        request = rpc.PutRequest(key=full, value=value)
        if if_revision is None:
            reply = await self._call("Put", request, write=True)
        else:
            reply = await self._txn(full, if_revision, rpc.RequestOp(request_put=request))
        return int(reply.header.revision)

    async def delete(self, ns: str, key: str, if_revision: int | None) -> bool:
        full = self._full(ns, key)
        request = rpc.DeleteRangeRequest(key=full)
        if if_revision is None:
            reply = await self._call("DeleteRange", request, write=True)
            return int(reply.deleted) > 0
        txn = await self._txn(full, if_revision, rpc.RequestOp(request_delete_range=request))
        return int(txn.responses[0].response_delete_range.deleted) > 0

    async def range(
        self, ns: str, prefix: str, after: str | None, limit: int, *, keys_only: bool = False
    ) -> list[Entry]:
        base = self._full(ns, "")
        start = base + range_start(prefix, after)
        end = prefix_end(base + prefix.encode()) or b"\x00"
        request = rpc.RangeRequest(key=start, range_end=end, limit=limit, keys_only=keys_only)
        reply = await self._call("Range", request, write=False)
        return [self._entry(ns, kv) for kv in reply.kvs]

    async def changes(self, ns: str, key: str, *, whole_prefix: bool = False) -> AsyncIterator[None]:
        """etcd's watch on one key (or every key under it), on one member at a time; on a
        broken stream the next member, waking once on every (re)connect because an event may
        have been missed."""
        full = self._full(ns, key)
        end = (prefix_end(full) or b"\x00") if whole_prefix else b""
        failures = 0
        while self._members:
            member = self._members[(self._current + failures) % len(self._members)]
            try:
                async for _ in self._watch(member, full, end):
                    failures = 0
                    yield
            except grpc.aio.AioRpcError:
                failures += 1
            await asyncio.sleep(min(2.0, 0.1 * failures))

    async def watch(self, ns: str, prefix: str) -> AsyncIterator[Sequence[str] | None]:
        """etcd's watch on every key under ``prefix``, saying which changed; on a broken
        stream the next member, and None (read all again: events may have been missed)."""
        full = self._full(ns, prefix)
        end = prefix_end(full) or b"\x00"
        base = len(self._full(ns, ""))
        failures = 0
        while self._members:
            member = self._members[(self._current + failures) % len(self._members)]
            try:
                async for events in self._watch_events(member, full, end):
                    failures = 0
                    yield None if events is None else [bytes(e.kv.key)[base:].decode() for e in events]
            except grpc.aio.AioRpcError:
                failures += 1
            await asyncio.sleep(min(2.0, 0.1 * failures))

    async def _watch(self, member: _Member, full: bytes, end: bytes = b"") -> AsyncIterator[None]:
        async for _ in self._watch_events(member, full, end):
            yield

    async def _watch_events(self, member: _Member, full: bytes, end: bytes) -> AsyncIterator[Sequence[Any] | None]:
        """None once the watch is created (anything before it may have been missed), then
        each response's events."""

        async def requests() -> AsyncIterator[Any]:
            yield rpc.WatchRequest(create_request=rpc.WatchCreateRequest(key=full, range_end=end))
            await asyncio.Event().wait()  # keep the stream open until it is cancelled

        call = member.watch.Watch(requests(), metadata=REQUIRE_LEADER)
        try:
            async for response in call:
                if response.created:
                    yield None
                if response.events:
                    yield list(response.events)
                if response.canceled:
                    return
        finally:
            await _ended(call)

    # -- leases (discovery) --------------------------------------------------------------

    async def grant(self, ttl: int) -> int:
        """A new lease of ``ttl`` seconds; keys written with it vanish when it expires."""
        reply = await self._call("LeaseGrant", rpc.LeaseGrantRequest(TTL=ttl), write=True, stub="lease")
        return int(reply.ID)

    async def keep_alive(self, lease: int) -> int:
        """Renew ``lease`` once; its new TTL in seconds, 0 if it has already expired."""

        async def one(member: _Member) -> int:
            async def requests() -> AsyncIterator[Any]:
                yield rpc.LeaseKeepAliveRequest(ID=lease)

            call = member.lease.LeaseKeepAlive(requests(), timeout=self.deadline, metadata=REQUIRE_LEADER)
            try:
                async for reply in call:
                    return int(reply.TTL)
                return 0
            finally:
                await _ended(call)

        failures = []
        for step in range(len(self._members)):
            member = self._members[(self._current + step) % len(self._members)]
            try:
                return await one(member)
            except grpc.aio.AioRpcError as exc:
                failures.append(f"{member.target}: {exc.code().name} {exc.details()}")
        raise StorageUnavailable(f"no etcd member renewed the lease: {'; '.join(failures[-3:])}", applied=False)

    async def revoke(self, lease: int) -> None:
        """End ``lease`` now: its keys are deleted at once."""
        await self._call("LeaseRevoke", rpc.LeaseRevokeRequest(ID=lease), write=True, stub="lease")

    async def put_leased(self, ns: str, key: str, value: bytes, lease: int) -> int:
        reply = await self._call("Put", rpc.PutRequest(key=self._full(ns, key), value=value, lease=lease), write=True)
        return int(reply.header.revision)

    def prefix_changes(self, ns: str, prefix: str) -> AsyncIterator[None]:
        """Wakes on every change under ``prefix`` (and on every reconnect)."""
        return self.changes(ns, prefix, whole_prefix=True)

    # -- helpers ------------------------------------------------------------------------

    @staticmethod
    def _full(ns: str, key: str) -> bytes:
        return f"{ROOT}{ns}/".encode() + key.encode()

    def _entry(self, ns: str, kv: Any) -> Entry:
        key = bytes(kv.key)[len(self._full(ns, "")) :].decode()
        return Entry(key, bytes(kv.value), int(kv.mod_revision))

    async def _txn(self, full: bytes, if_revision: int, request: Any) -> Any:
        if if_revision > MAX_REVISION:  # no key has it (etcd's are int64): a mismatch, as SQLite says
            found = await self._call("Range", rpc.RangeRequest(key=full), write=False)
            current = int(found.kvs[0].mod_revision) if found.kvs else 0
            raise Conflict(full.decode(errors="replace").split("/", 3)[-1], if_revision, current)
        compare = rpc.Compare(key=full, target=rpc.Compare.MOD, result=rpc.Compare.EQUAL, mod_revision=if_revision)
        failure = rpc.RequestOp(request_range=rpc.RangeRequest(key=full))
        reply = await self._call(
            "Txn", rpc.TxnRequest(compare=[compare], success=[request], failure=[failure]), write=True
        )
        if not reply.succeeded:
            kvs = reply.responses[0].response_range.kvs
            current = int(kvs[0].mod_revision) if kvs else 0
            raise Conflict(full.decode(errors="replace").split("/", 3)[-1], if_revision, current)
        return reply

    async def _call(self, method: str, request: Any, *, write: bool, stub: str = "kv") -> Any:
        if not self._members:
            raise StorageUnavailable("etcd client is not open", applied=False)
        ends = time.monotonic() + self.deadline
        failures: list[str] = []
        while True:
            for step in range(len(self._members)):
                index = (self._current + step) % len(self._members)
                member = self._members[index]
                remaining = ends - time.monotonic()
                if remaining <= 0:
                    break
                call: Callable[..., Awaitable[Any]] = getattr(getattr(member, stub), method)
                try:
                    reply = await call(request, timeout=remaining, metadata=REQUIRE_LEADER)
                except grpc.aio.AioRpcError as exc:
                    failures.append(f"{member.target}: {exc.code().name} {exc.details()}")
                    if exc.code() in _DENIED:  # a role or user problem: no other member says otherwise
                        raise StorageUnavailable(
                            f"etcd refused this node's DB user: {exc.details()}", applied=False
                        ) from exc
                    outcome = _outcome_of(exc)
                    self._current = (index + 1) % len(self._members)
                    if not may_retry(outcome, idempotent=not write):
                        raise StorageUnavailable(
                            f"etcd write outcome unknown: {'; '.join(failures[-3:])}", applied=None
                        ) from exc
                    continue
                self._current = index
                return reply
            if time.monotonic() + _ROUND_PAUSE >= ends:
                break
            await asyncio.sleep(_ROUND_PAUSE)
        raise StorageUnavailable(
            f"no etcd member answered within {self.deadline:g} s: {'; '.join(failures[-3:]) or 'deadline passed'}",
            applied=False,
        )


async def _ended(call: Any) -> None:
    """Cancel a stream and wait (at most a second) until grpc has ended it: a cancelled call's
    last event comes back through grpc's poller later, and one that comes after its event loop
    has closed (a test's loop, between tests) is an error in whichever loop runs next."""
    call.cancel()
    with contextlib.suppress(Exception):  # its status, whatever it is (CANCELLED), or no wait past 1 s
        await asyncio.wait_for(call.code(), 1.0)


def _outcome_of(exc: grpc.aio.AioRpcError) -> Outcome:
    details = (exc.details() or "").lower()
    if details.startswith(_AUTH_CHANGED):  # checked at apply time, and then not applied
        return Outcome.REFUSED
    if exc.code() is grpc.StatusCode.UNAVAILABLE and details.startswith(_REFUSED_BEFORE_PROPOSAL):
        return Outcome.REFUSED
    if exc.code() is grpc.StatusCode.UNAVAILABLE and any(text in details for text in _NOT_CONNECTED):
        return Outcome.NOT_SENT
    return Outcome.LOST

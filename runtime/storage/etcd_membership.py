"""etcd's membership, as ``root``: replace a member by removing it and adding a new one.

etcd's runtime reconfiguration, in its documented order for a member that is lost or to be
replaced: ``MemberRemove`` the old one (its process then stops itself), ``MemberAdd`` the
new one by its peer URL, then start the new member with an empty data dir and
``--initial-cluster-state existing`` (``db_initial_cluster_state``). The new member may
keep the old one's name and address: etcd gives it a new member ID. Both steps are
idempotent, so a replacement that was cut short can be run again.

``runtime db-member remove NAME`` and ``runtime db-member add NAME PEER_URL`` run these with
root's certificate, as ``db-init`` does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
import grpc.aio
from aetcd import rpc

from runtime.storage.etcd import ClientTls, _target, uses_tls
from runtime.storage.etcd_auth import first_answering

T = TypeVar("T")


async def remove(endpoints: Sequence[str], tls: ClientTls | None, name: str, *, timeout: float = 30.0) -> str:
    """Remove the member named ``name``; what was done (nothing if there is no such member)."""
    async with _RootCluster(endpoints, tls, timeout) as cluster:
        members = await _members(cluster)
        found = [m for m in members if m.name == name]
        if not found:
            return f"no member {name!r}; members: {', '.join(m.name or '(unstarted)' for m in members)}"
        if len(members) == 1:
            raise ValueError(f"{name!r} is the cluster's only member: removing it would end the cluster")
        request = rpc.MemberRemoveRequest(ID=found[0].ID)
        await _when_healthy(lambda: cluster.MemberRemove(request, timeout=10.0), timeout)
        return f"removed member {name!r} ({found[0].ID:x})"


async def add(
    endpoints: Sequence[str], tls: ClientTls | None, name: str, peer_url: str, *, timeout: float = 30.0
) -> str:
    """Add a member at ``peer_url`` (to be started as ``name``), unless one has that URL."""
    async with _RootCluster(endpoints, tls, timeout) as cluster:
        for member in await _members(cluster):
            if peer_url in member.peerURLs:
                if member.name not in ("", name):
                    raise ValueError(f"{peer_url} is member {member.name!r}'s; remove it first")
                return f"member at {peer_url} already added ({member.ID:x})"
        request = rpc.MemberAddRequest(peerURLs=[peer_url])
        added = await _when_healthy(lambda: cluster.MemberAdd(request, timeout=10.0), timeout)
        return f"added member {name!r} at {peer_url} ({added.member.ID:x}); start it: db_initial_cluster_state existing"


async def _when_healthy(call: Callable[[], Awaitable[T]], timeout: float) -> T:
    """``call()``, asked again while etcd refuses it as "unhealthy cluster": a change of
    membership waits until the leader has heard from every member for a while (etcd's strict
    reconfiguration check; 5 s after a member started or came back)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as exc:
            if "unhealthy cluster" not in (exc.details() or "") or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.5)


async def _members(cluster: Any) -> list[Any]:
    return list((await cluster.MemberList(rpc.MemberListRequest(), timeout=5.0)).members)


class _RootCluster:
    """The Cluster API of the first member that answers, within ``timeout``: as root over TLS
    (``https://`` endpoints and root's certificate), or plainly (a test's ``http://`` etcd)."""

    def __init__(self, endpoints: Sequence[str], tls: ClientTls | None, timeout: float) -> None:
        if uses_tls(list(endpoints)):
            if tls is None:
                raise ValueError("https:// etcd endpoints need root's certificate files")
            credentials = tls.credentials()
            self.channels = [grpc.aio.secure_channel(_target(e), credentials) for e in endpoints]
        else:
            self.channels = [grpc.aio.insecure_channel(_target(e)) for e in endpoints]
        self.timeout = timeout

    async def __aenter__(self) -> Any:
        stubs = [rpc.ClusterStub(c) for c in self.channels]
        return await first_answering(stubs, "MemberList", rpc.MemberListRequest(), self.timeout)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(c.close() for c in self.channels), return_exceptions=True)

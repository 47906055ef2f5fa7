"""etcd's own users and roles: each service's DB user reaches its namespace and nothing more.

A node's DB user is the common name of its certificate (etcd's ``--client-cert-auth``):
its service set, ``kv`` or ``auth+ingress+kv+queue``. Users have no password; only a
certificate from the cluster CA with that name logs in. Roles, one per service::

    kv, queue       read-write  /modematrix/<service>/, /modematrix/_discovery/<service>/
    auth            read-write  /modematrix/auth/ and /modematrix/_cluster/ (keys, CA, revocations),
                                /modematrix/_discovery/auth/
    xds             read        /modematrix/_discovery/ (every service's registrations)
    cluster-reader  read        /modematrix/_cluster/signing-keys, .../revocations and
                                .../revoked-tokens/ (every node)

``root`` (etcd's administrator, certificate only) is used by :func:`ensure` once, at bootstrap,
to create these and switch authentication on; no node holds its certificate. ``ensure`` is
idempotent: run again (a new node's service set, a repeat bootstrap) it adds what is missing.

    >>> user_name(("queue", "kv"))
    'kv+queue'
    >>> roles_of(("ingress",))
    ['cluster-reader']
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

import grpc
import grpc.aio
from aetcd import rpc

from runtime.storage.base import prefix_end
from runtime.storage.etcd import ROOT, ClientTls, _target

log = logging.getLogger("runtime.db")
ROOT_USER = "root"
READER = "cluster-reader"
_READ, _READWRITE = rpc.Permission.READ, rpc.Permission.READWRITE


def _prefix(ns: str) -> tuple[bytes, bytes]:
    start = f"{ROOT}{ns}/".encode()
    return start, prefix_end(start) or b"\x00"


def _key(ns: str, key: str) -> tuple[bytes, bytes]:
    return f"{ROOT}{ns}/{key}".encode(), b""


PERMISSIONS: dict[str, list[tuple[int, tuple[bytes, bytes]]]] = {
    "kv": [(_READWRITE, _prefix("kv")), (_READWRITE, _prefix("_discovery/kv"))],
    "queue": [(_READWRITE, _prefix("queue")), (_READWRITE, _prefix("_discovery/queue"))],
    "auth": [
        (_READWRITE, _prefix("auth")),
        (_READWRITE, _prefix("_cluster")),
        (_READWRITE, _prefix("_discovery/auth")),
    ],
    "xds": [(_READ, _prefix("_discovery"))],
    READER: [
        (_READ, _key("_cluster", "signing-keys")),
        (_READ, _key("_cluster", "revocations")),
        (_READ, _prefix("_cluster/revoked-tokens")),
    ],
}


def user_name(services: Iterable[str]) -> str:
    return "+".join(sorted(services))


def roles_of(services: Iterable[str]) -> list[str]:
    return [*sorted(s for s in services if s in PERMISSIONS), READER]


async def ensure(
    endpoints: Sequence[str], tls: ClientTls, service_sets: Iterable[Sequence[str]], *, timeout: float = 60.0
) -> None:
    """As ``root``: the roles, a user per service set, then authentication on."""
    credentials = tls.credentials()
    channels = [grpc.aio.secure_channel(_target(e), credentials) for e in endpoints]
    try:
        auth = await _first_answering([rpc.AuthStub(c) for c in channels], timeout)
        for role, permissions in PERMISSIONS.items():
            await _tolerate(auth.RoleAdd(rpc.AuthRoleAddRequest(name=role)), "role name already exists")
            for kind, (key, end) in permissions:
                permission = rpc.Permission(permType=kind, key=key, range_end=end)
                await auth.RoleGrantPermission(rpc.AuthRoleGrantPermissionRequest(name=role, perm=permission))
        users = {ROOT_USER: ["root"]}
        users.update({user_name(s): roles_of(s) for s in service_sets})
        for user, roles in users.items():
            add = rpc.AuthUserAddRequest(name=user, options=rpc.UserAddOptions(no_password=True))
            await _tolerate(auth.UserAdd(add), "user name already exists")
            for role in roles:
                await auth.UserGrantRole(rpc.AuthUserGrantRoleRequest(user=user, role=role))
        await auth.AuthEnable(rpc.AuthEnableRequest())
        log.info("DB authentication on", extra={"fields": {"users": sorted(users)}})
    finally:
        await asyncio.gather(*(c.close() for c in channels), return_exceptions=True)


async def _first_answering(stubs: list[Any], timeout: float) -> Any:
    """The first member whose Auth API answers (members may still be electing a leader).
    ``RoleList`` is the probe: etcd 3.4 has no AuthStatus, and root may list roles either way."""
    return await first_answering(stubs, "RoleList", rpc.AuthRoleListRequest(), timeout)


async def first_answering(stubs: Sequence[Any], method: str, request: Any, timeout: float) -> Any:
    """The first of ``stubs`` whose ``method(request)`` answers, asked round after round for
    up to ``timeout`` s; TimeoutError with the last refusal."""
    deadline, last = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        for stub in stubs:
            try:
                await getattr(stub, method)(request, timeout=2.0)
                return stub
            except grpc.aio.AioRpcError as exc:
                last = f"{exc.code().name} {exc.details()}"
        await asyncio.sleep(0.5)
    raise TimeoutError(f"no etcd member answered {method} within {timeout:.0f} s; last: {last}")


async def _tolerate(call: Any, already: str) -> None:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        if already not in (exc.details() or ""):
            raise

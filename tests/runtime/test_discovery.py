"""Discovery against a real etcd: registrations under a lease, renewed while the node runs,
gone within the TTL when it stops renewing and at once when it withdraws; the DB-lease
endpoint source sees each change."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from runtime.discovery import DbLeaseSource, Endpoint, Registrar, parse, record
from runtime.storage.etcd import EtcdBackend
from tests.conftest import EtcdCluster

pytestmark = pytest.mark.anyio


@pytest.fixture
async def backend(etcd: EtcdCluster) -> AsyncIterator[EtcdBackend]:
    made = EtcdBackend(etcd.endpoints)
    await made.open()
    yield made
    await made.close()


def _endpoint(node: str, service: str = "kv") -> Endpoint:
    return Endpoint(node, service, "10.0.0.5", 8443, True, "test")


async def _until(condition: object, timeout: float = 10.0) -> float:
    started = time.monotonic()
    while not await condition():  # type: ignore[operator]
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def test_a_registration_round_trips_and_garbage_is_skipped() -> None:
    endpoint = _endpoint("kv-1")
    assert parse(record(endpoint)) == endpoint
    assert parse(b"not json") is None and parse(b'{"node": "x"}') is None


async def test_a_registration_lives_while_renewed_and_goes_when_withdrawn(backend: EtcdBackend) -> None:
    source = DbLeaseSource(backend)
    registrar = Registrar(backend, [_endpoint("kv-w1"), _endpoint("kv-w1", "queue")], ttl=2)
    task = asyncio.ensure_future(registrar.run())
    try:

        async def listed() -> bool:
            return {("kv-w1", "kv"), ("kv-w1", "queue")} <= {(e.node, e.service) for e in await source.current()}

        await _until(listed)
        await asyncio.sleep(3)  # longer than the TTL: still there, because it is renewed
        assert await listed()
        await registrar.withdraw()

        async def gone() -> bool:
            return not any(e.node == "kv-w1" for e in await source.current())

        took = await _until(gone, timeout=1.0)
        print(f"\nwithdrawn registrations gone after {took:.3f} s")
    finally:
        task.cancel()


async def test_a_node_that_stops_renewing_disappears_within_the_ttl(backend: EtcdBackend) -> None:
    source = DbLeaseSource(backend)
    registrar = Registrar(backend, [_endpoint("kv-dead")], ttl=2)
    task = asyncio.ensure_future(registrar.run())

    async def listed() -> bool:
        return any(e.node == "kv-dead" for e in await source.current())

    await _until(listed)
    task.cancel()  # as if the node died: nothing renews its lease any more
    stopped = time.monotonic()

    async def gone() -> bool:
        return not await listed()

    await _until(gone, timeout=10)
    print(f"\na dead node's registration expired {time.monotonic() - stopped:.2f} s after its last renewal (TTL 2 s)")


async def test_the_source_yields_on_every_change(backend: EtcdBackend) -> None:
    source = DbLeaseSource(backend)
    seen: list[set[str]] = []

    async def follow() -> None:
        async for endpoints in source.watch():
            seen.append({e.node for e in endpoints if e.node.startswith("kv-watch")})

    follower = asyncio.ensure_future(follow())
    registrar = Registrar(backend, [_endpoint("kv-watch-1")], ttl=3)
    task = asyncio.ensure_future(registrar.run())
    try:

        async def saw_it() -> bool:
            return bool(seen) and seen[-1] == {"kv-watch-1"}

        await _until(saw_it)
        await registrar.withdraw()

        async def saw_it_go() -> bool:
            return seen[-1] == set()

        await _until(saw_it_go, timeout=2)
    finally:
        task.cancel()
        follower.cancel()

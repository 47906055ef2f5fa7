"""EndpointSlices -> endpoints: the API's rules, and the source's list-then-watch-then-relist
loop (against a fake of lightkube's AsyncClient: no Kubernetes cluster exists here yet)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

from runtime.discovery import Endpoint
from runtime.discovery.endpointslices import SERVICE_LABEL, EndpointSliceSource, endpoints_from_slices

pytestmark = pytest.mark.anyio


def piece(name: str, service: str, *endpoints: dict[str, Any], grpc: bool = True) -> dict[str, Any]:
    ports = [{"name": "https", "port": 8443}] + ([{"name": "grpc", "port": 8445}] if grpc else [])
    return {
        "metadata": {"name": name, "labels": {SERVICE_LABEL: service}},
        "ports": ports,
        "endpoints": list(endpoints),
    }


def pod(ip: str, name: str, **conditions: bool) -> dict[str, Any]:
    return {"addresses": [ip], "conditions": conditions, "targetRef": {"kind": "Pod", "name": name}}


def test_ready_serving_terminating_and_unknown_follow_the_api() -> None:
    slices = [
        piece(
            "kv-a",
            "kv",
            pod("10.0.0.1", "kv-1", ready=True),
            pod("10.0.0.2", "kv-2"),  # conditions unset: ready, by the API's rule
            pod("10.0.0.3", "kv-3", ready=False, serving=True, terminating=True),  # draining
            pod("10.0.0.4", "kv-4", ready=False, serving=False, terminating=True),  # gone
            pod("10.0.0.5", "kv-5", ready=False),  # not ready yet
        )
    ]
    found = {e.node: e for e in endpoints_from_slices(slices, ["kv"])}
    assert sorted(found) == ["kv-1", "kv-2", "kv-3"]
    assert found["kv-1"].ready and found["kv-2"].ready and not found["kv-3"].ready
    assert (found["kv-1"].port, found["kv-1"].grpc_port) == (8443, 8445)


def test_other_services_overlaps_and_portless_slices() -> None:
    slices = [
        piece("kv-a", "kv", pod("10.0.0.1", "kv-1", ready=False, serving=True, terminating=True)),
        piece("kv-b", "kv", pod("10.0.0.1", "kv-1", ready=True)),  # the same pod, moved between slices
        piece("dns", "kube-dns", pod("10.0.0.9", "coredns", ready=True)),
        {"metadata": {"name": "auth-a", "labels": {SERVICE_LABEL: "auth"}}, "ports": [], "endpoints": []},
        piece("auth-b", "auth", {"addresses": [], "conditions": {"ready": True}}, grpc=False),
    ]
    assert endpoints_from_slices(slices, ["auth", "kv", "queue"]) == [
        Endpoint("kv-1", "kv", "10.0.0.1", 8443, True, "", 8445, tls_name="kv")
    ]


class FakeClient:
    """lightkube's AsyncClient as the source uses it: list (with resourceVersion), watch."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}
        self.events: asyncio.Queue[tuple[str, dict[str, Any]] | Exception] = asyncio.Queue()
        self.lists = 0

    def list(self, resource: Any, **_: Any) -> Any:
        client = self

        class Listed:
            resourceVersion = "7"

            async def __aiter__(self) -> AsyncIterator[Any]:
                client.lists += 1
                for item in list(client.items.values()):
                    yield wrap(item)

        return Listed()

    async def watch(self, resource: Any, **kwargs: Any) -> AsyncIterator[tuple[str, Any]]:
        assert kwargs["resource_version"] == "7"
        while True:
            event = await self.events.get()
            if isinstance(event, Exception):
                raise event
            kind, item = event
            if kind == "DELETED":
                self.items.pop(item["metadata"]["name"], None)
            else:
                self.items[item["metadata"]["name"]] = item
            yield kind, wrap(item)


def wrap(item: dict[str, Any]) -> Any:
    return SimpleNamespace(metadata=SimpleNamespace(name=item["metadata"]["name"]), to_dict=lambda: item)


async def test_list_then_watch_then_relist_after_a_broken_watch() -> None:
    client = FakeClient()
    client.items["kv-a"] = piece("kv-a", "kv", pod("10.0.0.1", "kv-1", ready=True))
    source = EndpointSliceSource("mm", ["kv"], client=client, retry=0.01)
    seen = source.watch()
    assert [e.node for e in await anext(seen)] == ["kv-1"]
    await client.events.put(("ADDED", piece("kv-b", "kv", pod("10.0.0.2", "kv-2", ready=True))))
    assert [e.node for e in await anext(seen)] == ["kv-1", "kv-2"]
    await client.events.put(("DELETED", piece("kv-a", "kv")))
    assert [e.node for e in await anext(seen)] == ["kv-2"]
    await client.events.put(RuntimeError("410 Gone: too old resource version"))
    client.items["kv-c"] = piece("kv-c", "kv", pod("10.0.0.3", "kv-3", ready=True))  # changed while broken
    assert [e.node for e in await asyncio.wait_for(anext(seen), 5)] == ["kv-2", "kv-3"]
    assert client.lists == 2
    await seen.aclose()

"""Live scaling of the scaled mode under load: new kv nodes take traffic from Envoy soon after
they are ready, and draining them back down fails no request.

    pytest scenarios/test_scaling.py --mode scaled
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

import topologies
from scenarios.steady import Load
from topologies import ContainerRun, faults
from topologies.containers.faults import Kill
from topologies.containers.node import Node
from topologies.wait import wait_until

pytestmark = pytest.mark.scaled


def kv_requests(run: ContainerRun, node: Node, token: str) -> int:
    """Requests this node answered for kv routes, from its own /metrics (an operations route:
    any node answers it, with a token from the front door)."""
    headers = {"Authorization": f"Bearer {token}"}
    text = httpx.get(f"{node.url}/metrics", headers=headers, verify=run.tls_context(), timeout=5).text
    found = re.findall(r'^runtime_requests_total\{[^}]*route="kv\.(?:get|put)"[^}]*\} ([0-9.e+]+)$', text, re.M)
    return int(sum(float(n) for n in found))


@contextmanager
def kv_scaled_back(run: ContainerRun) -> Iterator[None]:
    try:
        yield
    finally:
        topologies.scale(run, {"kv": 2})


def test_scaling_kv_up_then_down_under_load_fails_no_request(run: ContainerRun) -> None:
    with run.client() as admin:
        token = admin.token or admin.login()
    with Load(run) as load, kv_scaled_back(run):
        wait_until(lambda: load.outcomes["ok"] > 20, timeout=30, interval=0.1, message="load is flowing")
        before = {n.name for n in run.nodes}
        topologies.scale(run, {"kv": 4})
        ready_at = time.monotonic()
        added = [n for n in run.nodes if n.name not in before]
        assert sorted(n.name for n in added) == ["kv-3", "kv-4"]
        for node in added:

            def serving(node: Node = node) -> bool:
                return kv_requests(run, node, token) > 0

            wait_until(serving, timeout=30, interval=0.1, message=f"{node.name} takes traffic")
        took = time.monotonic() - ready_at
        topologies.scale(run, {"kv": 1})
        assert sorted(n.name for n in run.nodes if n.services == ("kv",)) == ["kv-1"]
        wait_until(lambda: load.outcomes["ok"] > 40, timeout=30, interval=0.1, message="load still flowing")
    print(f"\nscaled: new kv nodes took traffic {took:.2f} s after ready; {dict(load.outcomes)}")
    assert load.failed == 0, load.failures[:10]


def test_without_the_control_plane_envoys_keep_serving_and_catch_up_when_it_returns(run: ContainerRun) -> None:
    """Kill the xds node, then add a kv node: the Envoys keep their last config (they serve,
    and send the new node nothing); once the xds node is back they learn of it."""
    xds = next(n for n in run.nodes if "xds" in n.services)
    with run.client() as api, kv_scaled_back(run):
        token = api.token or api.login()
        with faults.injected(run, Kill(xds.name)):
            assert api.put("/v1/kv/without-xds", content=b"1").status_code == 200
            topologies.scale(run, {"kv": 3})
            new = next(n for n in run.nodes if n.name == "kv-3")
            for _ in range(30):
                assert api.get("/v1/kv/without-xds").status_code == 200
            assert kv_requests(run, new, token) == 0, "an Envoy learned of kv-3 without its control plane"
        returned = time.monotonic()

        def learned() -> bool:
            for _ in range(10):
                api.get("/v1/kv/without-xds")
            return kv_requests(run, new, token) > 0

        wait_until(learned, timeout=30, interval=0.2, message="the Envoys send kv-3 traffic once xds is back")
        print(f"\nscaled: Envoys caught up {time.monotonic() - returned:.2f} s after the xds node was healthy again")

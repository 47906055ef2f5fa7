"""Live scaling of the scaled mode under load: new kv nodes take traffic from Envoy soon after
they are ready, and draining them back down fails no request.

    pytest scenarios/test_scaling.py --mode scaled
"""

from __future__ import annotations

import functools
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest

from topologies import Cluster, faults
from topologies.node import Node
from topologies.wait import wait_until

pytestmark = pytest.mark.scaled
LOAD_SECONDS_MAX = 120  # the load stops by itself even if a test fails to stop it


class Load:
    """A bounded writer and reader through the front door, counting every outcome."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster, self.outcomes = cluster, Counter[str]()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + LOAD_SECONDS_MAX
        with self.cluster.client(timeout=10) as api:
            i = 0
            while not self._stop.is_set() and time.monotonic() < deadline:
                i += 1
                key = f"/v1/kv/scale-{i % 50}"
                self._one("PUT", functools.partial(api.put, key, content=b"v"))
                self._one("GET", functools.partial(api.get, key))

    def _one(self, method: str, call: Callable[[], httpx.Response]) -> None:
        try:
            status = call().status_code
        except httpx.HTTPError as exc:
            status = 0
            self.failures.append(f"{method}: {exc!r}")
        ok = 200 <= status < 300 or (method == "GET" and status == 404)
        self.outcomes["ok" if ok else f"{method} {status}"] += 1
        if not ok and status:
            self.failures.append(f"{method} answered {status}")

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)

    @property
    def failed(self) -> int:
        return sum(n for outcome, n in self.outcomes.items() if outcome != "ok")


def kv_requests(cluster: Cluster, node: Node, token: str) -> int:
    """Requests this node answered for kv routes, from its own /metrics (an operations route:
    any node answers it, with a token from the front door)."""
    headers = {"Authorization": f"Bearer {token}"}
    text = httpx.get(f"{node.url}/metrics", headers=headers, verify=cluster.tls_context(), timeout=5).text
    found = re.findall(r'^runtime_requests_total\{[^}]*route="kv\.(?:get|put)"[^}]*\} ([0-9.e+]+)$', text, re.M)
    return int(sum(float(n) for n in found))


@contextmanager
def kv_scaled_back(cluster: Cluster) -> Iterator[None]:
    try:
        yield
    finally:
        cluster.scale(kv=2)


def test_scaling_kv_up_then_down_under_load_fails_no_request(cluster: Cluster) -> None:
    with cluster.client() as admin:
        token = admin.token or admin.login()
    with Load(cluster) as load, kv_scaled_back(cluster):
        wait_until(lambda: load.outcomes["ok"] > 20, timeout=30, interval=0.1, message="load is flowing")
        before = {n.name for n in cluster.nodes}
        cluster.scale(kv=4)
        ready_at = time.monotonic()
        added = [n for n in cluster.nodes if n.name not in before]
        assert sorted(n.name for n in added) == ["kv-3", "kv-4"]
        for node in added:

            def serving(node: Node = node) -> bool:
                return kv_requests(cluster, node, token) > 0

            wait_until(serving, timeout=30, interval=0.1, message=f"{node.name} takes traffic")
        took = time.monotonic() - ready_at
        cluster.scale(kv=1)
        assert sorted(n.name for n in cluster.nodes if n.services == ("kv",)) == ["kv-1"]
        wait_until(lambda: load.outcomes["ok"] > 40, timeout=30, interval=0.1, message="load still flowing")
    print(f"\nscaled: new kv nodes took traffic {took:.2f} s after ready; {dict(load.outcomes)}")
    assert load.failed == 0, load.failures[:10]


def test_without_the_control_plane_envoys_keep_serving_and_catch_up_when_it_returns(cluster: Cluster) -> None:
    """Kill the xds node, then add a kv node: the Envoys keep their last config (they serve,
    and send the new node nothing); once the xds node is back they learn of it."""
    xds = next(n for n in cluster.nodes if "xds" in n.services)
    with cluster.client() as api, kv_scaled_back(cluster):
        token = api.token or api.login()
        with faults.injected(cluster, faults.Kill(xds.name)):
            assert api.put("/v1/kv/without-xds", content=b"1").status_code == 200
            cluster.scale(kv=3)
            new = next(n for n in cluster.nodes if n.name == "kv-3")
            for _ in range(30):
                assert api.get("/v1/kv/without-xds").status_code == 200
            assert kv_requests(cluster, new, token) == 0, "an Envoy learned of kv-3 without its control plane"
        returned = time.monotonic()

        def learned() -> bool:
            for _ in range(10):
                api.get("/v1/kv/without-xds")
            return kv_requests(cluster, new, token) > 0

        wait_until(learned, timeout=30, interval=0.2, message="the Envoys send kv-3 traffic once xds is back")
        print(f"\nscaled: Envoys caught up {time.monotonic() - returned:.2f} s after the xds node was healthy again")

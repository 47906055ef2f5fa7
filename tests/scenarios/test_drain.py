"""The final drain against a stand-in front door: what it does when the door refuses at first."""

from __future__ import annotations

import json
from typing import Any

import httpx

from scenarios.checkers import PASS, queue_safety
from scenarios.history import OK, History, Op
from scenarios.traffic import Traffic, TrafficRun


class Door:
    """Answers the drain's calls from a script: a claim refused with Envoy's 503 first."""

    def __init__(self) -> None:
        self.claims = [
            (503, {"error": "not_applied", "detail": "the request reached no service node (no_healthy_upstream)"}),
            (200, {"id": "j1", "lease_id": "L1", "payload": 1, "attempts": 1, "lease_expires_at": 0}),
            (204, None),
        ]
        self.calls: list[str] = []

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        self.calls.append(path)
        if path.endswith("/claim"):
            status, body = self.claims.pop(0)
            return httpx.Response(status, content=json.dumps(body).encode() if body else b"")
        return httpx.Response(204)  # the ack

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        raise AssertionError(f"nothing is left to look up: {path}")


def test_a_drain_whose_first_claim_the_door_refuses_asks_again_and_finishes() -> None:
    """CI (k8s, a worker killed and healed): Envoy had no healthy queue upstream for the drain's
    first claim; the drain stopped there and the verdict was "the final drain did not finish"."""
    history = History()
    history.add(Op("q0", "enqueue", "t-q", 0, 1, OK, {}, {"id": "j1"}))
    traffic = TrafficRun(None, Traffic(lease_s=0.0), history, tag="t")  # type: ignore[arg-type]
    door = Door()
    traffic.drain(door)  # type: ignore[arg-type]
    kinds = [(op.kind, op.outcome) for op in history.ops[1:]]
    assert kinds == [("final-claim", "fail"), ("final-claim", OK), ("final-ack", OK), ("final-claim", OK)], kinds
    assert queue_safety(history.ops).result == PASS

"""The cluster client against stand-in front doors on loopback: what it does with a proxy's
502 and 504 (CI, k8s pause-a-worker: Envoy's 504 on a login ended a traffic client)."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import certifi
import pytest

from topologies.client import ClusterClient, Credentials


@contextmanager
def door(answers: list[int]) -> Iterator[tuple[str, list[str]]]:
    """A front door answering its requests with ``answers`` in turn (then 200s); its URL and
    the paths it was sent."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            seen.append(self.path)
            status = answers.pop(0) if answers else 200
            body = json.dumps({"token": "t-1"} if status == 200 else {"error": "upstream"}).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("status", [502, 504])
def test_a_login_the_proxy_gave_up_on_is_sent_to_the_other_door(status: int) -> None:
    with door([status]) as (first, first_seen), door([]) as (second, second_seen):
        client = ClusterClient([first, second], Path(certifi.where()), Credentials("u", "p"), timeout=2)
        with client:
            assert client.token == "t-1"
    assert first_seen == ["/v1/auth/login"] and second_seen == ["/v1/auth/login"]


def test_a_write_the_proxy_gave_up_on_is_not_sent_again_when_the_caller_records_each_call() -> None:
    """A 504 may hide an applied write: a recorder of histories sees it once, as it was."""
    with door([504]) as (first, first_seen), door([]) as (second, second_seen):
        with ClusterClient([first, second], Path(certifi.where()), timeout=2, resend_idempotent=False) as client:
            assert client.post("/v1/queues/q/jobs", json={}).status_code == 504
    assert first_seen == ["/v1/queues/q/jobs"] and second_seen == []

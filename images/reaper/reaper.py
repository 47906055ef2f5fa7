"""A reaper that speaks testcontainers' Ryuk protocol, with the standard library only.

Ryuk's image cannot be pulled in air-gapped networks; this one is built from the project's
own image and plugged in through ``RYUK_CONTAINER_IMAGE``. Protocol (as moby-ryuk):

- listen on TCP 8080 and print a line ending in ``Started!``;
- each client sends lines of URL-query-encoded Docker filters, e.g.
  ``label=org.testcontainers.session-id=<id>``; each line is answered ``ACK``;
- once the last client has gone and ``RYUK_RECONNECTION_TIMEOUT`` (default 10s) passes with
  no new connection, remove every container, network and volume matching any filter set,
  then exit. A reaper that nobody connects to within ``RYUK_CONNECTION_TIMEOUT`` (60s) exits.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import sys
import threading
import time
import urllib.parse
from typing import Any

DOCKER_SOCKET = os.environ.get("REAPER_DOCKER_SOCKET", "/var/run/docker.sock")


def seconds(text: str, default: float) -> float:
    """``"10s"`` -> 10.0, ``"1m"`` -> 60.0, ``"500ms"`` -> 0.5."""
    found = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)?", text.strip()) if text else None
    if not found:
        return default
    return float(found[1]) * {"ms": 0.001, "s": 1, "m": 60, None: 1}[found[2]]


def parse_filters(line: str) -> dict[str, list[str]]:
    """``label=a=b&label=c`` -> ``{"label": ["a=b", "c"]}``."""
    filters: dict[str, list[str]] = {}
    for key, value in urllib.parse.parse_qsl(line.strip(), keep_blank_values=True):
        filters.setdefault(key, []).append(value)
    return filters


class DockerSocket(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=30)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def docker(method: str, path: str) -> tuple[int, object]:
    """(status, parsed JSON body or None)."""
    conn = DockerSocket(DOCKER_SOCKET)
    try:
        conn.request(method, path)
        reply = conn.getresponse()
        body = reply.read()
        return reply.status, json.loads(body) if body and reply.status < 300 else None
    finally:
        conn.close()


def _listed(answer: object) -> list[dict[str, Any]]:
    """The Docker API's list answer, or nothing when it answered otherwise (or not at all)."""
    return [item for item in answer if isinstance(item, dict)] if isinstance(answer, list) else []


def prune(filter_sets: list[dict[str, list[str]]], *, tries: int = 20, pause: float = 0.5) -> dict[str, int]:
    """Containers first; then networks and volumes, again until none is left or ``tries`` run
    out: Docker refuses a network whose endpoints it is still releasing ("has active
    endpoints") for a moment after a forced container removal, which left networks behind."""
    removed = {"containers": 0, "networks": 0, "volumes": 0}
    queries = [urllib.parse.quote(json.dumps(filters)) for filters in filter_sets]
    for query in queries:
        for c in _listed(docker("GET", f"/containers/json?all=1&filters={query}")[1]):
            removed["containers"] += docker("DELETE", f"/containers/{c['Id']}?force=1&v=1")[0] < 300
    for attempt in range(tries):
        left = 0
        for query in queries:
            for n in _listed(docker("GET", f"/networks?filters={query}")[1]):
                gone = docker("DELETE", f"/networks/{n['Id']}")[0] < 300
                removed["networks"] += gone
                left += not gone
            volumes = docker("GET", f"/volumes?filters={query}")[1]
            for v in _listed(volumes.get("Volumes") if isinstance(volumes, dict) else None):
                gone = docker("DELETE", f"/volumes/{v['Name']}?force=1")[0] < 300
                removed["volumes"] += gone
                left += not gone
        if not left:
            break
        if attempt < tries - 1:
            time.sleep(pause)
    return removed


class Reaper:
    def __init__(self, reconnect: float, first_connect: float) -> None:
        self.reconnect, self.first_connect = reconnect, first_connect
        self.filters: list[dict[str, list[str]]] = []
        self.connections = 0
        self.last_change = time.monotonic()
        self.ever_connected = False
        self.lock = threading.Lock()

    def serve_client(self, conn: socket.socket) -> None:
        with self.lock:
            self.connections += 1
            self.ever_connected = True
        try:
            for raw in conn.makefile("r", encoding="utf-8", newline="\n"):
                if raw.strip():
                    with self.lock:
                        self.filters.append(parse_filters(raw))
                    conn.sendall(b"ACK\n")
        except OSError:
            pass
        finally:
            conn.close()
            with self.lock:
                self.connections -= 1
                self.last_change = time.monotonic()

    def should_prune(self) -> bool:
        with self.lock:
            idle = time.monotonic() - self.last_change
            if not self.ever_connected:
                return idle > self.first_connect
            return self.connections == 0 and idle > self.reconnect


def main() -> int:
    reconnect = seconds(os.environ.get("RYUK_RECONNECTION_TIMEOUT", ""), 10.0)
    first_connect = seconds(os.environ.get("RYUK_CONNECTION_TIMEOUT", ""), 60.0)
    port = int(os.environ.get("REAPER_PORT", "8080"))
    reaper = Reaper(reconnect, first_connect)
    server = socket.create_server(("0.0.0.0", port))
    server.settimeout(0.5)
    print(f"modematrix reaper on :{port}: Started!", flush=True)
    while not reaper.should_prune():
        try:
            conn, _ = server.accept()
        except TimeoutError:
            continue
        threading.Thread(target=reaper.serve_client, args=(conn,), daemon=True).start()
    removed = prune(reaper.filters)
    print(f"modematrix reaper: removed {removed} for {reaper.filters}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

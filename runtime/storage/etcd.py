"""etcd v3 through its JSON gateway (``/v3/kv/*``), with failover across endpoints.

Every key is stored as ``/modematrix/<namespace>/<key>``. Reads are linearizable (etcd's
default for range). When to try another endpoint is :func:`runtime.retry.may_retry`, with reads idempotent:

- the connection was never made: nothing was sent, so any operation moves on to the next;
- etcd answered "no leader": the request was refused before it was proposed, same;
- anything else after the request left (timeout, reset, "request timed out"): a read moves
  on; a write raises ``StorageUnavailable`` because it may or may not have been applied,
  and only the caller can record that outcome as unknown.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import httpx

from runtime.exceptions import Conflict, StorageUnavailable
from runtime.retry import Outcome, may_retry
from runtime.storage.base import Entry, prefix_end, range_start

ROOT = "/modematrix/"
_REFUSED_BEFORE_PROPOSAL = ("etcdserver: no leader", "etcdserver: not capable")


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


class EtcdBackend:
    name = "etcd"

    def __init__(self, endpoints: list[str], *, timeout: float = 5.0) -> None:
        if not endpoints:
            raise ValueError("EtcdBackend needs at least one endpoint")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.timeout = timeout
        self._current = 0
        self._client: httpx.AsyncClient | None = None

    async def open(self) -> None:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout, connect=1.0), limits=limits)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def ping(self) -> None:
        await self._call("/v3/kv/range", {"key": _b64(ROOT.encode()), "limit": 1}, write=False)

    async def get(self, ns: str, key: str) -> Entry | None:
        reply = await self._call("/v3/kv/range", {"key": _b64(self._full(ns, key))}, write=False)
        kvs = reply.get("kvs") or []
        return self._entry(ns, kvs[0]) if kvs else None

    async def put(self, ns: str, key: str, value: bytes, if_revision: int | None) -> int:
        full = self._full(ns, key)
        request = {"request_put": {"key": _b64(full), "value": _b64(value)}}
        if if_revision is None:
            reply = await self._call("/v3/kv/put", request["request_put"], write=True)
            return int(reply["header"]["revision"])
        reply = await self._txn(full, if_revision, request)
        return int(reply["header"]["revision"])

    async def delete(self, ns: str, key: str, if_revision: int | None) -> bool:
        full = self._full(ns, key)
        if if_revision is None:
            reply = await self._call("/v3/kv/deleterange", {"key": _b64(full)}, write=True)
            return int(reply.get("deleted", 0)) > 0
        reply = await self._txn(full, if_revision, {"request_delete_range": {"key": _b64(full)}})
        deleted = reply["responses"][0].get("response_delete_range", {}).get("deleted", 0)
        return int(deleted) > 0

    async def range(self, ns: str, prefix: str, after: str | None, limit: int) -> list[Entry]:
        base = self._full(ns, "")
        start = base + range_start(prefix, after)
        end = prefix_end(base + prefix.encode())
        body = {"key": _b64(start), "range_end": _b64(end or b"\x00"), "limit": limit}
        reply = await self._call("/v3/kv/range", body, write=False)
        return [self._entry(ns, kv) for kv in reply.get("kvs") or []]

    # -- helpers ------------------------------------------------------------------------

    @staticmethod
    def _full(ns: str, key: str) -> bytes:
        return f"{ROOT}{ns}/".encode() + key.encode()

    def _entry(self, ns: str, kv: dict[str, Any]) -> Entry:
        key = _unb64(kv["key"])[len(self._full(ns, "")) :].decode()
        return Entry(key, _unb64(kv.get("value")), int(kv["mod_revision"]))

    async def _txn(self, full: bytes, if_revision: int, request: dict[str, Any]) -> dict[str, Any]:
        body = {
            "compare": [{"key": _b64(full), "target": "MOD", "result": "EQUAL", "mod_revision": str(if_revision)}],
            "success": [request],
            "failure": [{"request_range": {"key": _b64(full)}}],
        }
        reply = await self._call("/v3/kv/txn", body, write=True)
        if not reply.get("succeeded"):
            kvs = reply["responses"][0]["response_range"].get("kvs") or []
            current = int(kvs[0]["mod_revision"]) if kvs else 0
            raise Conflict(full.decode(errors="replace").split("/", 3)[-1], if_revision, current)
        return reply

    async def _call(self, path: str, body: dict[str, Any], *, write: bool) -> dict[str, Any]:
        if self._client is None:
            raise StorageUnavailable("etcd client is not open")
        deadline = time.monotonic() + self.timeout
        failures: list[str] = []
        for attempt in range(len(self.endpoints) * 2):
            endpoint = self.endpoints[(self._current + attempt) % len(self.endpoints)]
            if attempt and time.monotonic() > deadline:
                break
            try:
                response = await self._client.post(endpoint + path, json=body)
            except httpx.HTTPError as exc:
                failures.append(f"{endpoint}: {type(exc).__name__}")
                outcome = _outcome_of(exc)
            else:
                reply = _json(response)
                if response.status_code == 200:
                    self._current = (self._current + attempt) % len(self.endpoints)
                    return reply
                message = str(reply.get("error") or reply.get("message") or response.text)
                failures.append(f"{endpoint}: {message}")
                outcome = Outcome.REFUSED if message.startswith(_REFUSED_BEFORE_PROPOSAL) else Outcome.LOST
            if outcome is Outcome.LOST:
                self._current = (self._current + attempt + 1) % len(self.endpoints)
            if not may_retry(outcome, idempotent=not write):
                raise StorageUnavailable(f"etcd write outcome unknown: {'; '.join(failures)}")
        raise StorageUnavailable(f"no etcd endpoint answered: {'; '.join(failures) or 'deadline passed'}")


def _outcome_of(exc: httpx.HTTPError) -> Outcome:
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
        return Outcome.NOT_SENT
    return Outcome.LOST


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        reply: dict[str, Any] = response.json()
    except ValueError:
        reply = {"error": f"HTTP {response.status_code}: {response.text[:200]}"}
    return reply

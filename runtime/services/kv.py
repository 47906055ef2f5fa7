"""The kv service: a key-value store for clients, with revisions for compare-and-swap.

Client keys are stored under ``k/`` in the kv namespace, apart from the service's own
``meta/`` records, so no client key can overwrite the marker.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

from starlette.responses import Response

from runtime import http
from runtime.exceptions import Conflict, InvalidInput, NotFound
from runtime.services.base import Call, Handler, ensure_marker
from runtime.storage import Entry, Namespace
from runtime.storage.keys import validate_key

log = logging.getLogger("runtime.kv")
DATA = "k/"
_REVISION = re.compile(r'^(?:W/)?"?([0-9]{1,19})"?$')
_ASCII_NUMBER = re.compile(r"[0-9]{1,9}")  # str.isdigit() says yes to "²", which int() refuses


def parse_if_match(raw: str | None) -> int | None:
    """``"12"`` / ``12`` -> 12. An If-Match that is not a revision is a client error."""
    if raw is None:
        return None
    found = _REVISION.match(raw.strip())
    if not found:
        raise InvalidInput(f'If-Match: expected a revision number such as "12", got {raw[:40]!r}')
    return int(found[1])


class KvService:
    name = "kv"
    schema_version = 1

    def __init__(self, ns: Namespace, *, unsafe_fault: str | None = None) -> None:
        self._ns = ns
        self._fault = unsafe_fault
        self._stale: dict[str, Entry] = {}

    @property
    def handlers(self) -> Mapping[str, Handler]:
        return {"kv.get": self.get, "kv.put": self.put, "kv.delete": self.delete, "kv.list": self.list}

    async def start(self) -> None:
        await ensure_marker(self._ns, self.name, self.schema_version)
        if self._fault:
            log.warning(
                "UNSAFE FAULT ENABLED: this node breaks kv guarantees on purpose",
                extra={"fields": {"unsafe_fault": self._fault}},
            )

    # -- the operations, shared by the HTTP handlers and the gRPC servicer ------------------

    async def read(self, key: str) -> Entry:
        """The entry under ``key``; NotFound if there is none."""
        key = validate_key(key)
        entry = self._stale.get(key) if self._fault == "stale-reads" else None
        entry = entry or await self._ns.get(DATA + key)
        if entry is None:
            raise NotFound(f"no key {key!r}")
        if self._fault == "stale-reads":
            self._stale.setdefault(key, entry)
        return Entry(key, entry.value, entry.revision)

    async def write(self, key: str, value: bytes, *, if_revision: int | None = None) -> int:
        """Store ``value``; ``if_revision`` 0: only if absent, N: only at revision N (Conflict)."""
        key = validate_key(key)
        if self._fault == "ack-without-commit":
            current = await self._ns.get(DATA + key)
            return (current.revision if current else 0) + 1
        return await self._ns.put(DATA + key, value, if_revision=if_revision)

    async def remove(self, key: str, *, if_revision: int | None = None) -> None:
        key = validate_key(key)
        if not await self._ns.delete(DATA + key, if_revision=if_revision):
            raise NotFound(f"no key {key!r}")

    async def keys(
        self, prefix: str = "", after: str | None = None, limit: int = 100
    ) -> tuple[list[Entry], str | None]:
        """Keys (values left empty) from ``prefix``, after ``after``, up to ``limit``, and the
        key to continue after (None: no more)."""
        if not 1 <= limit <= 1000:
            raise InvalidInput(f"limit: expected a whole number from 1 to 1000, got {limit}")
        if prefix:
            validate_key(prefix)
        after_key = DATA + after if after else None
        entries = await self._ns.range(DATA + prefix, after=after_key, limit=limit + 1, keys_only=True)
        items = [Entry(e.key[len(DATA) :], b"", e.revision) for e in entries[:limit]]
        more = len(entries) > limit
        return items, items[-1].key if more and items else None

    # -- HTTP ------------------------------------------------------------------------------

    async def get(self, call: Call) -> Response:
        try:
            entry = await self.read(call.params["key"])
        except NotFound as exc:
            return http.error(404, "not_found", str(exc))
        return Response(entry.value, media_type="application/octet-stream", headers={"ETag": f'"{entry.revision}"'})

    async def put(self, call: Call) -> Response:
        key = call.params["key"]
        if_match = parse_if_match(call.request.headers.get("if-match"))
        if_none_match = call.request.headers.get("if-none-match")
        if if_none_match is not None and if_none_match.strip() != "*":
            raise InvalidInput(f"If-None-Match: only '*' is supported, got {if_none_match[:40]!r}")
        if if_match is not None and if_none_match is not None:
            raise InvalidInput("If-Match and If-None-Match cannot be combined")
        expected = 0 if if_none_match is not None else if_match
        try:
            revision = await self.write(key, call.body, if_revision=expected)
        except Conflict as exc:
            return _precondition_failed(key, exc)
        return http.json({"key": key, "revision": revision}, headers={"ETag": f'"{revision}"'})

    async def delete(self, call: Call) -> Response:
        key = call.params["key"]
        try:
            await self.remove(key, if_revision=parse_if_match(call.request.headers.get("if-match")))
        except Conflict as exc:
            return _precondition_failed(key, exc)
        except NotFound as exc:
            return http.error(404, "not_found", str(exc))
        return Response(status_code=204)

    async def list(self, call: Call) -> Response:
        query = call.request.query_params
        items, more = await self.keys(query.get("prefix", ""), query.get("after"), _limit(query.get("limit", "100")))
        return http.json({"items": [{"key": e.key, "revision": e.revision} for e in items], "next": more})


def _limit(raw: str) -> int:
    if not _ASCII_NUMBER.fullmatch(raw) or not 1 <= int(raw) <= 1000:
        raise InvalidInput(f"limit: expected a whole number from 1 to 1000, got {raw[:20]!r}")
    return int(raw)


def _precondition_failed(key: str, exc: Conflict) -> Response:
    found = f"revision {exc.current}" if exc.current else "no such key"
    return http.error(
        412,
        "precondition_failed",
        f"{key!r}: expected revision {exc.expected}, found {found}",
        headers={"ETag": f'"{exc.current}"'} if exc.current else None,
    )

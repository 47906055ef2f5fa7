"""The queue service: jobs with leases.

A job is one record, ``jobs/<queue>/<id>``. Claiming sets ``visible_at`` to the lease's end
and a fresh ``lease_id`` with a compare-and-swap, so two claimers can never hold the same job:
the loser's CAS fails and it moves to the next job. A claimed job is invisible until its
lease expires; an unacknowledged job then comes back. Ack is a compare-and-swap delete that
needs the current ``lease_id`` before the lease ends, so no job is acked twice.

A job claimed ``max_attempts`` times and never acked is dead-lettered: it stays, with state
``dead``, and is never handed out again (a job no consumer can process must not block or
crash the queue). ``DELETE .../jobs/{id}`` removes a job in any state.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

from starlette.responses import Response

from runtime import http
from runtime.exceptions import Conflict, InvalidInput, LeaseLost, NotFound
from runtime.services.base import Call, Handler, ensure_marker
from runtime.storage import Entry, Namespace

_QUEUE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_JOB = re.compile(r"^[0-9a-f]{16}-[0-9a-f]{8}$")
SCAN_LIMIT = 200
log = logging.getLogger("runtime.queue")


def _queue(name: str) -> str:
    if not _QUEUE.match(name):
        raise InvalidInput(f"queue name: expected 1-64 of A-Z a-z 0-9 _ . -, got {name[:70]!r}")
    return name


def _job_id(raw: str) -> str:
    if not _JOB.match(raw):
        raise InvalidInput(f"job id: expected 16 hex digits, '-', 8 hex digits, got {raw[:40]!r}")
    return raw


def _lease(raw: str | None) -> float:
    try:
        lease = float(raw) if raw is not None else 30.0
    except ValueError:
        lease = -1.0
    if not 0.1 <= lease <= 3600:
        raise InvalidInput(f"lease: expected seconds from 0.1 to 3600, got {str(raw)[:20]!r}")
    return lease


class QueueService:
    name = "queue"
    schema_version = 1

    def __init__(self, ns: Namespace, clock: Callable[[], float] = time.time, *, max_attempts: int = 20) -> None:
        self._ns, self._clock, self.max_attempts = ns, clock, max_attempts

    @property
    def handlers(self) -> Mapping[str, Handler]:
        return {
            "queue.enqueue": self.enqueue,
            "queue.claim": self.claim,
            "queue.ack": self.ack,
            "queue.get": self.get,
            "queue.delete": self.delete,
        }

    async def start(self) -> None:
        await ensure_marker(self._ns, self.name, self.schema_version)

    # -- the operations, shared by the HTTP handlers and the gRPC servicer ------------------

    async def put_job(self, queue: str, payload: object) -> str:
        """Enqueue ``payload`` (any JSON value); the new job's id."""
        queue = _queue(queue)
        job = f"{time.time_ns() // 1000:016x}-{secrets.token_hex(4)}"
        record = {"payload": payload, "enqueued_at": self._clock(), "visible_at": 0.0, "lease_id": None, "attempts": 0}
        await self._ns.put(f"jobs/{queue}/{job}", _dump(record), if_revision=0)
        return job

    async def take(self, queue: str, lease: float) -> dict[str, Any] | None:
        """Claim the first ready job for ``lease`` seconds, or None if none is ready."""
        queue = _queue(queue)
        after: str | None = None
        while True:
            entries = await self._ns.range(f"jobs/{queue}/", after=after, limit=SCAN_LIMIT)
            for entry in entries:
                claimed = await self._try_claim(entry, lease)
                if claimed is not None:
                    return claimed
            if len(entries) < SCAN_LIMIT:
                return None
            after = entries[-1].key

    async def _try_claim(self, entry: Entry, lease: float) -> dict[str, Any] | None:
        record = json.loads(entry.value)
        now = self._clock()
        if record.get("dead") or record["visible_at"] > now:
            return None
        if record["attempts"] >= self.max_attempts:
            await self._dead_letter(entry, record)
            return None
        record.update(visible_at=now + lease, lease_id=secrets.token_hex(8), attempts=record["attempts"] + 1)
        try:
            await self._ns.put(entry.key, _dump(record), if_revision=entry.revision)
        except Conflict:
            return None
        return {
            "id": entry.key.rsplit("/", 1)[1],
            "payload": record["payload"],
            "lease_id": record["lease_id"],
            "lease_expires_at": record["visible_at"],
            "attempts": record["attempts"],
        }

    async def finish(self, queue: str, job: str, lease_id: str) -> None:
        """Ack: remove the job if ``lease_id`` still holds it (NotFound, LeaseLost)."""
        queue, job = _queue(queue), _job_id(job)
        entry = await self._ns.get(f"jobs/{queue}/{job}")
        if entry is None:
            raise NotFound(f"no job {job} in queue {queue!r} (never enqueued, or acked)")
        record = json.loads(entry.value)
        if record["lease_id"] != lease_id:
            raise LeaseLost("lease_mismatch", "this lease does not hold the job; it was claimed again")
        if record["visible_at"] <= self._clock():
            raise LeaseLost("lease_expired", "the lease ended before the ack; the job is back in the queue")
        try:
            await self._ns.delete(entry.key, if_revision=entry.revision)
        except Conflict:
            raise LeaseLost("lease_mismatch", "the job changed during the ack") from None

    async def _dead_letter(self, entry: Entry, record: dict[str, Any]) -> None:
        record.update(dead=True, lease_id=None)
        try:
            await self._ns.put(entry.key, _dump(record), if_revision=entry.revision)
        except Conflict:
            return  # someone else moved it first
        log.warning(
            "job dead-lettered",
            extra={"fields": {"job": entry.key, "attempts": record["attempts"], "max_attempts": self.max_attempts}},
        )

    async def remove(self, queue: str, job: str) -> None:
        queue, job = _queue(queue), _job_id(job)
        if not await self._ns.delete(f"jobs/{queue}/{job}"):
            raise NotFound(f"no job {job} in queue {queue!r}")

    async def state(self, queue: str, job: str) -> dict[str, Any]:
        queue, job = _queue(queue), _job_id(job)
        entry = await self._ns.get(f"jobs/{queue}/{job}")
        if entry is None:
            raise NotFound(f"no job {job} in queue {queue!r} (never enqueued, or acked)")
        record = json.loads(entry.value)
        state = "dead" if record.get("dead") else "claimed" if record["visible_at"] > self._clock() else "ready"
        return {"id": job, "queue": queue, "state": state, "attempts": record["attempts"], "payload": record["payload"]}

    # -- HTTP ------------------------------------------------------------------------------

    async def enqueue(self, call: Call) -> Response:
        queue = _queue(call.params["queue"])  # the name first, then the body
        job = await self.put_job(queue, call.json())
        return http.json({"id": job, "queue": queue}, status=201)

    async def claim(self, call: Call) -> Response:
        queue = _queue(call.params["queue"])
        claimed = await self.take(queue, _lease(call.request.query_params.get("lease")))
        return Response(status_code=204) if claimed is None else http.json(claimed)

    async def ack(self, call: Call) -> Response:
        body = call.json()
        lease_id = body.get("lease_id") if isinstance(body, dict) else None
        if not isinstance(lease_id, str):
            _queue(call.params["queue"]), _job_id(call.params["job"])  # a bad name is the first complaint
            raise InvalidInput('ack body: expected {"lease_id": "..."} from the claim')
        try:
            await self.finish(call.params["queue"], call.params["job"], lease_id)
        except NotFound as exc:
            return http.error(404, "not_found", str(exc))
        except LeaseLost as exc:
            return http.error(409, exc.code, str(exc))
        return Response(status_code=204)

    async def delete(self, call: Call) -> Response:
        try:
            await self.remove(call.params["queue"], call.params["job"])
        except NotFound as exc:
            return http.error(404, "not_found", str(exc))
        return Response(status_code=204)

    async def get(self, call: Call) -> Response:
        try:
            return http.json(await self.state(call.params["queue"], call.params["job"]))
        except NotFound as exc:
            return http.error(404, "not_found", str(exc))


def _dump(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode()

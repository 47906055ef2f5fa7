"""The client side of failover, decided once: after what, may a request go to the next
endpoint, and where do later requests start? Pure; the HTTP clients of topologies and the
load tests both ask it. (The runtime has its own copy of the rule for node-to-node calls,
in ``runtime/retry.py``: the runtime imports nothing from here.)

    >>> after("PUT", Outcome.NOT_SENT)      # nothing reached a server: safe to send elsewhere
    Next(retry_elsewhere=True, rotate=True)
    >>> after("PUT", Outcome.LOST)          # it may have been applied: only the caller knows
    Next(retry_elsewhere=False, rotate=True)
    >>> after("GET", Outcome.BUSY)          # a node that cannot reach its DB: a read goes on
    Next(retry_elsewhere=True, rotate=True)
    >>> after("PUT", Outcome.REFUSED)       # 503 not_applied: it had no effect, send it again
    Next(retry_elsewhere=True, rotate=True)
    >>> after("PUT", Outcome.LOST, idempotent=True)   # a plain PUT twice is a PUT once (RFC 9110)
    Next(retry_elsewhere=True, rotate=True)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Outcome(Enum):
    NOT_SENT = "not-sent"  # the connection was never made
    LOST = "lost"  # failed after the request left (timeout, reset): it may have been applied
    BUSY = "busy"  # the endpoint answered 503: it cannot serve now, and may have applied it
    REFUSED = "refused"  # 503 not_applied: the runtime says it had no effect
    ANSWERED = "answered"


@dataclass(frozen=True)
class Next:
    retry_elsewhere: bool  # send this same request to the next endpoint
    rotate: bool  # later requests start at the next endpoint


def after(method: str, outcome: Outcome, *, idempotent: bool = False) -> Next:
    """``idempotent``: the caller may resend this request after an unknown outcome (see
    :func:`idempotent`); a client that records histories must not, or one call could count twice."""
    if outcome in (Outcome.NOT_SENT, Outcome.REFUSED):
        return Next(retry_elsewhere=True, rotate=True)
    if outcome is Outcome.BUSY:
        return Next(retry_elsewhere=idempotent or method.upper() in SAFE_METHODS, rotate=True)
    if outcome is Outcome.LOST:
        return Next(retry_elsewhere=idempotent, rotate=True)
    return Next(retry_elsewhere=False, rotate=False)


def idempotent(method: str, headers: Mapping[str, str]) -> bool:
    """Safe to send twice: a read, or an unconditional PUT or DELETE (RFC 9110 9.2.2). A
    conditional write is not resent: its second try would answer 412 for the first's success.

    >>> idempotent("PUT", {}), idempotent("PUT", {"If-Match": "7"}), idempotent("POST", {})
    (True, False, False)
    """
    conditional = any(h.lower() in ("if-match", "if-none-match") for h in headers)
    return method.upper() in SAFE_METHODS or (method.upper() in ("PUT", "DELETE") and not conditional)


def of_reply(status: int, body: str = "") -> Outcome:
    """What an answer means; a 503's body carries the runtime's error code.

    >>> of_reply(503, '{"error": "not_applied", "detail": "no leader"}')
    <Outcome.REFUSED: 'refused'>
    >>> of_reply(503, '{"error": "outcome_unknown"}'), of_reply(200)
    (<Outcome.BUSY: 'busy'>, <Outcome.ANSWERED: 'answered'>)

    A front door's 502 or 504 (Envoy or HAProxy gave up on the node behind it: a paused
    worker, a reset) says no more than a lost connection: it may have been applied.

    >>> of_reply(504, "upstream request timeout"), of_reply(502)
    (<Outcome.LOST: 'lost'>, <Outcome.LOST: 'lost'>)
    """
    if status in PROXY_GAVE_UP:
        return Outcome.LOST
    if status != 503:
        return Outcome.ANSWERED
    return Outcome.REFUSED if _error_code(body) == NOT_APPLIED else Outcome.BUSY


def _error_code(body: str) -> str:
    try:
        parsed = json.loads(body)
    except ValueError:
        return ""
    return str(parsed.get("error", "")) if isinstance(parsed, dict) else ""


NOT_APPLIED = "not_applied"  # the runtime's 503 code for "nothing was applied"
PROXY_GAVE_UP = frozenset({502, 504})  # Bad Gateway, Gateway Timeout: the runtime sends neither

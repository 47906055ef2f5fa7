"""When a call from this node to another (a peer service, a DB member) may be sent again,
decided once for the forwarding proxy and the etcd backend.

    >>> may_retry(Outcome.NOT_SENT, idempotent=False)   # nothing was sent
    True
    >>> may_retry(Outcome.REFUSED, idempotent=False)    # refused before it was acted on
    True
    >>> may_retry(Outcome.LOST, idempotent=False)       # it may have been applied
    False
    >>> may_retry(Outcome.LOST, idempotent=True)
    True
"""

from __future__ import annotations

from enum import Enum


class Outcome(Enum):
    NOT_SENT = "not-sent"  # the connection was never made
    REFUSED = "refused"  # the other side said it did not act on it (etcd: "no leader")
    LOST = "lost"  # failed after the request left: it may or may not have been applied


def may_retry(outcome: Outcome, *, idempotent: bool) -> bool:
    """True if the same call may go to the next peer or member."""
    return outcome is not Outcome.LOST or idempotent

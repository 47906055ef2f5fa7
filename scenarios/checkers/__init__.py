"""Checkers: pure functions of a history, each returning a :class:`Verdict`.

A verdict is ``pass``, ``fail`` or ``unknown``; a checker that could not decide (over its time
budget, or without the observations it needs) says ``unknown``, never ``pass``. A scenario
names the checks it runs; :data:`CHECKS` maps each name to the function of a whole history.
"""

from __future__ import annotations

from collections.abc import Callable

from scenarios.checkers.availability import availability
from scenarios.checkers.base import FAIL, PASS, UNKNOWN, Verdict
from scenarios.checkers.kv import no_lost_writes
from scenarios.checkers.linearizable import linearizable_kv
from scenarios.checkers.queue import lease_exclusive, queue_safety
from scenarios.checkers.reads import reads_served
from scenarios.history import History

Check = Callable[[History], Verdict]

CHECKS: dict[str, Check] = {
    "no-lost-writes": lambda history: no_lost_writes(history.ops),
    "linearizable-kv": lambda history: linearizable_kv(history.ops),
    "queue-safety": lambda history: queue_safety(history.ops),
    "lease-exclusive": lambda history: lease_exclusive(history.ops),
    "availability": lambda history: availability(history.ops, history.events),
    "reads-served": lambda history: reads_served(history.ops),
}
# checks a scenario runs only when it names them: the promises of planned disruptions
PLANNED = ("reads-served",)

__all__ = [
    "CHECKS",
    "FAIL",
    "PASS",
    "PLANNED",
    "UNKNOWN",
    "Check",
    "Verdict",
    "availability",
    "lease_exclusive",
    "linearizable_kv",
    "no_lost_writes",
    "queue_safety",
    "reads_served",
]

"""Checkers: pure functions of a history, each returning a :class:`Verdict`.

A verdict is ``pass``, ``fail`` or ``unknown``; a checker that could not decide (over its time
budget, or without the observations it needs) says ``unknown``, never ``pass``.
"""

from scenarios.checkers.availability import availability
from scenarios.checkers.base import FAIL, PASS, UNKNOWN, Verdict
from scenarios.checkers.kv import no_lost_writes
from scenarios.checkers.linearizable import linearizable_kv
from scenarios.checkers.queue import queue_safety

__all__ = ["FAIL", "PASS", "UNKNOWN", "Verdict", "availability", "linearizable_kv", "no_lost_writes", "queue_safety"]

"""What traffic records: one :class:`Op` per client call, with its outcome.

Outcomes: ``ok`` (the call took effect, or observed the state), ``fail`` (it certainly did not
take effect: 412, 409, 404 on ack, a refused connection), ``unknown`` (a timeout, a reset, a
503 after the request left: it may or may not have taken effect, and may take effect at any
later time). Checkers treat each accordingly and never turn "unknown" into "ok".
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

OK, FAIL, UNKNOWN = "ok", "fail", "unknown"
WRITE_KINDS = ("write", "cas", "delete", "enqueue")  # the ops whose success means "writes work"


@dataclass(frozen=True)
class Op:
    client: str
    kind: str  # read write cas delete | enqueue claim ack | final-read
    key: str  # the kv key, or the queue name
    call: float
    ret: float
    outcome: str
    args: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def effective_ret(self) -> float:
        """When the op is known to be over: never, for an unknown outcome."""
        return float("inf") if self.outcome == UNKNOWN else self.ret


class History:
    """Thread-safe, append-only list of ops, plus the fault timeline."""

    def __init__(self) -> None:
        self._ops: list[Op] = []
        self._lock = threading.Lock()
        self.events: list[tuple[float, str]] = []  # (time, "apply kill(node-1)" / "heal" / "healthy")

    def add(self, op: Op) -> None:
        with self._lock:
            self._ops.append(op)

    def mark(self, at: float, event: str) -> None:
        with self._lock:
            self.events.append((at, event))

    @property
    def ops(self) -> list[Op]:
        with self._lock:
            return list(self._ops)

    def fault_windows(self) -> list[list[Op]]:
        """Per fault, in order: the ops called after it was applied that returned before its
        heal (what a scenario promises about the time a fault lasts)."""
        applied = [t for t, e in self.events if e.startswith("apply ")]
        healed = [t for t, e in self.events if e.startswith("heal ")]
        if len(applied) != len(healed):
            raise ValueError(f"{len(applied)} faults applied, {len(healed)} healed: {self.events}")
        ops = self.ops
        return [
            [op for op in ops if start < op.call and op.ret < end] for start, end in zip(applied, healed, strict=True)
        ]

    def counts(self) -> dict[str, int]:
        ops = self.ops
        return {"ops": len(ops), **{o: sum(op.outcome == o for op in ops) for o in (OK, FAIL, UNKNOWN)}}

    def dump(self) -> str:
        return json.dumps({"events": self.events, "ops": [asdict(op) for op in self.ops]})

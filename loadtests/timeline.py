"""What happened second by second: request outcomes, and how fast errors went away after a
fault. Pure."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field


@dataclass
class Timeline:
    """Per wall-clock second: [successes, failures]; and the fault events with their times."""

    per_second: dict[int, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    events: list[tuple[float, str]] = field(default_factory=list)

    def count(self, at: float, failed: bool) -> None:
        self.per_second[int(at)][1 if failed else 0] += 1

    def mark(self, at: float, event: str) -> None:
        self.events.append((at, event))


def recovery(
    per_second: dict[int, list[int]], fault_at: float, threshold: float = 0.01, stable_s: int = 3
) -> tuple[float, float | None]:
    """(peak error rate after the fault, seconds from the fault until the error rate stays
    under ``threshold`` for ``stable_s`` seconds; None if it never does).

    >>> series = {100: [10, 0], 101: [2, 8], 102: [5, 5], 103: [10, 0], 104: [10, 0], 105: [10, 0]}
    >>> recovery(series, 101.0)
    (0.8, 2.0)
    """
    seconds = sorted(s for s in per_second if s >= int(fault_at))
    rates = {s: per_second[s][1] / max(1, sum(per_second[s])) for s in seconds}
    peak = max(rates.values(), default=0.0)
    calm = 0
    for s in seconds:
        answered = per_second[s][0] + per_second[s][1]
        calm = calm + 1 if rates[s] < threshold and answered else 0
        if calm == stable_s:
            return peak, float(s - stable_s + 1 - int(fault_at))
    return peak, None

"""Service-level objectives: what a load run must meet for its exit code to be 0. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Slo:
    fail_ratio: float = 0.01
    p95_ms: float = 500.0
    p99_ms: float = 1500.0
    min_rps: float = 10.0


def breaches(stats: Any, options: Any) -> list[str]:
    """Every SLO the run's total stats miss, named with the measured value."""
    total = stats.total
    rps = total.num_requests / max(1e-9, (total.last_request_timestamp or 0) - total.start_time)
    checks = [
        ("fail ratio", total.fail_ratio, options.slo_fail_ratio, "max"),
        ("p95 ms", total.get_response_time_percentile(0.95), options.slo_p95_ms, "max"),
        ("p99 ms", total.get_response_time_percentile(0.99), options.slo_p99_ms, "max"),
        ("requests/s", rps, options.slo_min_rps, "min"),
    ]
    return [
        f"SLO {name} {'>' if kind == 'max' else '<'} {limit:g}: measured {value:.3g}"
        for name, value, limit, kind in checks
        if (kind == "max" and value > limit) or (kind == "min" and value < limit)
    ]

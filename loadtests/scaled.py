"""Load on the scaled mode, through its HAProxy: ``locust -f loadtests/scaled.py``."""

from loadtests.common import RuntimeUser, Slo, configure

configure("scaled", Slo(fail_ratio=0.01, p95_ms=800, p99_ms=2000, min_rps=10))
__all__ = ["RuntimeUser"]

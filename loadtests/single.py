"""Load on the single mode: ``locust -f loadtests/single.py --headless -u 20 -r 10 -t 30s``."""

from loadtests.common import RuntimeUser, Slo, configure

configure("single", Slo(fail_ratio=0.01, p95_ms=300, p99_ms=1000, min_rps=20))
__all__ = ["RuntimeUser"]

"""Load on the scaled mode, through its load balancer: ``locust -f loadtests/scaled.py``."""

from loadtests.listeners import register
from loadtests.slo import Slo
from loadtests.users import RuntimeUser

register("scaled", Slo(fail_ratio=0.01, p95_ms=800, p99_ms=2000, min_rps=10))


class ScaledUser(RuntimeUser):
    pass

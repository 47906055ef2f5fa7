"""Load on the single mode: ``locust -f loadtests/single.py --headless -u 20 -r 10 -t 30s``."""

from loadtests.listeners import register
from loadtests.slo import Slo
from loadtests.users import RuntimeUser

register("single", Slo(fail_ratio=0.01, p95_ms=300, p99_ms=1000, min_rps=20))


class SingleUser(RuntimeUser):
    pass

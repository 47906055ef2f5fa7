"""Load on the ha mode (users spread over the three nodes):
``locust -f loadtests/ha.py --headless -u 20 -r 10 -t 60s --fault kill-leader --fault-at 20``."""

from loadtests.listeners import register
from loadtests.slo import Slo
from loadtests.users import RuntimeUser

register("ha", Slo(fail_ratio=0.01, p95_ms=500, p99_ms=1500, min_rps=15))


class HaUser(RuntimeUser):
    pass

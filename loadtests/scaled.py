"""Load on the scaled mode, through its load balancer: ``locust -f loadtests/scaled.py``.

Two kinds of users, as clients of the mode would be: HTTP (weight 3) and gRPC (weight 1),
each through the mode's front door (two Envoys, or HAProxy's two frontends); pick one with
``locust -f loadtests/scaled.py ScaledGrpcUser``.
"""

from loadtests.grpc_user import GrpcRuntimeUser
from loadtests.listeners import register
from loadtests.slo import Slo
from loadtests.users import RuntimeUser

register("scaled", Slo(fail_ratio=0.01, p95_ms=800, p99_ms=2000, min_rps=10))


class ScaledUser(RuntimeUser):
    weight = 3


class ScaledGrpcUser(GrpcRuntimeUser):
    weight = 1

"""Load on the scaled-haproxy mode, through HAProxy: ``locust -f loadtests/scaled-haproxy.py``.

The scaled mode's users (HTTP weight 3, gRPC weight 1) through HAProxy's two frontends: the
HTTP API as TCP pass-through with the PROXY protocol, the gRPC API as HTTP/2 routed per call.
"""

from loadtests.grpc_user import GrpcRuntimeUser
from loadtests.listeners import register
from loadtests.slo import Slo
from loadtests.users import RuntimeUser

register("scaled-haproxy", Slo(fail_ratio=0.01, p95_ms=800, p99_ms=2000, min_rps=10))


class ScaledHaproxyUser(RuntimeUser):
    weight = 3


class ScaledHaproxyGrpcUser(GrpcRuntimeUser):
    weight = 1

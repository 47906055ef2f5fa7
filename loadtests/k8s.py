"""Load on the k8s mode, through its two Envoys: ``locust -f loadtests/k8s.py``.

Without ``--host`` or ``--cluster-json`` the run builds its own cluster here (node
containers, as ``modematrix up k8s`` does) and removes it at the end; with
``--cluster-json`` (the output of ``modematrix up k8s --json``) it loads a running one. The
same users as the scaled mode: HTTP (weight 3) and gRPC (weight 1), per call through Envoy.
"""

from loadtests.grpc_user import GrpcRuntimeUser
from loadtests.listeners import register
from loadtests.slo import Slo
from loadtests.users import RuntimeUser

register("k8s", Slo(fail_ratio=0.01, p95_ms=1000, p99_ms=2500, min_rps=10))


class K8sUser(RuntimeUser):
    weight = 3


class K8sGrpcUser(GrpcRuntimeUser):
    weight = 1

"""The k8s mode on a cluster built here (1 control plane, 3 workers, node containers): every
node Ready and every pod Running as kubectl sees them, the same store over HTTP and gRPC
through each Envoy, ``kubectl scale`` served by Envoy and drained with no failed request, and
the same platform deploying onto a cluster it is handed as if it were the user's.

    pytest scenarios/test_k8s.py --mode k8s          (tox -e k8s)
"""

from __future__ import annotations

import json
import time
from typing import Any

import grpc
import pytest

from runtime.rpc import pb, pb_grpc
from scenarios.steady import Load
from topologies.kuberun import KubeRun
from topologies.wait import wait_until

pytestmark = pytest.mark.k8s


def kubectl(run: KubeRun, *args: str) -> str:
    assert run.cluster is not None, "these scenarios run on a cluster built here"
    return run.cluster.kubectl(*args)


def unique(name: str) -> str:
    return f"{name}-{time.time_ns()}"


def test_kubectl_shows_every_node_ready_and_every_pod_running(cluster: KubeRun) -> None:
    nodes = json.loads(kubectl(cluster, "get", "nodes", "-o", "json"))["items"]
    ready = {
        n["metadata"]["name"]: next(c["status"] for c in n["status"]["conditions"] if c["type"] == "Ready")
        for n in nodes
    }
    assert len(ready) >= 3 and set(ready.values()) == {"True"}, ready
    roles = sorted(
        k.rsplit("/", 1)[1] for n in nodes for k in n["metadata"]["labels"] if "node-role.kubernetes.io/" in k
    )
    assert roles.count("control-plane") == 1 and roles.count("worker") >= 2, roles
    pods = json.loads(kubectl(cluster, "get", "pods", "-n", cluster.namespace, "-o", "json"))["items"]
    phases = {p["metadata"]["name"]: p["status"]["phase"] for p in pods}
    workloads = {p["metadata"]["labels"].get("app.kubernetes.io/name") for p in pods}
    assert {"envoy", "xds", "auth", "kv", "queue", "etcd", "db-init"} <= workloads, workloads
    not_running = {
        n: p for n, p in phases.items() if p != "Running" and not (n.startswith("db-init") and p == "Succeeded")
    }
    assert not not_running, not_running
    for pod in pods:  # one image for every workload, loaded without a registry
        assert {c["image"] for c in pod["spec"]["containers"]} == {cluster.image}


def test_the_same_store_over_http_and_grpc_through_each_door(cluster: KubeRun) -> None:
    """Every worker's node port reaches an Envoy (wherever Envoy's pods run)."""
    envoys = cluster.grpc_endpoints
    assert cluster.cluster is not None and len(envoys) == len(cluster.cluster.workers), envoys
    with cluster.client() as api:
        token = (("authorization", f"Bearer {api.login()}"),)
        for endpoint in envoys:
            key = unique("k8s")
            with cluster.client(endpoints=[f"https://{endpoint}"]) as one:
                assert one.put(f"/v1/kv/{key}", content=b"by http").status_code == 200
            with cluster.grpc_channel(endpoint) as channel:
                kv = pb_grpc.KvStub(channel)
                assert kv.Get(pb.GetRequest(key=key), metadata=token, timeout=10).value == b"by http"
                kv.Put(pb.PutRequest(key=key, value=b"by grpc"), metadata=token, timeout=10)
                with pytest.raises(grpc.RpcError) as no_token:
                    kv.Get(pb.GetRequest(key=key), timeout=10)
                assert no_token.value.code() is grpc.StatusCode.UNAUTHENTICATED
            assert api.get(f"/v1/kv/{key}").content == b"by grpc"


METRICS = (
    "import ssl, sys, urllib.request; "
    "context = ssl.create_default_context(); context.check_hostname = False; "
    "context.verify_mode = ssl.CERT_NONE; "
    "request = urllib.request.Request('https://127.0.0.1:8443/metrics', "
    "headers={'Authorization': 'Bearer ' + sys.argv[1]}); "
    "print(urllib.request.urlopen(request, context=context, timeout=5).read().decode())"
)


def kv_requests(run: KubeRun, pod: str, token: str) -> int:
    """kv requests this pod answered, from its own /metrics (read inside the pod, kubectl exec)."""
    text = kubectl(run, "exec", "-n", run.namespace, pod, "--", "/opt/venv/bin/python", "-c", METRICS, token)
    total = 0.0
    for line in text.splitlines():
        if line.startswith("runtime_requests_total{") and ('route="kv.get"' in line or 'route="kv.put"' in line):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def test_kubectl_scale_is_served_by_envoy_and_scaling_down_fails_no_request(cluster: KubeRun) -> None:
    with cluster.client() as admin:
        token = admin.login()
    before = set(cluster.ready_pods("kv"))
    with Load(cluster) as load:
        try:
            wait_until(lambda: load.outcomes["ok"] > 20, timeout=30, interval=0.1, message="load is flowing")
            kubectl(cluster, "scale", "deployment/kv", "--replicas=3", "-n", cluster.namespace)
            wait_until(lambda: len(cluster.ready_pods("kv")) == 3, timeout=120, interval=0.1, message="3 kv pods Ready")
            ready_at = time.monotonic()
            (new,) = set(cluster.ready_pods("kv")) - before
            wait_until(
                lambda: kv_requests(cluster, new, token) > 0, timeout=30, interval=0.1, message=f"{new} takes traffic"
            )
            took = time.monotonic() - ready_at
        finally:
            kubectl(cluster, "scale", "deployment/kv", "--replicas=2", "-n", cluster.namespace)
        wait_until(lambda: len(cluster.pods("kv")) == 2, timeout=120, interval=0.2, message="back to 2 kv pods")
        settled = load.outcomes["ok"]
        wait_until(lambda: load.outcomes["ok"] > settled + 40, timeout=30, interval=0.1, message="load still flowing")
    print(f"\nk8s: a new kv pod took traffic through Envoy {took:.2f} s after Ready; {dict(load.outcomes)}")
    assert load.failed == 0, load.failures[:10]


def test_the_platform_deploys_onto_a_cluster_it_is_handed_and_removes_only_its_namespace(
    cluster: KubeRun, capsys: pytest.CaptureFixture[str]
) -> None:
    """``modematrix up k8s --kubeconfig``, given this cluster's kubeconfig as a user's:
    a namespace of its own, every workload available, then ``down`` removes that namespace and
    nothing else."""
    from topologies.cli import main

    assert cluster.cluster is not None
    config = str(cluster.cluster.kubeconfig_path)
    namespace = unique("mm-handed")[:30]
    assert (
        main(
            [
                "up",
                "k8s",
                "--kubeconfig",
                config,
                "--namespace",
                namespace,
                "--image",
                cluster.image,
                "--json",
                "--timeout",
                "300",
            ]
        )
        == 0
    )
    described: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert described["namespace"] == namespace and described["kubeconfig"] == config
    pods = json.loads(kubectl(cluster, "get", "pods", "-n", namespace, "-o", "json"))["items"]
    assert {p["status"]["phase"] for p in pods} <= {"Running", "Succeeded"}, [p["status"]["phase"] for p in pods]
    assert main(["down", namespace, "--kubeconfig", config]) == 0

    def gone() -> bool:
        found = kubectl(cluster, "get", "namespaces", "-o", "name")
        return f"namespace/{namespace}" not in found.split()

    wait_until(gone, timeout=120, interval=1.0, message=f"namespace {namespace} removed")
    assert not cluster.unavailable(), "the run's own namespace was not touched"
    assert main(["down", "kube-system", "--kubeconfig", config]) != 0, "a namespace that is not a run's is refused"
    assert "namespace/kube-system" in kubectl(cluster, "get", "namespaces", "-o", "name").split()


PROBE = """
import json, socket, sys
found = {}
for name, host, port in json.loads(sys.argv[1]):
    try:
        socket.create_connection((host, port), timeout=3).close()
        found[f"{name}:{port}"] = "reached"
    except OSError as exc:
        found[f"{name}:{port}"] = type(exc).__name__
print("PROBE " + json.dumps(found))
"""


def test_a_pod_of_another_namespace_reaches_the_front_door_only(cluster: KubeRun) -> None:
    """Default-deny NetworkPolicies, enforced by the cluster's controller (kube-router's
    firewall in a cluster built here): a tenant's pod in another namespace connects to
    Envoy, and to nothing else of the run: not etcd, not xds, not a service pod."""
    targets = []
    for pod in cluster.pods():
        meta, status = pod.metadata, pod.status
        workload = (meta.labels or {}).get("app.kubernetes.io/name") if meta else None
        if workload in (None, "db-init") or status is None or not status.podIP:
            continue
        for container in pod.spec.containers if pod.spec else []:
            for port in container.ports or []:
                targets.append((workload, status.podIP, port.containerPort))
    assert {t[0] for t in targets} >= {"envoy", "xds", "auth", "kv", "queue", "etcd"}, targets
    tenant = unique("tenant")[:40]
    kubectl(cluster, "create", "namespace", tenant)
    try:
        kubectl(
            cluster,
            "run",
            "probe",
            "-n",
            tenant,
            "--image",
            cluster.image,
            "--image-pull-policy=IfNotPresent",
            "--restart=Never",
            "--command",
            "--",
            "/opt/venv/bin/python",
            "-c",
            PROBE,
            json.dumps(targets),
        )

        def finished() -> str | None:
            phase = kubectl(cluster, "get", "pod", "probe", "-n", tenant, "-o", "jsonpath={.status.phase}")
            return phase if phase in ("Succeeded", "Failed") else None

        assert wait_until(finished, timeout=180, interval=1.0, message="the probe pod finished") == "Succeeded"
        line = next(x for x in kubectl(cluster, "logs", "probe", "-n", tenant).splitlines() if x.startswith("PROBE "))
        found: dict[str, str] = json.loads(line.removeprefix("PROBE "))
    finally:
        kubectl(cluster, "delete", "namespace", tenant, "--wait=false")
    reached = sorted(k for k, v in found.items() if v == "reached")
    assert reached and all(k.startswith("envoy:") for k in reached), found
    with cluster.client() as api:  # and the mode keeps working behind its policies
        assert api.put(f"/v1/kv/{unique('np')}", content=b"v").status_code == 200

"""The k8s mode on a run built here (1 control plane, 3 workers, node containers): every
node Ready and every pod Running as kubectl sees them, the same store over HTTP and gRPC
through each Envoy, ``kubectl scale`` served by Envoy and drained with no failed request, and
the same code deploying onto a cluster it is handed as if it were the user's, and every
``modematrix`` verb reaching the run from another process.

    pytest scenarios/test_k8s.py --mode k8s          (tox -e k8s)
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from images import envoy_image
from runtime.rpc import pb, pb_grpc
from scenarios.steady import Load
from topologies import KubeRun
from topologies.cli import schemas
from topologies.client import ClusterClient, Credentials
from topologies.kubernetes.clusters import NodeCluster
from topologies.wait import wait_until

pytestmark = pytest.mark.k8s


def kubectl(run: KubeRun, *args: str, timeout: float = 60) -> str:
    assert run.cluster is not None, "these scenarios run on a run built here"
    return run.cluster.kubectl(*args, timeout=timeout)


def unique(name: str) -> str:
    return f"{name}-{time.time_ns()}"


def test_kubectl_shows_every_node_ready_and_every_pod_running(run: KubeRun) -> None:
    nodes = json.loads(kubectl(run, "get", "nodes", "-o", "json"))["items"]
    ready = {
        n["metadata"]["name"]: next(c["status"] for c in n["status"]["conditions"] if c["type"] == "Ready")
        for n in nodes
    }
    assert len(ready) >= 3 and set(ready.values()) == {"True"}, ready
    roles = sorted(
        k.rsplit("/", 1)[1] for n in nodes for k in n["metadata"]["labels"] if "node-role.kubernetes.io/" in k
    )
    assert roles.count("control-plane") == 1 and roles.count("worker") >= 2, roles
    pods = json.loads(kubectl(run, "get", "pods", "-n", run.namespace, "-o", "json"))["items"]
    phases = {p["metadata"]["name"]: p["status"]["phase"] for p in pods}
    workloads = {p["metadata"]["labels"].get("app.kubernetes.io/name") for p in pods}
    assert {"envoy", "xds", "auth", "kv", "queue", "etcd", "db-init"} <= workloads, workloads
    not_running = {
        n: p for n, p in phases.items() if p != "Running" and not (n.startswith("db-init") and p == "Succeeded")
    }
    assert not not_running, not_running
    for pod in pods:  # the runtime image for every workload, Envoy's with its one more layer; no registry
        expected = envoy_image(run.image) if pod["metadata"]["name"].startswith("envoy-") else run.image
        assert {c["image"] for c in pod["spec"]["containers"]} == {expected}


def test_each_pod_has_a_memory_figure_from_its_kubelet_and_envoy_its_own(run: KubeRun) -> None:
    """What the bench's idle-memory rows read on k8s: the kubelet's summary API per node,
    through the API server (no metrics-server), and Envoy's own process apart from the
    runtime that supervises it in the same pod."""
    parts = {f.part: f for f in run.memory()}
    running = [p.metadata.name for p in run.pods() if p.metadata and p.status and p.status.phase == "Running"]
    assert set(running) <= set(parts), (running, sorted(parts))
    envoys = [f for f in parts.values() if f.role == "envoy"]
    assert len(envoys) == 2 and all(f.part.endswith("/envoy") for f in envoys), sorted(parts)
    assert all(1 << 20 < f.rss_bytes < 1 << 30 for f in parts.values()), parts  # MiB-sized, not 0, not bytes misread


def test_the_same_store_over_http_and_grpc_through_each_door(run: KubeRun) -> None:
    """The run is reached as a user's cluster is, through the API server: one local port per
    Envoy replica, each forwarded to its own Envoy pod."""
    envoys = run.grpc_endpoints
    assert run.expose == "port-forward" and all(e.startswith("127.0.0.1:") for e in envoys), envoys
    assert len(envoys) == len(run.ready_pods("envoy")) == 2, envoys
    with run.client() as api:
        token = (("authorization", f"Bearer {api.login()}"),)
        for endpoint in envoys:
            key = unique("k8s")
            with run.client(endpoints=[f"https://{endpoint}"]) as one:
                assert one.put(f"/v1/kv/{key}", content=b"by http").status_code == 200
            with run.grpc_channel(endpoint) as channel:
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


def test_kubectl_scale_is_served_by_envoy_and_scaling_down_fails_no_request(run: KubeRun) -> None:
    with run.client() as admin:
        token = admin.login()
    before = set(run.ready_pods("kv"))
    with Load(run) as load:
        try:
            wait_until(lambda: load.outcomes["ok"] > 20, timeout=30, interval=0.1, message="load is flowing")
            kubectl(run, "scale", "deployment/kv", "--replicas=3", "-n", run.namespace)
            wait_until(lambda: len(run.ready_pods("kv")) == 3, timeout=120, interval=0.1, message="3 kv pods Ready")
            ready_at = time.monotonic()
            (new,) = set(run.ready_pods("kv")) - before
            wait_until(
                lambda: kv_requests(run, new, token) > 0, timeout=30, interval=0.1, message=f"{new} takes traffic"
            )
            took = time.monotonic() - ready_at
        finally:
            kubectl(run, "scale", "deployment/kv", "--replicas=2", "-n", run.namespace)
        wait_until(lambda: len(run.pods("kv")) == 2, timeout=120, interval=0.2, message="back to 2 kv pods")
        settled = load.outcomes["ok"]
        wait_until(lambda: load.outcomes["ok"] > settled + 40, timeout=30, interval=0.1, message="load still flowing")
    print(f"\nk8s: a new kv pod took traffic through Envoy {took:.2f} s after Ready; {dict(load.outcomes)}")
    assert load.failed == 0, load.failures[:10]


def test_modematrix_deploys_onto_a_cluster_it_is_handed_and_removes_only_its_namespace(
    run: KubeRun, capsys: pytest.CaptureFixture[str]
) -> None:
    """``modematrix up k8s --kubeconfig --expose nodeport --image-registry``, given this run's
    kubeconfig as a user's: the image pulled from a real registry (Debian's docker-registry in
    a container on the cluster's network, the image pushed to it, every node's containerd
    trusting it), a namespace of its own, every workload available, its front door on every
    node's node port and answering; then ``down`` removes that namespace and nothing else:
    every namespace and cluster-scoped object is as it was before."""
    from topologies.cli import main

    assert isinstance(run.cluster, NodeCluster)
    config = str(run.cluster.kubeconfig_path)
    namespace = unique("mm-handed")[:30]
    before = cluster_objects(run)
    with run.cluster.registry(push=[run.image, envoy_image(run.image)]) as registry:
        up = ["up", "k8s", "--kubeconfig", config, "--namespace", namespace, "--image", run.image]
        up += ["--expose", "nodeport", "--image-registry", registry]
        assert main([*up, "--json", "--timeout", "300"]) == 0
    described: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert not schemas.problems("up", described), schemas.problems("up", described)
    assert described["namespace"] == namespace and described["kubeconfig"] == config
    ports = {int(e.rsplit(":", 1)[1]) for e in described["endpoints"]}
    assert described["expose"] == "nodeport" and len(ports) == 1 and 30000 <= min(ports) <= 32767, described
    pods = json.loads(kubectl(run, "get", "pods", "-n", namespace, "-o", "json"))["items"]
    assert {p["status"]["phase"] for p in pods} <= {"Running", "Succeeded"}, [p["status"]["phase"] for p in pods]
    pulled = {s["imageID"] for p in pods for s in p["status"].get("containerStatuses", [])}
    assert pulled and all(i.startswith(f"{registry}/{run.image.split(':')[0]}@sha256:") for i in pulled), pulled
    for endpoint in described["endpoints"]:  # every node's port reaches an Envoy, wherever it runs
        with ClusterClient(
            [endpoint], Path(described["ca_file"]), Credentials("admin", described["admin"]["password"])
        ) as api:
            assert api.put(f"/v1/kv/{unique('nodeport')}", content=b"1").status_code == 200
    assert main(["down", described["run_id"]]) == 0  # the run's record knows its cluster and namespace

    def as_before() -> bool:
        return cluster_objects(run) == before

    wait_until(as_before, timeout=120, interval=1.0, message=f"namespace {namespace} removed, nothing else changed")
    assert not run.unavailable(), "the run's own namespace was not touched"
    assert main(["down", "kube-system", "--kubeconfig", config]) != 0, "a namespace that is not a run's is refused"
    assert "namespace/kube-system" in kubectl(run, "get", "namespaces", "-o", "name").split()


def test_the_exported_kustomize_base_deploys_with_kubectl_apply_k(run: KubeRun, tmp_path: Path) -> None:
    """``modematrix k8s manifests --format kustomize``: the user's own tooling (kubectl's
    built-in kustomize) deploys it into a namespace of its own, every workload available."""
    from topologies.cli import main

    namespace = unique("mm-kustomize")[:30]
    base = tmp_path / "base"
    argv = ["k8s", "manifests", "--namespace", namespace, "--image", run.image, "--format", "kustomize"]
    assert main([*argv, "--output", str(base), "--pki-dir", str(tmp_path / "pki")]) == 0
    try:
        kubectl(run, "apply", "-k", str(base))
        kubectl(
            run,
            "wait",
            "-n",
            namespace,
            "--for=condition=Available",
            "deployment",
            "--all",
            "--timeout=240s",
            timeout=300,
        )
        pods = json.loads(kubectl(run, "get", "pods", "-n", namespace, "-o", "json"))["items"]
        assert pods and {p["status"]["phase"] for p in pods} <= {"Running", "Succeeded"}
    finally:
        kubectl(run, "delete", "namespace", namespace, "--wait=false")


CLUSTER_SCOPED = (
    "namespaces,clusterroles,clusterrolebindings,customresourcedefinitions,persistentvolumes,storageclasses,"
    "priorityclasses,validatingwebhookconfigurations,mutatingwebhookconfigurations,ingressclasses"
)


def cluster_objects(run: KubeRun) -> set[str]:
    """Every namespace and cluster-scoped object of the kinds a deployment could leave behind."""
    return set(kubectl(run, "get", CLUSTER_SCOPED, "-o", "name").split())


def modematrix(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "topologies.cli", *args], capture_output=True, text=True, timeout=600)


def test_every_verb_reaches_the_run_from_another_process(run: KubeRun) -> None:
    """As a user in another shell: status, fault delete-pod (and heal), scale, logs, exec and
    kubeconfig, each a new process that finds the run from its record."""
    status = modematrix("status", run.run_id, "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert not schemas.problems("status RUN", report), schemas.problems("status RUN", report)
    assert report["target"] == "kubernetes" and len(report["nodes"]) == 4
    kv = sorted(p["name"] for p in report["pods"] if p["name"].startswith("kv-") and p["ready"])
    assert len(kv) == 2, report["pods"]

    deleted = modematrix("fault", run.run_id, "delete-pod", kv[0], "--json")
    assert deleted.returncode == 0, deleted.stderr
    assert not schemas.problems("fault", json.loads(deleted.stdout))
    wait_until(
        lambda: kv[0] not in run.ready_pods("kv") and len(run.ready_pods("kv")) == 2,
        timeout=120,
        interval=0.5,
        message="the Deployment replaces the deleted kv pod",
    )
    assert modematrix("fault", run.run_id, "heal").returncode == 0

    scaled = modematrix("scale", run.run_id, "queue=3", "--json")
    assert scaled.returncode == 0 and "deployment/queue: 2 -> 3 replicas" in scaled.stdout, scaled.stderr
    assert not schemas.problems("scale", json.loads(scaled.stdout))
    wait_until(lambda: len(run.ready_pods("queue")) == 3, timeout=120, interval=0.5, message="3 queue pods Ready")
    assert modematrix("scale", run.run_id, "queue=2").returncode == 0
    wait_until(lambda: len(run.pods("queue")) == 2, timeout=120, interval=0.5, message="back to 2 queue pods")

    pod = run.ready_pods("kv")[0]
    assert pod in modematrix("logs", run.run_id).stdout.split()
    logs = modematrix("logs", run.run_id, pod, "--tail", "5")
    assert logs.returncode == 0 and logs.stdout.strip(), logs.stderr
    whoami = modematrix("exec", run.run_id, pod, "--", "id", "-u")
    assert (whoami.returncode, whoami.stdout.strip()) == (0, "10001"), whoami.stderr
    failing = modematrix("exec", run.run_id, pod, "--", "sh", "-c", "exit 3")
    assert failing.returncode == 3, "exec exits with the command's code, as on containers"
    config = modematrix("kubeconfig", run.run_id)  # a path: export KUBECONFIG=$(modematrix kubeconfig RUN)
    assert config.returncode == 0 and "current-context" in Path(config.stdout.strip()).read_text()
    unknown = modematrix("fault", run.run_id, "stop", "kv")
    assert unknown.returncode == 2 and "no fault 'stop' for k8s" in unknown.stderr


def test_an_etcd_member_replaced_by_hand_joins_again_on_an_emptied_data_dir(run: KubeRun) -> None:
    """``modematrix fault RUN replace-member etcd-N`` removes the member; ``fault RUN heal``,
    from another process, adds it again and its pod starts on the same volume with its data
    dir emptied (the mark it joined by is there); the store answers through the front door."""
    wrong = modematrix("fault", run.run_id, "replace-member", "kv")
    assert wrong.returncode == 2 and "not a Ready etcd member" in wrong.stderr, wrong.stderr
    pod = sorted(run.ready_pods("etcd"))[-1]
    before = run.exec(pod, ["sh", "-c", "cat /var/lib/etcd/joined 2>/dev/null; echo"])[1].strip()
    removed = modematrix("fault", run.run_id, "replace-member", pod, "--json")
    assert removed.returncode == 0, removed.stderr
    assert not schemas.problems("fault", json.loads(removed.stdout))
    healed = modematrix("fault", run.run_id, "heal")
    assert healed.returncode == 0, healed.stderr
    code, mark = run.exec(pod, ["cat", "/var/lib/etcd/joined"])
    assert code == 0 and mark.strip() and mark.strip() != before, mark
    assert len(run.ready_pods("etcd")) == 3 and pod in run.ready_pods("etcd")
    with run.client() as api:
        key = unique("/v1/kv/replaced")
        assert api.put(key, content=b"joined").status_code == 200
        assert api.get(key).content == b"joined"


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


def test_a_pod_of_another_namespace_reaches_the_front_door_only(run: KubeRun) -> None:
    """Default-deny NetworkPolicies, enforced by the run's controller (kube-router's
    firewall in a run built here): a tenant's pod in another namespace connects to
    Envoy, and to nothing else of the run: not etcd, not xds, not a service pod."""
    targets = []
    for pod in run.pods():
        meta, status = pod.metadata, pod.status
        workload = (meta.labels or {}).get("app.kubernetes.io/name") if meta else None
        if workload in (None, "db-init") or status is None or not status.podIP:
            continue
        for container in pod.spec.containers if pod.spec else []:
            for port in container.ports or []:
                targets.append((workload, status.podIP, port.containerPort))
    assert {t[0] for t in targets} >= {"envoy", "xds", "auth", "kv", "queue", "etcd"}, targets
    tenant = unique("tenant")[:40]
    kubectl(run, "create", "namespace", tenant)
    try:
        kubectl(
            run,
            "run",
            "probe",
            "-n",
            tenant,
            "--image",
            run.image,
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
            phase = kubectl(run, "get", "pod", "probe", "-n", tenant, "-o", "jsonpath={.status.phase}")
            return phase if phase in ("Succeeded", "Failed") else None

        assert wait_until(finished, timeout=180, interval=1.0, message="the probe pod finished") == "Succeeded"
        line = next(x for x in kubectl(run, "logs", "probe", "-n", tenant).splitlines() if x.startswith("PROBE "))
        found: dict[str, str] = json.loads(line.removeprefix("PROBE "))
    finally:
        kubectl(run, "delete", "namespace", tenant, "--wait=false")
    reached = sorted(k for k, v in found.items() if v == "reached")
    assert reached and all(k.startswith("envoy:") for k in reached), found
    with run.client() as api:  # and the mode keeps working behind its policies
        assert api.put(f"/v1/kv/{unique('np')}", content=b"v").status_code == 200

"""Against a real Kubernetes API server, built here from source (`modematrix k8s build`) and
started on loopback with its own etcd: the k8s manifests are accepted (server-side apply, and
again with no change), `kubectl` sees them, and the xds pod's EndpointSlice source follows
slices as they are created, changed and deleted. No kubelet or node: nothing is scheduled."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from lightkube import AsyncClient, Client
from lightkube.config.kubeconfig import KubeConfig
from lightkube.models.discovery_v1 import Endpoint as SliceEndpoint
from lightkube.models.discovery_v1 import EndpointConditions, EndpointPort
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import Deployment, StatefulSet
from lightkube.resources.core_v1 import Namespace, Secret, Service
from lightkube.resources.discovery_v1 import EndpointSlice

from images import kubernetes
from runtime.discovery.endpointslices import SERVICE_LABEL, EndpointSliceSource
from runtime.security.certs import Bundle
from tests.conftest import free_port
from topologies import spec
from topologies.cli import main
from topologies.kubernetes.apply import apply, delete_namespace, kubeconfig
from topologies.kubernetes.manifests import manifests
from topologies.pki import RunPki
from topologies.runs import Secrets
from topologies.wait import wait_until

pytestmark = [pytest.mark.etcd, pytest.mark.timeout(180)]


def answers(config: KubeConfig) -> bool:
    with Client(config=config) as client:
        return bool(list(client.list(Namespace)))


TOKEN = "test-admin-token"


@pytest.fixture(scope="module")
def binaries() -> Path:
    import shutil

    built = kubernetes.folder()
    if not (built / "kube-apiserver").exists() or shutil.which("etcd") is None:
        pytest.skip("the Kubernetes components are not built: modematrix k8s build (.ci/run does)")
    return built


@pytest.fixture(scope="module")
def api(binaries: Path) -> Iterator[KubeConfig]:
    with tempfile.TemporaryDirectory(prefix="kapi-") as root:
        folder = Path(root)
        client_port, peer_port, port = free_port(), free_port(), free_port()
        subprocess.run(["openssl", "genrsa", "-out", folder / "sa.key", "2048"], check=True, capture_output=True)
        subprocess.run(
            ["openssl", "rsa", "-in", folder / "sa.key", "-pubout", "-out", folder / "sa.pub"],
            check=True,
            capture_output=True,
        )
        (folder / "tokens.csv").write_text(f"{TOKEN},admin,1,system:masters\n")
        logs = open(folder / "log", "ab")
        etcd = subprocess.Popen(
            [
                "etcd",
                "--data-dir",
                str(folder / "etcd"),
                "--listen-client-urls",
                f"http://127.0.0.1:{client_port}",
                "--advertise-client-urls",
                f"http://127.0.0.1:{client_port}",
                "--listen-peer-urls",
                f"http://127.0.0.1:{peer_port}",
            ],
            stdout=logs,
            stderr=logs,
        )
        server = subprocess.Popen(
            [
                str(binaries / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{client_port}",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={folder / 'sa.pub'}",
                f"--service-account-signing-key-file={folder / 'sa.key'}",
                f"--cert-dir={folder / 'certs'}",
                f"--secure-port={port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--token-auth-file={folder / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                "--service-cluster-ip-range=10.96.0.0/16",
            ],
            stdout=logs,
            stderr=logs,
        )
        config = kubeconfig(f"https://127.0.0.1:{port}", token=TOKEN)
        try:
            wait_until(
                lambda: answers(config),
                timeout=60,
                interval=0.5,
                message="kube-apiserver ready",
                ignore=(Exception,),
            )
            yield config
        finally:
            server.kill()  # a throwaway: no graceful shutdown to wait for
            etcd.kill()
            server.wait(20)
            etcd.wait(20)
            logs.close()


def kubectl(binaries: Path, config: KubeConfig, *args: str) -> str:
    current = config.get()
    assert current is not None
    server = current.cluster.server
    argv = [str(binaries / "kubectl"), "--server", server, "--insecure-skip-tls-verify", "--token", TOKEN, *args]
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout


def test_a_real_api_server_takes_the_manifests_and_kubectl_sees_them(
    api: KubeConfig, binaries: Path, tmp_path: Path
) -> None:
    made = manifests(
        spec.load("scaled"),
        namespace="mm-apply",
        image="modematrix/runtime:test",
        secrets=Secrets("s" * 32, "pw"),
        pki=RunPki.create(tmp_path),
    )
    applied = apply(made, api)
    assert applied[0] == "Namespace/mm-apply" and len(applied) == len(made)
    with Client(config=api) as client:
        check_applied(client, made, applied, api)
    listed = kubectl(binaries, api, "get", "deployments", "-n", "mm-apply", "-o", "name")
    assert sorted(listed.split()) == [f"deployment.apps/{n}" for n in ("auth", "envoy", "kv", "queue", "xds")]
    delete_namespace(api, "mm-apply")


def check_applied(client: Client, made: list[dict[str, object]], applied: list[str], api: KubeConfig) -> None:
    replicas = {
        d.metadata.name: d.spec.replicas for d in client.list(Deployment, namespace="mm-apply") if d.metadata and d.spec
    }
    assert replicas == {
        "envoy": 2,
        "xds": 1,
        "auth": 2,
        "kv": 2,
        "queue": 2,
    }

    def generation() -> int | None:
        meta = client.get(StatefulSet, "etcd", namespace="mm-apply").metadata
        return meta.generation if meta else None

    before = generation()
    assert apply(made, api) == applied  # again: server-side apply, nothing changes
    assert before is not None and generation() == before


def _slice(name: str, *endpoints: SliceEndpoint) -> EndpointSlice:
    return EndpointSlice(
        metadata=ObjectMeta(name=name, namespace="mm-slices", labels={SERVICE_LABEL: "kv"}),
        addressType="IPv4",
        endpoints=list(endpoints),
        ports=[EndpointPort(name="https", port=8443), EndpointPort(name="grpc", port=8445)],
    )


@pytest.mark.anyio
async def test_the_endpointslice_source_follows_a_real_api_server(api: KubeConfig) -> None:
    apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "mm-slices"}}], api)
    with Client(config=api) as client:
        await follow(client, api)
    delete_namespace(api, "mm-slices")


async def follow(client: Client, api: KubeConfig) -> None:
    client.create(_slice("kv-a", SliceEndpoint(addresses=["10.0.0.1"], conditions=EndpointConditions(ready=True))))
    watcher = AsyncClient(config=api, namespace="mm-slices")
    source = EndpointSliceSource("mm-slices", ["kv"], client=watcher)
    seen = source.watch()
    first = await asyncio.wait_for(anext(seen), 20)
    assert [(e.host, e.port, e.grpc_port, e.ready) for e in first] == [("10.0.0.1", 8443, 8445, True)]

    two = [
        SliceEndpoint(
            addresses=["10.0.0.1"], conditions=EndpointConditions(ready=False, serving=True, terminating=True)
        ),
        SliceEndpoint(addresses=["10.0.0.2"], conditions=EndpointConditions(ready=True)),
    ]
    client.replace(_slice("kv-a", *two))
    changed = await asyncio.wait_for(anext(seen), 20)
    assert [(e.host, e.ready) for e in changed] == [("10.0.0.1", False), ("10.0.0.2", True)]

    client.delete(EndpointSlice, "kv-a", namespace="mm-slices")
    assert await asyncio.wait_for(anext(seen), 20) == []
    await seen.aclose()
    await watcher.close()


def test_up_on_an_existing_cluster_uses_a_namespace_of_its_own_and_removes_it(
    api: KubeConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``modematrix up k8s --kubeconfig``: this API server has no node, so nothing becomes
    available; up says which workloads and why, and removes its namespace again. A namespace
    that is not a run's is neither used nor removed."""
    path = _admin_kubeconfig(api, tmp_path)
    up = ["up", "k8s", "--kubeconfig", str(path), "--image", "modematrix/runtime:test", "--timeout", "3", "--json"]
    assert main([*up, "--namespace", "mm-up"]) == 1
    said = capsys.readouterr().err
    assert "not available after 3 s, namespace mm-up removed" in said and "Deployment/kv 0/2 ready" in said
    with Client(config=api) as client:
        gone = client.get(Namespace, "mm-up")
    assert (
        gone.metadata is not None and gone.metadata.deletionTimestamp is not None
    )  # no namespace controller here to finish it

    apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "someone-elses"}}], api)
    assert main([*up, "--namespace", "someone-elses"]) == 2
    assert "is not a modematrix run's" in capsys.readouterr().err
    assert main(["down", "someone-elses", "--kubeconfig", str(path)]) == 2
    assert main(["down", "mm-never", "--kubeconfig", str(path)]) == 2
    assert main([*up, "--namespace", "Not_A_Name"]) == 2
    assert main(["up", "k8s", "--kubeconfig", str(tmp_path / "missing")]) == 2


def test_the_api_server_admits_every_pod_of_the_mode_under_pod_security_restricted(
    api: KubeConfig, tmp_path: Path
) -> None:
    """The namespace enforces Pod Security ``restricted`` (the API server's admission does,
    not this test): every pod the mode's Deployments, StatefulSet and Job would create is
    admitted as it is, and a pod that breaks the level is refused (the check can fail)."""
    from lightkube import ApiError, Client, codecs
    from lightkube.resources.core_v1 import Pod, ServiceAccount

    namespace = "mm-restricted"
    made = manifests(
        spec.load("scaled"),
        namespace=namespace,
        image="modematrix/runtime:test",
        secrets=Secrets("s" * 32, "pw"),
        pki=RunPki.create(tmp_path),
    )
    apply(made, api)
    templates = {
        m["metadata"]["name"]: m["spec"]["template"] for m in made if m["kind"] in ("Deployment", "StatefulSet", "Job")
    }
    assert set(templates) == {"envoy", "xds", "auth", "kv", "queue", "etcd", "db-init"}
    with Client(config=api) as client:
        # no controller manager here to make the namespace's default ServiceAccount
        client.create(ServiceAccount(metadata=ObjectMeta(name="default")), namespace=namespace)
        for name, template in templates.items():
            spec_ = json.loads(json.dumps(template["spec"]))
            for volume in spec_.get("volumes", []):
                volume.pop("persistentVolumeClaim", None)
            if name == "etcd":  # the StatefulSet's claim template becomes a volume of its pods
                spec_["volumes"].append({"name": "data", "emptyDir": {}})
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"admitted-{name}",
                    "namespace": namespace,
                    "labels": template["metadata"]["labels"],
                },
                "spec": spec_,
            }
            client.create(codecs.from_dict(pod), namespace=namespace)  # type: ignore[type-var]  # 403 if it broke the level
        privileged = json.loads(json.dumps(templates["envoy"]["spec"]))  # as Envoy's pods once were
        privileged["containers"][0]["ports"][0]["hostPort"] = 8443
        with pytest.raises(ApiError) as refused:
            client.create(  # type: ignore[type-var]
                codecs.from_dict(
                    {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "refused"}, "spec": privileged}
                ),
                namespace=namespace,
            )
        assert refused.value.status.code == 403 and 'violates PodSecurity "restricted' in str(refused.value)
        assert {p.metadata.name for p in client.list(Pod, namespace=namespace) if p.metadata} >= {
            f"admitted-{n}" for n in templates
        }


def test_a_load_balanced_front_door_waits_for_its_address_and_envoys_certificate_names_it(
    api: KubeConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--expose loadbalancer``: the run's namespace and the envoy Service come first; with no
    load balancer controller, up says so and removes the namespace; with one (this test, acting
    as it, writes the Service's status), Envoy's certificate names the address it gave."""
    path = _admin_kubeconfig(api, tmp_path)
    up = ["up", "k8s", "--kubeconfig", str(path), "--image", "modematrix/runtime:test", "--expose", "loadbalancer"]
    assert main([*up, "--timeout", "2", "--namespace", "mm-no-lb"]) == 1
    assert "no load balancer gave Service envoy an address within 2 s" in capsys.readouterr().err

    def controller() -> None:  # what a cloud's load balancer controller does
        def give() -> bool:
            with Client(config=api) as client:
                client.patch(
                    Service.Status,
                    "envoy",
                    {"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}},
                    namespace="mm-lb",
                )
            return True

        wait_until(give, timeout=30, interval=0.2, message="the envoy Service exists", ignore=(Exception,))

    giver = threading.Thread(target=controller)
    giver.start()
    assert main([*up, "--timeout", "20", "--namespace", "mm-lb"]) == 1  # no node: nothing becomes available
    giver.join()
    assert "not available after 20 s, namespace mm-lb removed" in capsys.readouterr().err
    with Client(config=api) as client:  # no namespace controller here: its objects stay to be read
        secret = client.get(Secret, "tls-envoy", namespace="mm-lb")
        service = client.get(Service, "envoy", namespace="mm-lb")
    assert service.spec is not None and service.spec.type == "LoadBalancer"
    assert secret.data is not None
    pair = Bundle.load(base64.b64decode(secret.data["bundle"]).decode()).get("node")
    assert pair is not None
    names = x509.load_pem_x509_certificate(pair[0]).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert "203.0.113.7" in [str(ip) for ip in names.value.get_values_for_type(x509.IPAddress)]


def _admin_kubeconfig(api: KubeConfig, tmp_path: Path) -> Path:
    current = api.get()
    assert current is not None
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "c", "cluster": {"server": current.cluster.server, "insecure-skip-tls-verify": True}}
                ],
                "users": [{"name": "u", "user": {"token": TOKEN}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return path


FAKE_KUBECTL = """\
import socket, sys
args = sys.argv[1:]
pod = next(a for a in args if a.startswith("pod/"))[4:]
port = int(next(a for a in args if a.endswith(":8443")).split(":")[0])
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", port))
server.listen()
while True:
    conn, _ = server.accept()
    conn.sendall(pod.encode())
    conn.close()
"""


def test_the_port_forward_supervisor_keeps_each_door_on_a_ready_pod(api: KubeConfig, tmp_path: Path) -> None:
    """The supervisor of ``--expose port-forward`` against a real API server, with a kubectl
    that answers each connection with the pod it forwards to: one door per Envoy pod, a
    door whose pod goes moves to another on the same port, a SIGKILLed supervisor takes its
    kubectls with it and is started again on the same ports, and stop closes every door."""
    import os
    import signal
    import socket
    import sys

    from lightkube.models.core_v1 import Container, PodCondition, PodSpec, PodStatus
    from lightkube.resources.core_v1 import Pod

    from topologies.kubernetes import forward

    def served(door: str) -> str | None:
        try:
            with socket.create_connection(("127.0.0.1", int(door.rsplit(":", 1)[1])), timeout=2) as conn:
                return conn.recv(100).decode() or None
        except OSError:
            return None

    ns = "mm-forward"
    apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}], api)
    apply([{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": ns}}], api)
    spec = PodSpec(containers=[Container(name="c", image="i")])
    with Client(config=api) as client:
        for name in ("envoy-a", "envoy-b"):
            meta = ObjectMeta(name=name, namespace=ns, labels={"app.kubernetes.io/name": "envoy"})
            client.create(Pod(metadata=meta, spec=spec))
            ready = PodStatus(conditions=[PodCondition(type="Ready", status="True")])
            client.patch(Pod.Status, name, {"status": ready.to_dict()}, namespace=ns)
    fake = tmp_path / "kubectl.py"
    fake.write_text(FAKE_KUBECTL)
    folder = tmp_path / "run"
    folder.mkdir()
    plan = forward.Plan([sys.executable, str(fake)], str(_admin_kubeconfig(api, tmp_path)), ns, forward.free_ports(2))
    doors = forward.start(folder, plan, timeout=30)
    try:
        assert doors == plan.doors
        assert sorted(served(d) or "" for d in doors) == ["envoy-a", "envoy-b"]
        moved = next(d for d in doors if served(d) == "envoy-a")
        with Client(config=api) as client:
            client.delete(Pod, "envoy-a", namespace=ns)
        wait_until(lambda: served(moved) == "envoy-b", timeout=30, interval=0.2, message="the door moved to envoy-b")

        pid = forward.running(folder)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: all(served(d) is None for d in doors), timeout=30, interval=0.2, message="its kubectls end")
        assert forward.ensure(folder, timeout=30) == doors  # a later command starts it again, same ports
        assert all(served(d) == "envoy-b" for d in doors)
    finally:
        forward.stop(folder)
    assert forward.running(folder) is None and all(served(d) is None for d in doors)


ONE_FORWARD = """\
import socket, sys
args = sys.argv[1:]
if "pod/gone" in args:
    sys.exit('error: pods "gone" not found')
local = int(args[-1].split(":")[0])
server = socket.socket()
server.bind(("127.0.0.1", local))
server.listen()
while True:
    conn, _ = server.accept()
    conn.sendall(args[-2].encode())
    conn.close()
"""


def test_one_port_forward_lasts_the_block_and_a_kubectl_that_exits_says_why(tmp_path: Path) -> None:
    """``forward.once`` (a benchmark's raw-etcd baseline goes through it): a local port that
    reaches the target while the block runs and is closed after; kubectl's own error if it
    exits first."""
    import socket
    import sys

    from topologies.exceptions import EngineError
    from topologies.kubernetes import forward

    fake = tmp_path / "kubectl.py"
    fake.write_text(ONE_FORWARD)
    with forward.once([sys.executable, str(fake)], "ns", "pod/etcd-0", 2379) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
            assert conn.recv(100) == b"pod/etcd-0"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    with pytest.raises(EngineError, match='exited \\(1\\): error: pods "gone" not found'):
        with forward.once([sys.executable, str(fake)], "ns", "pod/gone", 2379):
            pass


def test_a_fault_that_scales_a_deployment_is_scaled_back_by_any_later_heal(api: KubeConfig, tmp_path: Path) -> None:
    """``modematrix fault RUN kill kube-control-plane-2`` scaled kv up by one and ``fault RUN
    heal`` (another process) left it so: the count before is now noted on the Deployment."""
    from topologies.kubernetes.run import REPLICAS_BEFORE, note_replicas, restore_replicas

    made = manifests(
        spec.load("scaled"),
        namespace="mm-note",
        image="modematrix/runtime:test",
        secrets=Secrets("s" * 32, "pw"),
        pki=RunPki.create(tmp_path),
    )
    apply(made, api)
    with Client(config=api) as client:
        assert note_replicas(api, "mm-note", "kv") == 2
        client.patch(Deployment, "kv", {"spec": {"replicas": 3}}, namespace="mm-note")  # what the fault does next
        assert note_replicas(api, "mm-note", "kv") == 2  # a second fault keeps the first count
        assert restore_replicas(api, "mm-note") == {"kv": 2}
        kv = client.get(Deployment, "kv", namespace="mm-note")
        assert kv.spec is not None and kv.spec.replicas == 2
        assert kv.metadata is not None and REPLICAS_BEFORE not in (kv.metadata.annotations or {})
        assert restore_replicas(api, "mm-note") == {}  # nothing noted: nothing touched
    delete_namespace(api, "mm-note")

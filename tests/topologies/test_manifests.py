"""The k8s mode's manifests, from the scaled spec: valid against the Kubernetes 1.34 schemas
(offline, kubernetes-validate), and shaped as the mode promises."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cryptography import x509

from runtime.security.certs import PEER_NAME, Bundle
from topologies import spec
from topologies.cli import main
from topologies.kubernetes.manifests import (
    ETCD_DATA,
    ETCD_JOIN,
    ETCD_JOIN_DIR,
    EVICT_AFTER_S,
    KUBERNETES_VERSION,
    manifests,
    to_yaml,
    workloads,
)
from topologies.pki import RunPki
from topologies.runs import Secrets

NS = "mm-test"


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    pki = RunPki.create(tmp_path_factory.mktemp("pki"))
    return manifests(
        spec.load("scaled"), namespace=NS, image="modematrix/runtime:test", secrets=Secrets("s" * 32, "pw"), pki=pki
    )


def kinds(found: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in found if m["kind"] == kind}


def test_every_manifest_is_valid_kubernetes_1_34(made: list[dict[str, Any]]) -> None:
    for manifest in made:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    assert len(made) >= 20
    assert list(yaml.safe_load_all(to_yaml(made))) == json.loads(json.dumps(made))


def test_an_invalid_manifest_is_caught_by_the_validator(made: list[dict[str, Any]]) -> None:
    broken = json.loads(json.dumps(kinds(made, "Deployment")["kv"]))
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_a_deployment_per_service_set_with_the_specs_counts_probes_and_budgets(made: list[dict[str, Any]]) -> None:
    deployments = kinds(made, "Deployment")
    assert {n: d["spec"]["replicas"] for n, d in deployments.items()} == {
        "envoy": 2,
        "xds": 1,
        "auth": 2,
        "kv": 2,
        "queue": 2,
    }
    kv = deployments["kv"]["spec"]["template"]["spec"]["containers"][0]
    assert kv["readinessProbe"]["httpGet"]["path"] == "/readyz" and kv["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert kv["resources"]["requests"] and kv["resources"]["limits"]["memory"] == "256Mi"
    assert {p["name"] for p in kv["ports"]} == {"https", "grpc"}
    env = {e["name"]: e for e in kv["env"]}
    assert env["RUNTIME_SERVICES"]["value"] == "kv" and "RUNTIME_CLUSTER_SECRET" not in env
    assert env["RUNTIME_DB_ENDPOINTS"]["value"].count("https://etcd-") == 3
    assert env["RUNTIME_ISSUERS"]["value"] == f"auth.{NS}.svc:8443"
    assert set(kinds(made, "PodDisruptionBudget")) == {"envoy", "auth", "kv", "queue", "etcd"}
    assert kinds(made, "PodDisruptionBudget")["etcd"]["spec"]["minAvailable"] == 2


def test_xds_reads_endpointslices_and_may_do_nothing_else(made: list[dict[str, Any]]) -> None:
    xds = kinds(made, "Deployment")["xds"]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in xds["containers"][0]["env"]}
    assert env["RUNTIME_ENDPOINT_SOURCE"] == "kubernetes" and env["RUNTIME_KUBERNETES_NAMESPACE"] == NS
    assert xds["serviceAccountName"] == "xds"
    assert kinds(made, "Role")["xds"]["rules"] == [
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]}
    ]
    services = kinds(made, "Service")
    assert {p["name"] for p in services["kv"]["spec"]["ports"]} == {"https", "grpc"}  # EndpointSlice port names


def test_tls_as_in_the_other_modes(made: list[dict[str, Any]]) -> None:
    secrets = kinds(made, "Secret")
    bundles = {n[4:]: Bundle.load(s["stringData"]["bundle"]) for n, s in secrets.items() if n.startswith("tls-")}
    assert {n for n, b in bundles.items() if b.ca_key_pem} == {"auth"}, "only issuers hold the CA key"
    cert = x509.load_pem_x509_certificate(bundles["kv"].pairs["node"][0])
    assert common_name(cert) == "kv"  # the DB user
    assert f"kv.{NS}.svc" in cert.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.DNSName)
    etcd = secrets["etcd-tls"]["stringData"]
    peer = x509.load_pem_x509_certificate(etcd["peer.pem"].encode())
    assert common_name(peer) == PEER_NAME
    statefulset = kinds(made, "StatefulSet")["etcd"]
    script = statefulset["spec"]["template"]["spec"]["containers"][0]["command"][-1]
    assert "--client-cert-auth" in script and f"--peer-cert-allowed-cn={PEER_NAME}" in script
    assert statefulset["spec"]["replicas"] == 3 and statefulset["spec"]["volumeClaimTemplates"]


def common_name(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value)


def test_deployments_leave_a_dead_node_after_evict_after_and_etcd_waits_for_its_volume(
    made: list[dict[str, Any]], tmp_path: Path
) -> None:
    for name, deployment in kinds(made, "Deployment").items():
        tolerations = deployment["spec"]["template"]["spec"]["tolerations"]
        assert {(t["key"], t["effect"], t["tolerationSeconds"]) for t in tolerations} == {
            ("node.kubernetes.io/not-ready", "NoExecute", EVICT_AFTER_S),
            ("node.kubernetes.io/unreachable", "NoExecute", EVICT_AFTER_S),
        }, name
    assert "tolerations" not in kinds(made, "StatefulSet")["etcd"]["spec"]["template"]["spec"]
    scaled, pki = spec.load("scaled"), RunPki.create(tmp_path)
    later = manifests(scaled, namespace=NS, image="i", secrets=Secrets("s" * 32, "pw"), pki=pki, evict_after=120)
    assert kinds(later, "Deployment")["kv"]["spec"]["template"]["spec"]["tolerations"][1]["tolerationSeconds"] == 120
    with pytest.raises(ValueError, match="evict after: expected 0 to 3600 seconds, got -1"):
        manifests(scaled, namespace=NS, image="i", secrets=Secrets("s" * 32, "pw"), pki=pki, evict_after=-1)


def test_workloads_group_the_spec() -> None:
    assert [(w.name, w.replicas) for w in workloads(spec.load("ha"))] == [("auth-ingress-kv-queue", 3)]


def test_manifests_command_prints_yaml_and_refuses_bad_input(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["k8s", "manifests", "--namespace", "mm-x", "--image", "img:1", "--pki-dir", str(tmp_path)]) == 0
    printed = list(yaml.safe_load_all(capsys.readouterr().out))
    assert {m["kind"] for m in printed} >= {"Namespace", "Deployment", "StatefulSet", "Service", "Secret", "Job"}
    assert (tmp_path / "ca.pem").exists()
    assert main(["k8s", "manifests", "--namespace", "Bad_NS", "--pki-dir", str(tmp_path)]) == 2
    assert "namespace" in capsys.readouterr().err
    assert main(["k8s", "manifests", "--mode", "single", "--pki-dir", str(tmp_path)]) == 2
    assert main(["k8s", "manifests", "--evict-after", "99999", "--image", "i", "--pki-dir", str(tmp_path)]) == 2
    assert "--evict-after: expected 0 to 3600 seconds, got 99999" in capsys.readouterr().err


def pod_specs(made: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        m["metadata"]["name"]: m["spec"]["template"]["spec"]
        for m in made
        if m["kind"] in ("Deployment", "StatefulSet", "Job")
    }


def test_every_pod_is_restricted_with_a_read_only_root_and_no_token_but_xds(made: list[dict[str, Any]]) -> None:
    """What Pod Security ``restricted`` asks (the real API server's admission is in
    tests/topologies/test_kubernetes_api.py), plus read-only roots and no service-account
    token where the API is not used."""
    namespace = kinds(made, "Namespace")[NS]["metadata"]["labels"]
    assert namespace["pod-security.kubernetes.io/enforce"] == "restricted"
    for name, pod in pod_specs(made).items():
        assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["seccompProfile"] == {
            "type": "RuntimeDefault"
        }, name
        assert pod["automountServiceAccountToken"] is (name == "xds"), name
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] and not context["allowPrivilegeEscalation"], name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert not [p for p in container.get("ports", []) if "hostPort" in p], f"{name}: a host port"


def test_secrets_are_files_of_volumes_and_only_auth_holds_the_shared_ones(made: list[dict[str, Any]]) -> None:
    for name, pod in pod_specs(made).items():
        env = {e["name"]: e for c in pod["containers"] for e in c["env"]}
        assert not [n for n, e in env.items() if "secretKeyRef" in str(e.get("valueFrom", ""))], name
        assert not {"RUNTIME_CLUSTER_SECRET", "RUNTIME_ADMIN_PASSWORD", "RUNTIME_TLS_BUNDLE"} & set(env), name
        given = {
            item["key"]
            for volume in pod.get("volumes", [])
            for source in volume.get("projected", {}).get("sources", [])
            for item in source["secret"]["items"]
        }
        if name == "etcd":
            continue  # etcd's own files (its TLS), a Secret volume of their own
        shared = {"cluster-secret", "admin-password"} & given
        assert shared == ({"cluster-secret", "admin-password"} if name == "auth" else set()), (name, given)
        if name != "db-init":
            assert "RUNTIME_TLS_BUNDLE_FILE" in env and "bundle" in given, name


def test_default_deny_with_the_modes_paths_listed(made: list[dict[str, Any]]) -> None:
    policies = kinds(made, "NetworkPolicy")
    assert policies["default-deny"]["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    open_to_all = [n for n, p in policies.items() if any("from" not in rule for rule in p["spec"].get("ingress", []))]
    assert open_to_all == ["in-envoy"], "only the front door takes connections from anywhere"
    etcd = policies["in-etcd"]["spec"]["ingress"]
    assert {port["port"] for rule in etcd for port in rule["ports"]} == {2379, 2380}


def test_the_front_door_is_a_node_port_when_asked(tmp_path: Path) -> None:
    from topologies.kubernetes.manifests import Ingress

    made = manifests(
        spec.load("scaled"),
        namespace=NS,
        image="img",
        secrets=Secrets("s" * 32, "pw"),
        pki=RunPki.create(tmp_path),
        ingress=Ingress("nodeport", ("10.0.0.11",)),
    )
    envoy = kinds(made, "Service")["envoy"]["spec"]
    assert envoy["type"] == "NodePort" and "nodePort" not in envoy["ports"][0]  # the cluster allocates one
    pinned = manifests(
        spec.load("scaled"),
        namespace=NS,
        image="img",
        secrets=Secrets("s" * 32, "pw"),
        pki=RunPki.create(tmp_path),
        ingress=Ingress("nodeport", ("10.0.0.11",), node_port=31000),
    )
    assert kinds(pinned, "Service")["envoy"]["spec"]["ports"][0]["nodePort"] == 31000
    with pytest.raises(ValueError, match="expose: expected one of"):
        Ingress("hostport")


@pytest.mark.parametrize("form", ["kustomize", "helm"])
def test_a_kustomize_base_or_a_helm_chart_holds_every_object_valid_and_rendered(
    form: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``k8s manifests --format kustomize|helm --output DIR``: one file per object, each valid
    Kubernetes 1.34 with nothing left to template, listed by the kustomization (or under the
    chart's templates/), the same objects as the YAML; bad input refused, nothing overwritten."""
    out = tmp_path / form
    common = ["k8s", "manifests", "--namespace", "mm-x", "--image", "img:1", "--pki-dir", str(tmp_path / "pki")]
    assert main([*common, "--format", form, "--output", str(out)]) == 0
    folder = out if form == "kustomize" else out / "templates"
    objects = sorted(p for p in folder.glob("[0-9]*.yaml"))
    if form == "kustomize":
        listed = yaml.safe_load((out / "kustomization.yaml").read_text())["resources"]
        assert listed == [p.name for p in objects]
    else:
        chart = yaml.safe_load((out / "Chart.yaml").read_text())
        assert chart["apiVersion"] == "v2" and chart["name"] == "modematrix-mm-x"
    found = [yaml.safe_load(p.read_text()) for p in objects]
    for manifest in found:
        assert "{{" not in json.dumps(manifest), "rendered: nothing to template at apply time"
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    assert found[0]["kind"] == "Namespace"
    assert {m["kind"] for m in found} >= {"Deployment", "StatefulSet", "Service", "Secret", "Job", "NetworkPolicy"}
    assert oct((objects[1]).stat().st_mode & 0o777) == "0o600", "Secrets among them: owner only"
    capsys.readouterr()
    assert main([*common, "--format", form, "--output", str(out)]) == 2  # exists: nothing overwritten
    assert "already exists" in capsys.readouterr().err
    assert main([*common, "--format", form]) == 2
    assert main([*common, "--output", str(tmp_path / "y")]) == 2


def test_an_etcd_pod_joins_with_an_emptied_data_dir_once_per_mark_of_its_own(
    made: list[dict[str, Any]], tmp_path: Path
) -> None:
    """The StatefulSet's start script, run by sh with its two folders moved under tmp_path and
    an ``etcd`` that prints its arguments. Before each start the data dir holds a WAL. No mark
    for the pod: state new, the WAL kept; a new mark (its member replaced): the data dir
    emptied and state existing; the same mark at a restart: the WAL kept, still existing;
    another mark: emptied again."""
    pod = kinds(made, "StatefulSet")["etcd"]["spec"]["template"]["spec"]
    assert {"name": "join", "configMap": {"name": ETCD_JOIN, "optional": True}} in pod["volumes"]
    assert kinds(made, "ConfigMap")[ETCD_JOIN]["data"] == {}
    join, volume, bin_dir = tmp_path / "join", tmp_path / "volume", tmp_path / "bin"
    for folder in (join, volume, bin_dir):
        folder.mkdir()
    script = pod["containers"][0]["command"][2].replace(ETCD_JOIN_DIR, str(join)).replace(ETCD_DATA, str(volume))
    (bin_dir / "etcd").write_text('#!/bin/sh\necho "$@"\n')
    (bin_dir / "etcd").chmod(0o755)
    wal = volume / "data" / "member" / "wal"

    def start() -> tuple[str, bool]:
        """(the state etcd was started with, whether the WAL was kept)"""
        wal.parent.mkdir(parents=True, exist_ok=True)
        wal.write_text("acknowledged writes")
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "POD_NAME": "etcd-1"}
        done = subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, text=True, check=True)
        return done.stdout.split("--initial-cluster-state ")[1].split()[0], wal.exists()

    assert start() == ("new", True)
    (join / "etcd-2").write_text("1")  # another pod's mark
    assert start() == ("new", True)
    (join / "etcd-1").write_text("2")
    assert start() == ("existing", False)
    assert start() == ("existing", True)
    (join / "etcd-1").write_text("3")
    assert start() == ("existing", False)

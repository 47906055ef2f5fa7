"""A cluster built here, as data: each node's files say what Kubernetes needs them to say
(identities in certificates, where the API is, the pod network), and the cluster's own
objects pass the 1.34 schemas."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from topologies.kubernetes.clusters import layout
from topologies.pki import RunPki

PAUSE = "docker.io/modematrix/pause:abc"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> RunPki:
    return RunPki.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def nodes() -> list[layout.KubeNode]:
    return layout.plan("10.9.8", workers=3)


@pytest.fixture(scope="module")
def files(pki: RunPki, nodes: list[layout.KubeNode]) -> dict[str, dict[str, bytes]]:
    account = layout.service_account_key()
    return {n.name: layout.node_files(nodes, n, pki, pause_image=PAUSE, service_account=account) for n in nodes}


def subject(pem: bytes) -> tuple[str, list[str]]:
    cert = x509.load_pem_x509_certificate(pem)
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    groups = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    return str(cn), [str(g) for g in groups]


def kubeconfig_identity(data: bytes) -> tuple[str, str, tuple[str, list[str]]]:
    import base64

    config = yaml.safe_load(data)
    cluster = config["clusters"][0]["cluster"]
    user = config["users"][0]["user"]
    return (
        cluster["server"],
        cluster["certificate-authority-data"],
        subject(base64.b64decode(user["client-certificate-data"])),
    )


def test_a_plan_needs_two_workers_and_fits_a_network() -> None:
    with pytest.raises(ValueError, match="at least 2 workers"):
        layout.plan("10.9.8", workers=1)
    with pytest.raises(ValueError, match="at most 200"):
        layout.plan("10.9.8", workers=201)


def test_each_identity_is_the_user_and_groups_kubernetes_expects(
    files: dict[str, dict[str, bytes]], nodes: list[layout.KubeNode]
) -> None:
    control = files["kube-control-plane"]
    server = "https://10.9.8.10:6443"
    expected = {
        "controller-manager.kubeconfig": ("system:kube-controller-manager", []),
        "scheduler.kubeconfig": ("system:kube-scheduler", []),
        "coredns.kubeconfig": ("system:coredns", []),
        "kube-proxy.kubeconfig": ("system:kube-proxy", []),
        "kubelet.kubeconfig": ("system:node:kube-control-plane", ["system:nodes"]),
    }
    for name, identity in expected.items():
        assert kubeconfig_identity(control[name])[0] == server
        assert kubeconfig_identity(control[name])[2] == identity, name
    worker = files["kube-worker-2"]
    assert kubeconfig_identity(worker["kubelet.kubeconfig"])[2] == ("system:node:kube-worker-2", ["system:nodes"])
    assert "controller-manager.kubeconfig" not in worker and "pki/sa.key" not in worker, (
        "control plane files stay there"
    )
    assert subject(control["pki/apiserver-kubelet-client.pem"]) == ("kube-apiserver-kubelet-client", ["system:masters"])


def test_the_api_server_certificate_names_every_way_it_is_reached(files: dict[str, dict[str, bytes]]) -> None:
    cert = x509.load_pem_x509_certificate(files["kube-control-plane"]["pki/apiserver.pem"])
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
    dns = set(names.get_values_for_type(x509.DNSName))
    assert {"10.9.8.10", layout.API_SERVICE_IP, "127.0.0.1"} <= ips
    assert "kubernetes.default.svc.cluster.local" in dns


def test_the_user_kubeconfig_is_an_admin_of_this_cluster(pki: RunPki, nodes: list[layout.KubeNode]) -> None:
    server, ca, identity = kubeconfig_identity(layout.admin_kubeconfig(nodes, pki))
    import base64

    assert server == "https://10.9.8.10:6443" and identity == ("modematrix-admin", ["system:masters"])
    assert base64.b64decode(ca) == pki.ca.cert_pem, "the client trusts the run's CA, nothing else"


def test_pod_networking_routes_to_every_other_node_and_masquerades_only_leaving_traffic(
    files: dict[str, dict[str, bytes]], nodes: list[layout.KubeNode]
) -> None:
    for node in nodes:
        env = dict(line.split("=", 1) for line in files[node.name]["node.env"].decode().splitlines())
        routes = env["POD_ROUTES"].strip('"').split()
        assert sorted(routes) == sorted(f"{n.pod_cidr}={n.ip}" for n in nodes if n != node)
        assert env["POD_CIDR"] == node.pod_cidr and env["NODE_IP"] == node.ip
        cni = json.loads(files[node.name]["cni/10-modematrix.conflist"])
        bridge = cni["plugins"][0]
        assert bridge["ipam"]["ranges"] == [[{"subnet": node.pod_cidr}]] and bridge["ipMasq"] is False
        assert any(p["type"] == "portmap" for p in cni["plugins"]), "Envoy's host port"
    assert len({n.pod_cidr for n in nodes}) == len(nodes)


def test_containerd_kubelet_and_kube_proxy_configuration_parse_and_agree(files: dict[str, dict[str, bytes]]) -> None:
    worker = files["kube-worker-1"]
    containerd = tomllib.loads(worker["containerd.toml"].decode())
    cri = containerd["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["sandbox_image"] == PAUSE and cri["restrict_oom_score_adj"] is True
    assert containerd["root"].startswith(layout.STATE), "overlayfs snapshots need the Docker volume"
    kubelet = yaml.safe_load(worker["kubelet.yaml"])
    assert kubelet["clusterDNS"] == ["10.9.8.10"] and kubelet["cgroupRoot"] == "/kubelet"
    assert kubelet["authentication"]["anonymous"]["enabled"] is False
    proxy = yaml.safe_load(worker["kube-proxy.yaml"])
    assert proxy["conntrack"]["maxPerCore"] == 0 and proxy["clusterCIDR"] == layout.POD_CIDR
    flags = files["kube-control-plane"]["kube-apiserver.flags"].decode().split()
    assert "--authorization-mode=Node,RBAC" in flags and "--advertise-address=10.9.8.10" in flags
    assert all(flag.startswith("--") and " " not in flag for flag in flags), "node.sh splits the file on whitespace"


def test_a_silent_node_is_marked_within_the_grace_period_its_kubelet_renews_within(
    files: dict[str, dict[str, bytes]],
) -> None:
    kubelet = yaml.safe_load(files["kube-worker-1"]["kubelet.yaml"])
    renew_s = kubelet["nodeLeaseDurationSeconds"] / 4  # the kubelet renews at a quarter of the lease
    flags = files["kube-control-plane"]["kube-controller-manager.flags"].decode().split()
    assert f"--node-monitor-grace-period={layout.NODE_MONITOR_GRACE_S}s" in flags
    assert "--node-monitor-period=2s" in flags
    assert layout.NODE_MONITOR_GRACE_S >= 4 * renew_s, "a busy node may miss a few renewals before it is marked"
    assert float(kubelet["nodeStatusUpdateFrequency"].rstrip("s")) <= layout.NODE_MONITOR_GRACE_S / 4


def test_the_clusters_own_objects_pass_the_schemas(nodes: list[layout.KubeNode]) -> None:
    objects = layout.bootstrap(nodes)
    for manifest in objects:
        kubernetes_validate.validate(manifest, "1.34", strict=True)
    volumes = [o for o in objects if o["kind"] == "PersistentVolume"]
    assert len(volumes) == 3 * layout.LOCAL_VOLUMES, "every worker, one member of each of three deployments"
    pinned = {
        o["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"][0]
        for o in volumes
    }
    assert pinned == {"kube-worker-1", "kube-worker-2", "kube-worker-3"}


RUNC_WRAP = Path(__file__).resolve().parents[2] / "images" / "k8s" / "host" / "runc-wrap"


def test_the_runc_wrapper_drops_only_the_capability_the_host_lacks(tmp_path: Path) -> None:
    import shutil
    import subprocess

    if shutil.which("jq") is None:
        pytest.skip("jq is not installed (apt-get install jq)")
    caps = ["CAP_CHOWN", "CAP_SYS_RESOURCE", "CAP_NET_ADMIN"]
    (tmp_path / "config.json").write_text(
        json.dumps({"process": {"capabilities": {"bounding": caps, "effective": caps}}})
    )
    fake = tmp_path / "runc"
    fake.write_text('#!/bin/sh\necho "runc $*"\n')
    fake.chmod(0o755)
    done = subprocess.run(
        ["sh", str(RUNC_WRAP), "create", "--bundle", str(tmp_path), "box"],
        env={"MODEMATRIX_RUNC": str(fake), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == f"runc create --bundle {tmp_path} box", "the real runc gets the same arguments"
    bounding = int(
        next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("CapBnd")).split()[
            1
        ],
        16,
    )
    kept = json.loads((tmp_path / "config.json").read_text())["process"]["capabilities"]
    if bounding >> 24 & 1:  # this host can grant it: nothing changes
        assert kept == {"bounding": caps, "effective": caps}
    else:
        assert kept == {"bounding": ["CAP_CHOWN", "CAP_NET_ADMIN"], "effective": ["CAP_CHOWN", "CAP_NET_ADMIN"]}


def test_keys_and_kubeconfigs_are_created_with_their_final_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nodes: list[layout.KubeNode]
) -> None:
    """The run's CA key, each node's keys and kubeconfigs and the user's kubeconfig: created
    0600 (they were written, then chmod'ed: readable by anyone for a moment). Every file is
    watched from the system call that creates it, with a umask that hides nothing."""
    import os

    from topologies.kubernetes.clusters.nodes import _write_files

    created: dict[str, int] = {}
    real_open = os.open

    def watched(path: object, flags: int, mode: int = 0o777, *args: object, **kwargs: object) -> int:
        if flags & os.O_CREAT:
            created[str(path)] = mode
        return real_open(path, flags, mode, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", watched)
    old = os.umask(0)
    try:
        pki = RunPki.create(tmp_path / "run")
        _write_files(tmp_path / "run" / "cluster", nodes, pki, pause_image="modematrix/pause:x")
    finally:
        os.umask(old)
    private = {p: m for p, m in created.items() if p.endswith(("-key.pem.tmp", ".key.tmp", "kubeconfig.tmp"))}
    assert any("ca-key.pem" in p for p in private) and any(p.endswith("/.kubeconfig.tmp") for p in private)
    assert len(private) > 10 and set(private.values()) == {0o600}, private


def test_three_control_planes_stack_etcd_and_sit_behind_a_balancer_that_every_client_uses(pki: RunPki) -> None:
    nodes = layout.plan("10.9.8", workers=2, control_planes=3)
    account = layout.service_account_key()
    files = {n.name: layout.node_files(nodes, n, pki, pause_image=PAUSE, service_account=account) for n in nodes}
    planes = [n for n in nodes if n.control_plane]
    assert [n.name for n in planes] == ["kube-control-plane-1", "kube-control-plane-2", "kube-control-plane-3"]
    balancer = "10.9.8.5"
    for node in nodes:  # kubelets, kube-proxy and kube-router reach the API through the balancer
        for name in ("kubelet.kubeconfig", "kube-proxy.kubeconfig", "kube-router.kubeconfig"):
            assert kubeconfig_identity(files[node.name][name])[0] == f"https://{balancer}:6443"
        assert yaml.safe_load(files[node.name]["kubelet.yaml"])["clusterDNS"] == [balancer]
    assert kubeconfig_identity(layout.admin_kubeconfig(nodes, pki))[0] == f"https://{balancer}:6443"
    members = "--initial-cluster=" + ",".join(f"{n.name}=https://{n.ip}:2380" for n in planes)
    for node in planes:
        mine = files[node.name]
        etcd = mine["etcd.flags"].decode().split()
        assert members in etcd and "--peer-client-cert-auth" in etcd
        assert f"--listen-peer-urls=https://{node.ip}:2380" in etcd
        assert "--listen-client-urls=http://127.0.0.1:2379" in etcd, "clients: the node's own API server only"
        peer = x509.load_pem_x509_certificate(mine["pki/etcd-peer.pem"])
        peer_names = peer.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert node.ip in [str(a) for a in peer_names.get_values_for_type(x509.IPAddress)]
        served = x509.load_pem_x509_certificate(mine["pki/apiserver.pem"])
        sans = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert balancer in [str(a) for a in sans.get_values_for_type(x509.IPAddress)], "clients dial the balancer"
        for component in ("kube-controller-manager.flags", "kube-scheduler.flags"):
            assert "--leader-elect=true" in mine[component].decode().split()
        assert "Corefile" not in mine, "CoreDNS runs on the balancer, so it dies with no control plane"
    lb = layout.balancer_files(nodes, pki)
    servers = [line.split() for line in lb["haproxy.cfg"].decode().splitlines() if line.strip().startswith("server ")]
    assert [(s[1], s[2]) for s in servers] == [(n.name, f"{n.ip}:6443") for n in planes]
    assert "option httpchk GET /readyz" in lb["haproxy.cfg"].decode()
    assert "kubeconfig /etc/modematrix-balancer/coredns.kubeconfig" in lb["Corefile"].decode()
    assert kubeconfig_identity(lb["coredns.kubeconfig"])[2] == ("system:coredns", [])


def test_one_control_plane_has_its_own_etcd_and_dns_and_no_leader_election(
    files: dict[str, dict[str, bytes]], nodes: list[layout.KubeNode]
) -> None:
    plane = files["kube-control-plane"]
    assert "--listen-peer-urls=http://127.0.0.1:2380" in plane["etcd.flags"].decode().split()
    assert "--leader-elect=false" in plane["kube-scheduler.flags"].decode().split()
    assert "Corefile" in plane and not layout.balanced(nodes)
    with pytest.raises(ValueError, match="control planes: expected 1 or 3 \\(an etcd quorum\\), got 2"):
        layout.plan("10.9.8", workers=2, control_planes=2)

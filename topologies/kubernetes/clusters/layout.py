"""A Kubernetes cluster of node containers, as data: which nodes, and every file each one
needs (pure; :mod:`topologies.kubernetes.clusters.nodes` writes them and starts the nodes on
an engine).

    nodes = plan("10.213.7", workers=3)       # 1 control plane at .10, workers at .11, .12 ...
    nodes = plan("10.213.7", workers=3, control_planes=3)   # .10-.12, workers from .13, balancer .5
    files = node_files(nodes, nodes[1], pki, pause_image="docker.io/modematrix/pause:...")

Certificates come from the run's CA (:class:`topologies.pki.RunPki`), as ``kubeadm init``
would make them: Kubernetes reads a client certificate's common name as the user and its
organizations as groups (``system:masters``, ``system:nodes``). The control plane runs etcd,
kube-apiserver, kube-controller-manager, kube-scheduler and CoreDNS; every node runs
containerd, kubelet and kube-proxy. Pod networking is Debian's CNI bridge plugin with a /24
per node and a route per other node (all nodes share one Docker network), Services are
kube-proxy's iptables rules, and DNS is CoreDNS on the control plane's address.

With three control planes (``--control-planes 3``, as ``kubeadm`` stacks them) each runs an
API server, a controller manager and a scheduler (both leader-elected) and a member of a
three-member etcd (peers over TLS on the node network, each API server talking to its own
member); a balancer container at ``.5`` (:func:`balancer_files`: HAProxy from the runtime
image, checking each API server's ``/readyz``, and CoreDNS, so that DNS does not die with any
control plane) is what every kubeconfig and every kubelet's DNS point at.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from runtime.security import tls
from topologies.pki import RunPki

CONTROL_PLANE, WORKER = "control-plane", "worker"
KUBE_API_PORT = 6443
SERVICE_CIDR, API_SERVICE_IP = "10.96.0.0/16", "10.96.0.1"
POD_CIDR = "10.244.0.0/16"
CONF = "/etc/kubernetes"  # where a node finds its files (a read-only bind of the run's folder)
STATE = "/var/lib/mm-node"  # a Docker volume: etcd, local volumes (containerd's root too, with disk images)
REGISTRY_HOSTS = "/etc/containerd/certs.d"  # containerd's hosts.toml per registry (written at run time)
LOCAL_VOLUMES = 3  # per worker: one etcd member's data for each of three deployments on the cluster (Retain: one each)
STORAGE_CLASS = "modematrix-local"
NODE_MONITOR_GRACE_S = 15  # a silent node is marked not ready or unreachable after this long
BALANCER_HOST = 5  # with several control planes: the API's balancer (and DNS) at .5 of the network
CONTROL_PLANE_COUNTS = (1, 3)  # etcd's quorum: one member, or three that survive one loss
ETCD_CLIENT, ETCD_PEER = 2379, 2380
IMAGE_STORES = ("memory", "disk")  # where a node's containerd keeps images: tmpfs, or the node's volume
IMAGE_STORE_ENV = "MODEMATRIX_K8S_IMAGE_STORE"
Files = dict[str, bytes]


@dataclass(frozen=True)
class KubeNode:
    name: str
    role: str
    ip: str
    pod_cidr: str

    @property
    def control_plane(self) -> bool:
        return self.role == CONTROL_PLANE


def plan(prefix: str, *, workers: int, control_planes: int = 1, name: str = "kube") -> list[KubeNode]:
    """``control_planes`` control planes, then ``workers`` workers, on the network ``prefix``
    (``10.213.7``) from ``.10`` on, each with the next pod range.

    >>> [(n.name, n.ip, n.pod_cidr) for n in plan("10.1.2", workers=2)]  # doctest: +NORMALIZE_WHITESPACE
    [('kube-control-plane', '10.1.2.10', '10.244.0.0/24'), ('kube-worker-1', '10.1.2.11', '10.244.1.0/24'),
     ('kube-worker-2', '10.1.2.12', '10.244.2.0/24')]
    >>> [(n.name, n.ip) for n in plan("10.1.2", workers=2, control_planes=3)]  # doctest: +NORMALIZE_WHITESPACE
    [('kube-control-plane-1', '10.1.2.10'), ('kube-control-plane-2', '10.1.2.11'),
     ('kube-control-plane-3', '10.1.2.12'), ('kube-worker-1', '10.1.2.13'), ('kube-worker-2', '10.1.2.14')]
    """
    if workers < 2:
        raise ValueError(f"a cluster needs at least 2 workers (failover needs somewhere to go), got {workers}")
    if control_planes not in CONTROL_PLANE_COUNTS:
        raise ValueError(f"control planes: expected 1 or 3 (an etcd quorum), got {control_planes}")
    if workers + control_planes > 200:
        raise ValueError(f"at most 200 nodes on one /24, got {workers + control_planes}")
    names = [f"{name}-control-plane"] if control_planes == 1 else [f"{name}-control-plane-{i}" for i in (1, 2, 3)]
    roles = [(n, CONTROL_PLANE) for n in names] + [(f"{name}-worker-{i}", WORKER) for i in range(1, workers + 1)]
    return [KubeNode(n, role, f"{prefix}.{10 + i}", f"10.244.{i}.0/24") for i, (n, role) in enumerate(roles)]


def cgroupns(version: int) -> str | None:
    """The cgroup namespace of a node container on a host of cgroup ``version``. On v2 its own
    (``private``, as kind starts its nodes): its root is its own cgroup, and node.sh moves its
    processes to ``/init.scope`` to delegate controllers to kubelet's ``/kubelet``. On v1 the
    host's (Docker's default there): node.sh binds each hierarchy at the path
    ``/proc/self/cgroup`` names, as kind's entrypoint does.

    >>> cgroupns(2), cgroupns(1)
    ('private', None)
    """
    if version not in (1, 2):
        raise ValueError(f"cgroup version: expected 1 or 2, got {version!r}")
    return "private" if version == 2 else None


def image_store(environ: Mapping[str, str]) -> str:
    """Where nodes keep their images, from ``MODEMATRIX_K8S_IMAGE_STORE`` (default ``memory``).

    ``memory``: containerd's root is a tmpfs, so importing the runtime image into three
    workers writes no disk (about 0.7 GB of RAM per worker; measured 21 s -> 14.5 s on a
    2-core host). It is empty again when a node restarts, and :meth:`NodeCluster.heal_node`
    imports the run's images again. ``disk``: on the node's volume, as kind has it.

    >>> image_store({}), image_store({"MODEMATRIX_K8S_IMAGE_STORE": "disk"})
    ('memory', 'disk')
    """
    store = environ.get(IMAGE_STORE_ENV, "").strip() or IMAGE_STORES[0]
    if store not in IMAGE_STORES:
        raise ValueError(f"{IMAGE_STORE_ENV}: expected {' or '.join(IMAGE_STORES)}, got {store!r}")
    return store


def node_tmpfs(store: str) -> tuple[str, ...]:
    """The node container's tmpfs mounts: its own ``/run`` and ``/tmp``, as on a booted
    machine, and containerd's root when images are kept in memory.

    >>> node_tmpfs("disk"), node_tmpfs("memory")[-1]
    (('/run', '/tmp'), '/var/lib/mm-node/containerd')
    """
    if store not in IMAGE_STORES:
        raise ValueError(f"image store: expected {' or '.join(IMAGE_STORES)}, got {store!r}")
    return ("/run", "/tmp", *((f"{STATE}/containerd",) if store == "memory" else ()))  # noqa: S108


def role_labels(node: KubeNode) -> dict[str, str]:
    """What ``kubectl get nodes`` shows as ROLES: set through the API once the node has
    registered (NodeRestriction keeps kubelets from setting them on themselves)."""
    return {f"node-role.kubernetes.io/{node.role}": ""}


def control_plane(nodes: Sequence[KubeNode]) -> KubeNode:
    return next(n for n in nodes if n.control_plane)


def control_planes(nodes: Sequence[KubeNode]) -> list[KubeNode]:
    return [n for n in nodes if n.control_plane]


def balanced(nodes: Sequence[KubeNode]) -> bool:
    """Whether the cluster has a balancer in front of several control planes."""
    return len(control_planes(nodes)) > 1


def balancer_ip(nodes: Sequence[KubeNode]) -> str:
    return f"{nodes[0].ip.rsplit('.', 1)[0]}.{BALANCER_HOST}"


def api_address(nodes: Sequence[KubeNode]) -> str:
    """Where the API is reached: the balancer, or the one control plane."""
    return balancer_ip(nodes) if balanced(nodes) else control_plane(nodes).ip


def dns_address(nodes: Sequence[KubeNode]) -> str:
    """Where pods' DNS is (CoreDNS): the balancer's container, or the one control plane."""
    return api_address(nodes)


def server(nodes: Sequence[KubeNode]) -> str:
    return f"https://{api_address(nodes)}:{KUBE_API_PORT}"


# -- certificates and kubeconfigs ------------------------------------------------------------


def certificate(pki: RunPki, user: str, groups: Sequence[str] = (), names: Sequence[str] = ()) -> tuple[bytes, bytes]:
    """A certificate and key for ``user`` in ``groups`` (Kubernetes reads CN and O), valid
    for ``names`` when it also serves."""
    key = tls.new_key()
    subject = x509.Name(
        [
            *(x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups),
            x509.NameAttribute(NameOID.COMMON_NAME, user),
        ]
    )
    cert = tls.certify(pki.ca, key.public_key(), subject, list(names) or [user], datetime.now(UTC), pki.lifetime)
    pair = tls.KeyPair(key, cert)
    return pair.cert_pem, pair.key_pem


def kubeconfig(server_url: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes, user: str) -> bytes:
    """A kubeconfig for one user of one cluster, certificates inline."""
    import base64

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "modematrix", "cluster": {"server": server_url, "certificate-authority-data": b64(ca_pem)}}
        ],
        "users": [{"name": user, "user": {"client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)}}],
        "contexts": [{"name": "modematrix", "context": {"cluster": "modematrix", "user": user}}],
        "current-context": "modematrix",
    }
    return yaml.safe_dump(config, sort_keys=False).encode()


def admin_kubeconfig(nodes: Sequence[KubeNode], pki: RunPki) -> bytes:
    """The user's kubeconfig: a member of system:masters."""
    cert, key = certificate(pki, "modematrix-admin", ["system:masters"])
    return kubeconfig(server(nodes), pki.ca.cert_pem, cert, key, "modematrix-admin")


def service_account_key() -> tuple[bytes, bytes]:
    """The key that signs service account tokens (ES256), and its public half."""
    key = tls.new_key()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


# -- a node's files ---------------------------------------------------------------------------


def node_files(
    nodes: Sequence[KubeNode], node: KubeNode, pki: RunPki, *, pause_image: str, service_account: tuple[bytes, bytes]
) -> Files:
    """Everything under ``/etc/kubernetes`` of ``node``: node.env, certificates, kubeconfigs,
    and the configuration of containerd, the CNI plugins, kubelet, kube-proxy and, on the
    control plane, kube-apiserver, kube-controller-manager and CoreDNS."""
    url = server(nodes)
    ca = pki.ca.cert_pem
    files: Files = {"pki/ca.pem": ca}

    def identity(user: str, groups: Sequence[str] = ()) -> bytes:
        return kubeconfig(url, ca, *certificate(pki, user, groups), user)

    routes = " ".join(f"{n.pod_cidr}={n.ip}" for n in nodes if n != node)
    labels = f"modematrix.node-role={node.role}"  # kubelet may not set node-role.kubernetes.io: see role_labels
    taints = "node-role.kubernetes.io/control-plane=:NoSchedule" if node.control_plane else ""
    files["node.env"] = (
        f"ROLE={node.role}\nNODE_NAME={node.name}\nNODE_IP={node.ip}\n"
        f'POD_CIDR={node.pod_cidr}\nPOD_NETWORK={POD_CIDR}\nPOD_ROUTES="{routes}"\n'
        f'NODE_LABELS="{labels}"\nNODE_TAINTS="{taints}"\n'
    ).encode()
    files["containerd.toml"] = _containerd(pause_image).encode()
    files["cni/10-modematrix.conflist"] = _cni(node).encode()
    files["pki/kubelet.pem"], files["pki/kubelet-key.pem"] = certificate(
        pki, f"system:node:{node.name}", ["system:nodes"], [node.name, node.ip, "localhost", "127.0.0.1"]
    )
    files["kubelet.kubeconfig"] = identity(f"system:node:{node.name}", ["system:nodes"])
    files["kubelet.yaml"] = _yaml(_kubelet(dns_address(nodes)))
    files["kube-proxy.kubeconfig"] = identity("system:kube-proxy")
    files["kube-router.kubeconfig"] = identity(KUBE_ROUTER_USER)
    files["kube-proxy.yaml"] = _yaml(_kube_proxy())
    if node.control_plane:
        files.update(_control_plane(nodes, node, pki, service_account))
        files["controller-manager.kubeconfig"] = identity("system:kube-controller-manager")
        files["scheduler.kubeconfig"] = identity("system:kube-scheduler")
        if not balanced(nodes):  # else CoreDNS runs on the balancer (balancer_files)
            files["coredns.kubeconfig"] = identity("system:coredns")
            files["Corefile"] = _corefile(f"{CONF}/coredns.kubeconfig").encode()
    return files


BALANCER_CONF = "/etc/modematrix-balancer"  # where the balancer container finds its files


def balancer_files(nodes: Sequence[KubeNode], pki: RunPki) -> Files:
    """The balancer's files, with several control planes: HAProxy passing TCP to every API
    server that answers ``/readyz`` (checked every second over TLS; two misses take it out; a
    connection that finds no one within 1 s is sent to another),
    and CoreDNS's configuration (its kubeconfig reaches the API through this same HAProxy)."""
    servers = "\n".join(f"    server {n.name} {n.ip}:{KUBE_API_PORT}" for n in control_planes(nodes))
    haproxy = f"""global
    maxconn 4096
defaults
    mode tcp
    option redispatch
    retries 3
    timeout connect 1s
    timeout client 1h
    timeout server 1h
    timeout check 2s
frontend kube-api
    bind :{KUBE_API_PORT}
    default_backend kube-apiservers
backend kube-apiservers
    option httpchk GET /readyz
    http-check expect status 200
    default-server check check-ssl verify none inter 1s fall 2 rise 2 on-marked-down shutdown-sessions
{servers}
"""
    coredns = kubeconfig(
        f"https://127.0.0.1:{KUBE_API_PORT}", pki.ca.cert_pem, *certificate(pki, "system:coredns"), "system:coredns"
    )
    return {
        "haproxy.cfg": haproxy.encode(),
        "Corefile": _corefile(f"{BALANCER_CONF}/coredns.kubeconfig").encode(),
        "coredns.kubeconfig": coredns,
    }


def balancer_script() -> str:
    """The balancer container's command (as root, in the runtime image with CoreDNS bound in):
    HAProxy and CoreDNS, and the container ends when either does."""
    return (
        f"haproxy -W -db -f {BALANCER_CONF}/haproxy.cfg & "
        f"coredns -conf {BALANCER_CONF}/Corefile & "
        "wait -n; echo 'balancer: a process exited'; exit 1"
    )


def _yaml(data: dict[str, Any]) -> bytes:
    return yaml.safe_dump(data, sort_keys=False).encode()


def _containerd(pause_image: str) -> str:
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{STATE}/containerd"
state = "/run/containerd"

[grpc]
  address = "/run/containerd/containerd.sock"

[debug]
  level = "warn"

[{cri}]
  sandbox_image = "{pause_image}"
  # a node in a container may not lower a process's OOM score below its own
  restrict_oom_score_adj = true
  disable_apparmor = true

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.registry]
  # a registry this cluster trusts has a hosts.toml here (NodeCluster.trust_registry)
  config_path = "{REGISTRY_HOSTS}"

[{cri}.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{CONF}/cni"
"""


def _cni(node: KubeNode) -> str:
    bridge = {
        "type": "bridge",
        "bridge": "cni0",
        "isGateway": True,
        "ipMasq": False,  # node.sh masquerades only what leaves the pod network: etcd peers check addresses
        "hairpinMode": True,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": node.pod_cidr}]], "routes": [{"dst": "0.0.0.0/0"}]},
    }
    plugins = [bridge, {"type": "portmap", "capabilities": {"portMappings": True}}]
    return json.dumps({"cniVersion": "0.4.0", "name": "modematrix", "plugins": plugins}, indent=2)


def _kubelet(dns: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": f"{CONF}/pki/ca.pem"},
        },
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": "/kubelet",  # node.sh binds it: kubelet leaves the container's own cgroups alone
        "clusterDomain": "cluster.local",
        "clusterDNS": [dns],
        "containerRuntimeEndpoint": "unix:///run/containerd/containerd.sock",
        "tlsCertFile": f"{CONF}/pki/kubelet.pem",
        "tlsPrivateKeyFile": f"{CONF}/pki/kubelet-key.pem",
        "failSwapOn": False,
        # nodes share the machine's disk and memory: evict only when truly out, never collect
        # the images loaded without a registry
        "evictionHard": {"memory.available": "50Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        # the lease is renewed at a quarter of its duration: every 3 s, for the controller
        # manager's 15 s grace period (_control_plane)
        "nodeLeaseDurationSeconds": 12,
        "nodeStatusUpdateFrequency": "3s",
        "rotateCertificates": False,
    }


def _kube_proxy() -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": f"{CONF}/kube-proxy.kubeconfig"},
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        # a node in a container may not set the machine's conntrack table size or timeouts
        "conntrack": {"maxPerCore": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        "iptables": {"localhostNodePorts": False},
    }


def _control_plane(
    nodes: Sequence[KubeNode], node: KubeNode, pki: RunPki, service_account: tuple[bytes, bytes]
) -> Files:
    several = balanced(nodes)
    names = [
        node.name,
        node.ip,
        *([balancer_ip(nodes)] if several else []),
        API_SERVICE_IP,
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "localhost",
        "127.0.0.1",
    ]
    files: Files = {}
    files["pki/apiserver.pem"], files["pki/apiserver-key.pem"] = certificate(pki, "kube-apiserver", (), names)
    files["pki/apiserver-kubelet-client.pem"], files["pki/apiserver-kubelet-client-key.pem"] = certificate(
        pki, "kube-apiserver-kubelet-client", ["system:masters"]
    )
    files["pki/sa.key"], files["pki/sa.pub"] = service_account
    pki_dir = f"{CONF}/pki"
    apiserver = [
        f"--advertise-address={node.ip}",
        "--bind-address=0.0.0.0",
        f"--secure-port={KUBE_API_PORT}",
        "--etcd-servers=http://127.0.0.1:2379",
        f"--client-ca-file={pki_dir}/ca.pem",
        f"--tls-cert-file={pki_dir}/apiserver.pem",
        f"--tls-private-key-file={pki_dir}/apiserver-key.pem",
        f"--kubelet-client-certificate={pki_dir}/apiserver-kubelet-client.pem",
        f"--kubelet-client-key={pki_dir}/apiserver-kubelet-client-key.pem",
        f"--kubelet-certificate-authority={pki_dir}/ca.pem",
        "--kubelet-preferred-address-types=InternalIP",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={pki_dir}/sa.pub",
        f"--service-account-signing-key-file={pki_dir}/sa.key",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",
        "--allow-privileged=true",
        "--profiling=false",
        "--event-ttl=30m",
    ]
    controller_manager = [
        f"--kubeconfig={CONF}/controller-manager.kubeconfig",
        f"--authentication-kubeconfig={CONF}/controller-manager.kubeconfig",
        f"--authorization-kubeconfig={CONF}/controller-manager.kubeconfig",
        f"--service-account-private-key-file={pki_dir}/sa.key",
        f"--root-ca-file={pki_dir}/ca.pem",
        "--use-service-account-credentials=true",
        f"--leader-elect={str(several).lower()}",
        "--bind-address=127.0.0.1",
        "--cluster-name=modematrix",
        # a killed node is marked unreachable within 15 s (Kubernetes' default: 40 s), checked
        # every 2 s; its kubelet renews its lease every 3 s (_kubelet), so a busy node may miss
        # four renewals before it is marked
        f"--node-monitor-grace-period={NODE_MONITOR_GRACE_S}s",
        "--node-monitor-period=2s",
        "--profiling=false",
    ]
    scheduler = [
        f"--kubeconfig={CONF}/scheduler.kubeconfig",
        f"--leader-elect={str(several).lower()}",
        "--bind-address=127.0.0.1",
    ]
    files["kube-apiserver.flags"] = "\n".join(apiserver).encode() + b"\n"
    files["kube-controller-manager.flags"] = "\n".join(controller_manager).encode() + b"\n"
    files["kube-scheduler.flags"] = "\n".join(scheduler).encode() + b"\n"
    files["etcd.flags"] = "\n".join(_etcd(nodes, node)).encode() + b"\n"
    if several:
        sans = [node.name, node.ip, "localhost", "127.0.0.1"]
        files["pki/etcd-peer.pem"], files["pki/etcd-peer-key.pem"] = certificate(pki, f"etcd-{node.name}", (), sans)
    return files


def _etcd(nodes: Sequence[KubeNode], node: KubeNode) -> list[str]:
    """The control plane's etcd member: clients (its own API server) on 127.0.0.1 only; with
    several control planes, peers over TLS on the node network, each checking the other's
    certificate against the run's CA."""
    flags = [
        f"--name={node.name}",
        f"--data-dir={STATE}/etcd",
        f"--listen-client-urls=http://127.0.0.1:{ETCD_CLIENT}",
        f"--advertise-client-urls=http://127.0.0.1:{ETCD_CLIENT}",
        "--log-level=warn",
        "--logger=zap",
        "--auto-compaction-mode=revision",
        "--auto-compaction-retention=10000",
        "--snapshot-count=10000",
    ]
    if not balanced(nodes):
        return [*flags, f"--listen-peer-urls=http://127.0.0.1:{ETCD_PEER}"]
    pki_dir = f"{CONF}/pki"
    members = ",".join(f"{n.name}=https://{n.ip}:{ETCD_PEER}" for n in control_planes(nodes))
    return [
        *flags,
        f"--listen-peer-urls=https://{node.ip}:{ETCD_PEER}",
        f"--initial-advertise-peer-urls=https://{node.ip}:{ETCD_PEER}",
        f"--initial-cluster={members}",
        "--initial-cluster-state=new",
        "--initial-cluster-token=modematrix-control-plane",
        f"--peer-cert-file={pki_dir}/etcd-peer.pem",
        f"--peer-key-file={pki_dir}/etcd-peer-key.pem",
        f"--peer-trusted-ca-file={pki_dir}/ca.pem",
        "--peer-client-cert-auth",
    ]


def _corefile(kubeconfig_path: str) -> str:
    return f""".:53 {{
    errors
    health :8080
    ready :8181
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig_path} modematrix
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    cache 5
}}
"""


# -- what the cluster needs before the mode's manifests ----------------------------------------


KUBE_ROUTER_USER = "system:kube-router"


def _kube_router_access() -> list[dict[str, Any]]:
    """What kube-router's firewall reads (pods, namespaces, nodes, policies) and the leases and
    events it writes, as its own DaemonSet's RBAC grants them."""
    read = ["get", "list", "watch"]
    rules = [
        {"apiGroups": [""], "resources": ["namespaces", "pods", "services", "nodes", "endpoints"], "verbs": read},
        {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": read},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": read},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]},
        {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch", "update"]},
    ]
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": KUBE_ROUTER_USER},
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": KUBE_ROUTER_USER},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": KUBE_ROUTER_USER},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": KUBE_ROUTER_USER}],
        },
    ]


def bootstrap(nodes: Sequence[KubeNode]) -> list[dict[str, Any]]:
    """CoreDNS's read access, kube-router's, and local volumes (the default StorageClass) on
    each worker for the etcd members' data: nothing provisions volumes in a cluster built here."""
    found: list[dict[str, Any]] = [
        *_kube_router_access(),
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "system:coredns"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:coredns"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:coredns"}],
        },
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": STORAGE_CLASS,
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": "kubernetes.io/no-provisioner",
            "volumeBindingMode": "WaitForFirstConsumer",
        },
    ]
    for node in nodes:
        if node.control_plane:
            continue
        for i in range(LOCAL_VOLUMES):
            found.append(_local_volume(node, i))
    return found


def local_volume_path(i: int) -> str:
    return f"{STATE}/pv/data-{i}"


def local_volume_script() -> str:
    """What makes a worker's local volumes' folders (a local PersistentVolume's path must exist).

    >>> local_volume_script().count("/pv/data-") == LOCAL_VOLUMES
    True
    """
    return "install -d -m 0777 " + " ".join(local_volume_path(i) for i in range(LOCAL_VOLUMES))


def _local_volume(node: KubeNode, i: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"{node.name}-data-{i}"},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": STORAGE_CLASS,
            "local": {"path": local_volume_path(i)},
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node.name]}
                            ]
                        }
                    ]
                }
            },
        },
    }

"""The k8s mode's manifests, from a mode spec: pure (no cluster, no I/O but the CA's key).

    modematrix k8s manifests [--mode scaled] [--namespace NS] [--image IMG]

The same layout as the scaled mode, in Kubernetes' terms:

- a Deployment per service set of the spec (auth, kv, queue, xds, envoy), as many replicas as
  the spec has nodes of it, with readiness on ``/readyz`` and liveness on ``/livez``, resource
  requests and the spec's memory as the limit, and a PodDisruptionBudget where there are two
  or more;
- etcd as a StatefulSet (as many members as the spec has, stable names ``etcd-N.etcd``, a
  volume each), TLS as in the other modes: clients need a certificate of the run's CA, peers
  the members' peer certificate; a ``db-init`` Job creates the per-service DB users and turns
  authentication on, as ``runtime db-init`` does on Docker;
- Services named after the runtime's services, whose EndpointSlices the xds pod watches
  (``endpoint_source: kubernetes``; a Role lets its ServiceAccount list and watch them), and
  ``envoy``, the front door (HTTP and gRPC on 8443);
- Secrets: the cluster secret and the admin password, and a TLS bundle per workload, issued
  by the run's CA for the workload's Service names (pod addresses are not known in advance:
  Envoy checks the CA, not the name, and the issuers are reached by Service name).

Validated offline against the Kubernetes 1.34 schemas in the unit tests (kubernetes-validate).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from images import envoy_image
from runtime.security.certs import PEER_NAME, Bundle
from runtime.storage.etcd_auth import user_name
from runtime.storage.etcd_member import tls_flags
from topologies import service
from topologies.constants import (
    API_PORT,
    DB_CLIENT_PORT,
    DB_PEER_PORT,
    ENVOY_RUNTIME_PORT,
    GRPC_PORT,
    SECRETS_DIR,
    XDS_PORT,
)
from topologies.pki import RunPki
from topologies.runs import SECRET_FILES, Secrets, secret_settings
from topologies.service import Probe
from topologies.spec import ModeSpec

KUBERNETES_VERSION = "1.34"
# the Secret holding etcd root's certificate for db-init, deleted once it has run
DB_ROOT_SECRET = "db-root"  # noqa: S105 (a name, not a password)
# The namespace's Pod Security level: the API server admits no pod that breaks "restricted"
POD_SECURITY = {
    f"pod-security.kubernetes.io/{mode}": value
    for action in ("enforce", "audit", "warn")
    for mode, value in ((action, "restricted"), (f"{action}-version", f"v{KUBERNETES_VERSION}"))
}
POD_SECURITY_CONTEXT = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "fsGroup": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
ETCD = "etcd"
ETCD_TLS_DIR = "/etc/modematrix/etcd-tls"
# a member replaced (topologies.kubernetes.faults.ReplaceEtcdMember): the ConfigMap's key per
# pod is a mark; a pod that starts with a mark its volume has not seen empties its data dir
# once and joins the running cluster (--initial-cluster-state existing) as the member added
ETCD_JOIN = "etcd-join"
ETCD_JOIN_DIR = "/etc/modematrix/etcd-join"
ETCD_DATA = "/var/lib/etcd"
VOLUME_DIR = "/var/lib/modematrix/volume"
CLOCK_FILE = f"{VOLUME_DIR}/clock"  # in the pod's own volume: a new pod starts unskewed
# A Deployment's pods leave a node that is not ready or unreachable after this long, not
# Kubernetes' default 300 s: a dead worker's pods run elsewhere within the node monitor's grace
# period plus this. etcd's pods keep the default: their volume is on that node, so they wait.
EVICT_AFTER_S = 10
MAX_EVICT_AFTER_S = 3600
Manifest = dict[str, Any]


@dataclass(frozen=True)
class Workload:
    """One Deployment: a service set and how many pods run it."""

    name: str
    services: tuple[str, ...]
    replicas: int

    @property
    def grpc(self) -> bool:
        return any(s in ("kv", "queue") for s in self.services)


def workloads(spec: ModeSpec) -> list[Workload]:
    """The spec's nodes grouped by service set, in the spec's order.

    >>> from topologies import spec
    >>> [(w.name, w.replicas) for w in workloads(spec.load("scaled"))]
    [('envoy', 2), ('xds', 1), ('auth', 2), ('kv', 2), ('queue', 2)]
    """
    counts: dict[tuple[str, ...], int] = {}
    for node in spec.nodes:
        counts[node.services] = counts.get(node.services, 0) + 1
    return [Workload("-".join(services), services, n) for services, n in counts.items()]


def service_names(name: str, namespace: str) -> list[str]:
    return [name, f"{name}.{namespace}", f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"]


def etcd_endpoints(spec: ModeSpec, namespace: str) -> list[str]:
    return [f"https://{ETCD}-{i}.{ETCD}.{namespace}.svc:{DB_CLIENT_PORT}" for i in range(len(spec.members))]


EXPOSURES = ("port-forward", "nodeport", "loadbalancer")


@dataclass(frozen=True)
class Ingress:
    """How clients outside the cluster reach Envoy. ``expose`` decides the ``envoy`` Service's
    type: ``port-forward`` leaves it a ClusterIP (clients come through the API server, to
    127.0.0.1, which every certificate names); ``nodeport``: a node port on every node (``node_port``,
    or one the cluster allocates, so two runs on one cluster never collide), so a client may
    dial any node; ``loadbalancer``: the cluster's load balancer. ``addresses`` are
    the names or addresses clients dial, which Envoy's certificate must name. Pods never take a
    host port (Pod Security ``restricted`` forbids it)."""

    expose: str = "port-forward"
    addresses: tuple[str, ...] = ()
    node_port: int | None = None

    def __post_init__(self) -> None:
        if self.expose not in EXPOSURES:
            raise ValueError(f"expose: expected one of {', '.join(EXPOSURES)}, got {self.expose!r}")


def manifests(
    spec: ModeSpec,
    *,
    namespace: str,
    image: str,
    secrets: Secrets,
    pki: RunPki,
    ingress: Ingress = Ingress(),
    evict_after: int = EVICT_AFTER_S,
) -> list[Manifest]:
    if not spec.members or spec.db != "etcd":
        raise ValueError(f"{spec.mode}: the k8s mode needs an etcd DB with members (as scaled has)")
    if not 0 <= evict_after <= MAX_EVICT_AFTER_S:
        raise ValueError(f"evict after: expected 0 to {MAX_EVICT_AFTER_S} seconds, got {evict_after}")
    found = workloads(spec)
    labels = {"app.kubernetes.io/part-of": "modematrix", **POD_SECURITY}
    out: list[Manifest] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": labels}},
        _secret(
            namespace,
            "modematrix-secrets",
            {"cluster-secret": secrets.cluster_secret, "admin-password": secrets.admin_password},
        ),
    ]
    out += _etcd(spec, namespace, image, pki)
    out += _db_init(spec, namespace, image, pki, found)
    for workload in found:
        edge = ingress.addresses if "envoy" in workload.services else ()
        bundle = _bundle(pki, workload, namespace, edge)
        out.append(_secret(namespace, f"tls-{workload.name}", {"bundle": bundle.dump()}))
        out.append(_deployment(spec, workload, namespace, image, evict_after))
        out.append(_service(workload, namespace, ingress))
        if workload.replicas >= 2:
            out.append(_budget(workload.name, namespace, {"maxUnavailable": 1}))
    out += _xds_access(namespace)
    out += network_policies(namespace)
    return out


def _bundle(pki: RunPki, workload: Workload, namespace: str, addresses: Sequence[str] = ()) -> Bundle:
    names = [*service_names(workload.name, namespace), "localhost", "127.0.0.1", *addresses]
    pair = pki.pair(user_name(workload.services), workload.name, names)
    return Bundle(pki.ca.cert_pem, {"node": pair}, pki.ca.key_pem if "auth" in workload.services else None)


def _secret(namespace: str, name: str, data: Mapping[str, str]) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "Opaque",
        "stringData": dict(data),
    }


def _selector(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "modematrix"}


def _env(spec: ModeSpec, workload: Workload, namespace: str) -> list[dict[str, Any]]:
    plain = {
        "RUNTIME_SERVICES": ",".join(workload.services),
        "RUNTIME_MODE": "cluster",
        "RUNTIME_DB_BACKEND": "etcd",
        "RUNTIME_DB_ENDPOINTS": ",".join(etcd_endpoints(spec, namespace)),
        "RUNTIME_LOG_LEVEL": "info",
        # the runtime makes its data folder private (0700), which it can only do to a folder
        # of its own: not to the volume's root, which the kubelet owns
        "RUNTIME_DATA_DIR": f"{VOLUME_DIR}/data",
        "RUNTIME_CLOCK_SKEW_FILE": CLOCK_FILE,  # the clock-skew fault's failpoint (runtime/clock.py)
    }
    if "auth" not in workload.services:
        plain["RUNTIME_ISSUERS"] = f"auth.{namespace}.svc:{API_PORT}"
    if "xds" in workload.services:
        plain.update(
            RUNTIME_XDS_PORT=str(XDS_PORT),
            RUNTIME_ENVOY_PORT=str(API_PORT),
            RUNTIME_ENDPOINT_SOURCE="kubernetes",
            RUNTIME_KUBERNETES_NAMESPACE=namespace,
        )
    if "envoy" in workload.services:
        plain.update(
            RUNTIME_LISTEN=f"0.0.0.0:{ENVOY_RUNTIME_PORT}",
            RUNTIME_XDS_SERVERS=f"xds.{namespace}.svc:{XDS_PORT}",
            RUNTIME_ENVOY_PORT=str(API_PORT),
        )
    plain.update(secret_settings(_secret_items(workload)))  # paths of the secret files, never values
    env: list[dict[str, Any]] = [
        {"name": "RUNTIME_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    ]
    env += [{"name": k, "value": v} for k, v in plain.items()]
    return env


def _secret_items(workload: Workload) -> dict[str, tuple[str, str]]:
    """Container path -> (Secret, key): the workload's certificates, and only for ``auth``
    the admin password and the cluster secret (as :func:`topologies.plan.node_secrets`)."""
    files = {f"{SECRETS_DIR}/{SECRET_FILES['tls_bundle']}": (f"tls-{workload.name}", "bundle")}
    if "auth" in workload.services:
        files[f"{SECRETS_DIR}/{SECRET_FILES['cluster_secret']}"] = ("modematrix-secrets", "cluster-secret")
        files[f"{SECRETS_DIR}/{SECRET_FILES['admin_password']}"] = ("modematrix-secrets", "admin-password")
    return files


def _secrets_volume(items: dict[str, tuple[str, str]]) -> dict[str, Any]:
    """One projected volume at ``SECRETS_DIR`` (a tmpfs the kubelet fills): each file readable
    by the runtime's group only (0440, the pod's fsGroup)."""
    by_secret: dict[str, list[dict[str, str]]] = {}
    for path, (secret, key) in items.items():
        by_secret.setdefault(secret, []).append({"key": key, "path": PurePosixPath(path).name})
    sources = [{"secret": {"name": name, "items": listed}} for name, listed in by_secret.items()]
    return {"name": "secrets", "projected": {"sources": sources, "defaultMode": 0o440}}


def _probe(path: str, port: int, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port, "scheme": "HTTPS"},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    }


def probe_manifest(probe: Probe, ports: dict[str, int]) -> dict[str, Any]:
    """A service file's probe as a Kubernetes probe: the runtime's pods and every service's
    members are asked what their file says.

    >>> probe_manifest(Probe(http="client", path="/health"), {"client": 2379})
    {'httpGet': {'path': '/health', 'port': 2379, 'scheme': 'HTTP'}}
    """
    if probe.exec:
        return {"exec": {"command": list(probe.exec)}}
    if probe.http:
        return {"httpGet": {"path": probe.path, "port": ports[probe.http], "scheme": "HTTPS" if probe.tls else "HTTP"}}
    return {"tcpSocket": {"port": ports[str(probe.tcp)]}}


def tolerations(seconds: int) -> list[dict[str, Any]]:
    """Leave a node ``seconds`` after it is marked not ready or unreachable (the taints the node
    lifecycle controller puts on it); without these, the admission default is 300 s.

    >>> [t["key"] for t in tolerations(10)]
    ['node.kubernetes.io/not-ready', 'node.kubernetes.io/unreachable']
    """
    return [
        {
            "key": f"node.kubernetes.io/{taint}",
            "operator": "Exists",
            "effect": "NoExecute",
            "tolerationSeconds": seconds,
        }
        for taint in ("not-ready", "unreachable")
    ]


def _deployment(spec: ModeSpec, workload: Workload, namespace: str, image: str, evict_after: int) -> Manifest:
    runtime_port = ENVOY_RUNTIME_PORT if "envoy" in workload.services else API_PORT
    ports: list[dict[str, Any]] = [{"name": "https", "containerPort": API_PORT}]
    if workload.grpc:
        ports.append({"name": "grpc", "containerPort": GRPC_PORT})
    if "xds" in workload.services:
        ports.append({"name": "xds", "containerPort": XDS_PORT})
    # asked every second: a start is a chain of readiness (etcd, db-init, the services, xds, Envoy),
    # and a 2 s period added up to a second at each link; out after 3 misses, as before after 2
    runtime = service.runtime()
    readiness = {
        **probe_manifest(runtime.ready, runtime.ports),
        "periodSeconds": 1,
        "timeoutSeconds": 3,
        "failureThreshold": 3,
    }
    if "envoy" in workload.services:  # ready when Envoy itself takes connections
        readiness = {"tcpSocket": {"port": API_PORT}, "periodSeconds": 1, "failureThreshold": 3}
    container = {
        "name": "runtime",
        "image": envoy_image(image) if "envoy" in workload.services else image,  # only Envoy's pods carry it
        "imagePullPolicy": "IfNotPresent",
        "args": list(runtime.command),  # services/runtime.yaml, as on containers
        "env": _env(spec, workload, namespace),
        "ports": ports,
        "readinessProbe": readiness,
        "livenessProbe": _probe("/livez", runtime_port, period=10, failures=3),
        "resources": {"requests": {"cpu": "50m", "memory": "96Mi"}, "limits": {"memory": _quantity(spec.memory)}},
        "securityContext": CONTAINER_SECURITY,
        "volumeMounts": [
            {"name": "data", "mountPath": VOLUME_DIR},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 (the pod's own, on a read-only root)
            {"name": "secrets", "mountPath": SECRETS_DIR, "readOnly": True},
        ],
    }
    pod: dict[str, Any] = {
        "securityContext": POD_SECURITY_CONTEXT,
        "terminationGracePeriodSeconds": 20,
        "automountServiceAccountToken": "xds" in workload.services,  # only xds talks to the API
        "tolerations": tolerations(evict_after),
        "containers": [container],
        "volumes": [
            {"name": "data", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
            _secrets_volume(_secret_items(workload)),
        ],
    }
    if "xds" in workload.services:
        pod["serviceAccountName"] = "xds"
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": workload.name, "namespace": namespace, "labels": _selector(workload.name)},
        "spec": {
            "replicas": workload.replicas,
            "selector": {"matchLabels": _selector(workload.name)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {"metadata": {"labels": _selector(workload.name)}, "spec": pod},
        },
    }


def _service(workload: Workload, namespace: str, ingress: Ingress) -> Manifest:
    ports: list[dict[str, Any]] = [{"name": "https", "port": API_PORT, "targetPort": "https"}]
    if workload.grpc:
        ports.append({"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc"})
    if "xds" in workload.services:
        ports = [{"name": "xds", "port": XDS_PORT, "targetPort": "xds"}]
    spec: dict[str, Any] = {"selector": _selector(workload.name), "ports": ports}
    if "envoy" in workload.services and ingress.expose == "nodeport":
        spec["type"] = "NodePort"
        if ingress.node_port is not None:
            ports[0]["nodePort"] = ingress.node_port
    elif "envoy" in workload.services and ingress.expose == "loadbalancer":
        spec["type"] = "LoadBalancer"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": workload.name, "namespace": namespace, "labels": _selector(workload.name)},
        "spec": spec,
    }


def _budget(name: str, namespace: str, rule: Mapping[str, int]) -> Manifest:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {**rule, "selector": {"matchLabels": _selector(name)}},
    }


def _etcd(spec: ModeSpec, namespace: str, image: str, pki: RunPki) -> list[Manifest]:
    size = len(spec.members)
    names = [f"{ETCD}-{i}" for i in range(size)]
    hosts = [f"{n}.{ETCD}.{namespace}.svc" for n in names]
    cluster = service.runtime().peer_list(list(zip(names, hosts, strict=True)))  # as on containers
    sans = [*hosts, *service_names(ETCD, namespace), f"*.{ETCD}.{namespace}.svc", "localhost", "127.0.0.1"]
    server = pki.pair("etcd", ETCD, sans)
    peer = pki.pair(PEER_NAME, ETCD, sans)
    files = {
        "ca.pem": pki.ca.cert_pem.decode(),
        "node.pem": server[0].decode(),
        "node-key.pem": server[1].decode(),
        "peer.pem": peer[0].decode(),
        "peer-key.pem": peer[1].decode(),
    }
    flags = " ".join(tls_flags(PurePosixPath(ETCD_TLS_DIR)))
    mark, seen = f"{ETCD_JOIN_DIR}/$POD_NAME", f"{ETCD_DATA}/joined"
    join = (
        f'if [ -s "{mark}" ] && [ "$(cat "{mark}")" != "$(cat {seen} 2>/dev/null)" ]; then '
        f'rm -rf {ETCD_DATA}/data && cp "{mark}" {seen}; fi; '
        f"state=new; if [ -e {seen} ]; then state=existing; fi; "
    )
    script = join + (
        f'exec etcd --name "$POD_NAME" --data-dir {ETCD_DATA}/data '
        f"--listen-peer-urls https://0.0.0.0:{DB_PEER_PORT} --listen-client-urls https://0.0.0.0:{DB_CLIENT_PORT} "
        f'--advertise-client-urls "https://$POD_NAME.{ETCD}.{namespace}.svc:{DB_CLIENT_PORT}" '
        f'--initial-advertise-peer-urls "https://$POD_NAME.{ETCD}.{namespace}.svc:{DB_PEER_PORT}" '
        f"--initial-cluster {cluster} --initial-cluster-state $state --initial-cluster-token modematrix "
        "--auto-compaction-mode revision --auto-compaction-retention 10000 "
        f"--logger zap --log-outputs stderr --log-level warn {flags}"
    )
    container = {
        "name": ETCD,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/bin/sh", "-c", script],
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "ports": [{"name": "client", "containerPort": DB_CLIENT_PORT}, {"name": "peer", "containerPort": DB_PEER_PORT}],
        "readinessProbe": {"tcpSocket": {"port": DB_CLIENT_PORT}, "periodSeconds": 1},
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": CONTAINER_SECURITY,
        "volumeMounts": [
            {"name": "data", "mountPath": ETCD_DATA},
            {"name": "tls", "mountPath": ETCD_TLS_DIR, "readOnly": True},
            {"name": "join", "mountPath": ETCD_JOIN_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 (the pod's own, on a read-only root)
        ],
    }
    return [
        _secret(namespace, "etcd-tls", files),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": ETCD_JOIN, "namespace": namespace}, "data": {}},
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": ETCD, "namespace": namespace, "labels": _selector(ETCD)},
            "spec": {
                "clusterIP": "None",
                "publishNotReadyAddresses": True,  # members find each other before they are ready
                "selector": _selector(ETCD),
                "ports": [{"name": "client", "port": DB_CLIENT_PORT}, {"name": "peer", "port": DB_PEER_PORT}],
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": ETCD, "namespace": namespace, "labels": _selector(ETCD)},
            "spec": {
                "serviceName": ETCD,
                "replicas": size,
                "podManagementPolicy": "Parallel",  # a quorum needs them all up at once
                "selector": {"matchLabels": _selector(ETCD)},
                "template": {
                    "metadata": {"labels": _selector(ETCD)},
                    "spec": {
                        "securityContext": POD_SECURITY_CONTEXT,
                        "automountServiceAccountToken": False,
                        "containers": [container],
                        "volumes": [
                            {"name": "tls", "secret": {"secretName": "etcd-tls", "defaultMode": 0o440}},
                            {"name": "join", "configMap": {"name": ETCD_JOIN, "optional": True}},
                            {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
                        ],
                    },
                },
                "volumeClaimTemplates": [
                    {
                        "metadata": {"name": "data"},
                        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
                    }
                ],
            },
        },
        _budget(ETCD, namespace, {"minAvailable": size // 2 + 1}),
    ]


def _db_init(spec: ModeSpec, namespace: str, image: str, pki: RunPki, found: Sequence[Workload]) -> list[Manifest]:
    sets = ";".join(sorted({",".join(w.services) for w in found}))
    bundle_file = f"{SECRETS_DIR}/{SECRET_FILES['tls_bundle']}"
    container = {
        "name": "db-init",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": ["db-init", "--endpoints", ",".join(etcd_endpoints(spec, namespace)), "--service-sets", sets],
        "env": [{"name": "RUNTIME_TLS_BUNDLE_FILE", "value": bundle_file}],
        "securityContext": CONTAINER_SECURITY,
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
        "volumeMounts": [
            {"name": "secrets", "mountPath": SECRETS_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 (db-init writes root's files there)
        ],
    }
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "db-init", "namespace": namespace},
        "spec": {
            "backoffLimit": 20,
            "template": {
                "metadata": {"labels": _selector("db-init")},
                "spec": {
                    "restartPolicy": "OnFailure",
                    "securityContext": POD_SECURITY_CONTEXT,
                    "automountServiceAccountToken": False,
                    "containers": [container],
                    "volumes": [
                        _secrets_volume({bundle_file: (DB_ROOT_SECRET, "bundle")}),
                        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
                    ],
                },
            },
        },
    }
    return [_secret(namespace, DB_ROOT_SECRET, {"bundle": pki.root().dump()}), job]


def _xds_access(namespace: str) -> list[Manifest]:
    """The xds pod's ServiceAccount may list and watch the namespace's EndpointSlices, nothing else."""
    meta = {"name": "xds", "namespace": namespace}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta,
            "rules": [
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]}
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "xds"},
            "subjects": [{"kind": "ServiceAccount", "name": "xds", "namespace": namespace}],
        },
    ]


def network_policies(namespace: str) -> list[Manifest]:
    """Default deny, in and out, then the paths the mode uses and nothing else:

    ==========  ===========================================  ==================================
    to          from                                         ports
    ==========  ===========================================  ==================================
    envoy       anywhere (the front door)                    8443
    xds         envoy                                        18000
    auth        envoy; every pod of the run (renewal)        8443
    kv, queue   envoy                                        8443, 8445
    etcd        every pod of the run; etcd (peers)           2379; 2380
    ==========  ===========================================  ==================================

    Out of every pod: the run's own pods, and DNS; the xds pod also the API server (443,
    6443). A pod of another namespace reaches the front door only.
    """
    run = {"matchLabels": {"app.kubernetes.io/part-of": "modematrix"}}

    def named(name: str) -> dict[str, Any]:
        return {"matchLabels": {"app.kubernetes.io/name": name}}

    def tcp(*ports: int) -> list[dict[str, Any]]:
        return [{"protocol": "TCP", "port": port} for port in ports]

    def policy(name: str, spec: dict[str, Any]) -> Manifest:
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }

    def inbound(name: str, rules: list[dict[str, Any]], selector: dict[str, Any] | None = None) -> Manifest:
        return policy(
            f"in-{name}", {"podSelector": selector or named(name), "policyTypes": ["Ingress"], "ingress": rules}
        )

    dns = [{"protocol": proto, "port": 53} for proto in ("UDP", "TCP")]
    return [
        policy("default-deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
        inbound("envoy", [{"ports": tcp(API_PORT)}]),
        inbound("xds", [{"from": [{"podSelector": named("envoy")}], "ports": tcp(XDS_PORT)}]),
        inbound("auth", [{"from": [{"podSelector": run}], "ports": tcp(API_PORT)}]),
        inbound(
            "kv-queue",
            [{"from": [{"podSelector": named("envoy")}], "ports": tcp(API_PORT, GRPC_PORT)}],
            {"matchExpressions": [{"key": "app.kubernetes.io/name", "operator": "In", "values": ["kv", "queue"]}]},
        ),
        inbound(
            ETCD,
            [
                {"from": [{"podSelector": run}], "ports": tcp(DB_CLIENT_PORT)},
                {"from": [{"podSelector": named(ETCD)}], "ports": tcp(DB_PEER_PORT)},
            ],
        ),
        policy(
            "out-run",
            {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"podSelector": run}]}, {"ports": dns}]},
        ),
        policy(
            "out-xds-api",
            {"podSelector": named("xds"), "policyTypes": ["Egress"], "egress": [{"ports": tcp(443, 6443)}]},
        ),
    ]


def _quantity(memory: str) -> str:
    """The spec's ``192m`` (megabytes, Docker's way) as Kubernetes' ``192Mi``.

    >>> _quantity("192m"), _quantity("1g")
    ('192Mi', '1Gi')
    """
    return memory[:-1] + {"k": "Ki", "m": "Mi", "g": "Gi"}[memory[-1]]


def to_yaml(found: Sequence[Manifest]) -> str:
    import yaml

    return "".join("---\n" + yaml.safe_dump(json.loads(json.dumps(m)), sort_keys=False) for m in found)


FORMATS = ("yaml", "kustomize", "helm")
KUSTOMIZATION = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"


def files(found: Sequence[Manifest], form: str, *, name: str = "modematrix", version: str = "0.1.0") -> dict[str, str]:
    """The manifests as the files of a kustomize base (``kubectl apply -k DIR``) or of a Helm
    chart (``helm install NAME DIR``): rendered, with nothing left to template at apply time,
    one file per object, in apply order (the namespace first).

    >>> sorted(files([{"kind": "Namespace", "metadata": {"name": "x"}}], "kustomize"))
    ['00-namespace-x.yaml', 'kustomization.yaml']
    >>> sorted(files([{"kind": "Namespace", "metadata": {"name": "x"}}], "helm"))
    ['Chart.yaml', 'templates/00-namespace-x.yaml', 'values.yaml']
    """
    if form not in FORMATS[1:]:
        raise ValueError(f"format: expected one of {', '.join(FORMATS)}, got {form!r}")
    objects = {f"{i:02d}-{m['kind'].lower()}-{m['metadata']['name']}.yaml": to_yaml([m]) for i, m in enumerate(found)}
    if form == "kustomize":
        listed = "".join(f"  - {f}\n" for f in objects)
        return {
            **objects,
            "kustomization.yaml": f"{KUSTOMIZATION}resources:\n{listed}",
        }
    chart = (
        f"apiVersion: v2\nname: {name}\nversion: {version}\nappVersion: {version}\n"
        'description: "the k8s mode of modematrix, rendered: no values, every object as it is applied"\n'
    )
    return {"Chart.yaml": chart, "values.yaml": "{}\n", **{f"templates/{f}": text for f, text in objects.items()}}

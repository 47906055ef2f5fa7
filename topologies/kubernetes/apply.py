"""Put the k8s mode's manifests into a Kubernetes API server, with lightkube (a maintained
client; no hand-written REST): server-side apply, so a repeat changes nothing and a changed
manifest is updated in place; and remove a run by its namespace.

    config = kubeconfig("https://127.0.0.1:6443", token=..., ca_pem=...)   # or KubeConfig.from_file(path)
    applied = apply(manifests, config)
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lightkube import ApiError, Client, codecs
from lightkube.config.kubeconfig import KubeConfig
from lightkube.resources.apps_v1 import Deployment, StatefulSet
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import Namespace, Pod, Secret, Service

from topologies.exceptions import StartTimeout
from topologies.kubernetes.manifests import DB_ROOT_SECRET

FIELD_MANAGER = "modematrix"


def kubeconfig(server: str, *, token: str, ca_pem: str | None = None) -> KubeConfig:
    """A configuration for one API server and a bearer token; without ``ca_pem`` the server's
    certificate is not checked (a throwaway local API server only)."""
    cluster: dict[str, Any] = {"server": server}
    if ca_pem is None:
        cluster["insecure-skip-tls-verify"] = True
    else:
        import base64

        cluster["certificate-authority-data"] = base64.b64encode(ca_pem.encode()).decode()
    return KubeConfig.from_dict(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": cluster}],
            "users": [{"name": "u", "user": {"token": token}}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "x",
        }
    )


def apply(manifests: Sequence[Mapping[str, Any]], config: KubeConfig) -> list[str]:
    """Server-side apply of every manifest, in order (the namespace comes first); the
    ``Kind/name`` of each."""
    applied = []
    with Client(config=config, field_manager=FIELD_MANAGER) as client:
        for manifest in manifests:
            client.apply(codecs.from_dict(dict(manifest)), force=True)
            applied.append(f"{manifest['kind']}/{manifest['metadata']['name']}")
    return applied


def delete_namespace(config: KubeConfig, namespace: str) -> None:
    """Remove a run: its namespace, and with it everything the run created (callers check
    :func:`owns` first: a namespace that is not a run's is never removed)."""
    with Client(config=config) as client:
        client.delete(Namespace, namespace)


RUN_LABEL = "modematrix.run"


@dataclass(frozen=True)
class Deployed:
    namespace: str
    applied: list[str]
    unavailable: dict[str, str]  # Deployment or StatefulSet -> why (empty: all available)


def owns(config: KubeConfig, namespace: str) -> bool | None:
    """Whether ``namespace`` is a modematrix run's (None: there is no such namespace)."""
    with Client(config=config) as client:
        try:
            found = client.get(Namespace, namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise
    labels = (found.metadata.labels if found.metadata else None) or {}
    return labels.get(RUN_LABEL) == namespace


def deploy(manifests: Sequence[Mapping[str, Any]], config: KubeConfig, *, timeout: float) -> Deployed:
    """Apply into the run's own namespace (marked as the run's), then wait until every
    Deployment and StatefulSet is available or ``timeout`` passes; what is not, and why."""
    namespace = str(manifests[0]["metadata"]["name"])
    applied = apply(_marked(manifests), config)
    deadline = time.monotonic() + timeout
    while True:
        waiting = unavailable(config, namespace)
        if not waiting and _db_initialised(config, namespace):
            return Deployed(namespace, applied, waiting)
        if time.monotonic() > deadline:
            return Deployed(namespace, applied, waiting or {"Job/db-init": "not complete"})
        time.sleep(0.5)


def _marked(manifests: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The manifests with the namespace (the first) labelled as the run's."""
    namespace = manifests[0]
    labels = {**namespace["metadata"].get("labels", {}), RUN_LABEL: namespace["metadata"]["name"]}
    return [dict(namespace, metadata={**namespace["metadata"], "labels": labels}), *manifests[1:]]


def node_port(config: KubeConfig, namespace: str, service: str) -> int:
    """The node port the cluster gave ``service``'s first port."""
    with Client(config=config) as client:
        found = client.get(Service, service, namespace=namespace)
    ports = (found.spec.ports if found.spec else None) or []
    if not ports or not ports[0].nodePort:
        raise StartTimeout(f"k8s: Service {service} in {namespace} has no node port")
    return int(ports[0].nodePort)


def load_balancer_address(
    manifests: Sequence[Mapping[str, Any]], config: KubeConfig, service: str, *, timeout: float
) -> str | None:
    """Apply the run's namespace and its ``service`` (of type LoadBalancer) alone, and wait
    for the cluster's load balancer to give it an address (an IP or a name); None if none
    came within ``timeout`` (the cluster may have no load balancer controller)."""
    namespace = str(manifests[0]["metadata"]["name"])
    wanted = [m for m in manifests[1:] if m["kind"] == "Service" and m["metadata"]["name"] == service]
    apply(_marked([manifests[0], *wanted]), config)
    deadline = time.monotonic() + timeout
    with Client(config=config) as client:
        while time.monotonic() < deadline:
            found = client.get(Service, service, namespace=namespace)
            balancer = found.status.loadBalancer if found.status else None
            for entry in (balancer.ingress if balancer else None) or []:
                if entry.ip or entry.hostname:
                    return str(entry.ip or entry.hostname)
            time.sleep(1.0)
    return None


def _db_initialised(config: KubeConfig, namespace: str) -> bool:
    """Once db-init has run, etcd root's certificate leaves the namespace: its Secret is
    deleted (the Job keeps its record; its pod is done and mounts nothing)."""
    with Client(config=config) as client:
        try:
            job = client.get(Job, "db-init", namespace=namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return True  # a mode without one
            raise
        if not (job.status and job.status.succeeded):
            return False
        try:
            client.delete(Secret, DB_ROOT_SECRET, namespace=namespace)
        except ApiError as exc:
            if exc.status.code != 404:
                raise
    return True


def unavailable(config: KubeConfig, namespace: str) -> dict[str, str]:
    """Each Deployment or StatefulSet short of its replicas, with its pods' reason (a pending
    pod's scheduling message, such as no nodes to run on)."""
    found: dict[str, str] = {}
    with Client(config=config) as client:
        reasons = []
        for pod in client.list(Pod, namespace=namespace):
            for condition in (pod.status.conditions if pod.status else None) or []:
                if condition.status != "True" and condition.message:
                    reasons.append(f"{pod.metadata.name if pod.metadata else '?'}: {condition.message}")
        why = "; ".join(sorted(set(reasons))[:3]) or "no pod created yet"
        items: list[Any] = [*client.list(Deployment, namespace=namespace)]
        items += client.list(StatefulSet, namespace=namespace)
        for item in items:
            want = (item.spec.replicas if item.spec else 0) or 0
            ready = (item.status.readyReplicas if item.status else 0) or 0
            if ready < want:
                found[f"{type(item).__name__}/{item.metadata.name}"] = f"{ready}/{want} ready ({why})"
    return found

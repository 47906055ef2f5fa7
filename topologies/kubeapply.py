"""Put the k8s mode's manifests into a Kubernetes API server, with lightkube (a maintained
client; no hand-written REST): server-side apply, so a repeat changes nothing and a changed
manifest is updated in place; and remove a run by its namespace.

    config = kubeconfig("https://127.0.0.1:6443", token=..., ca_pem=...)   # or KubeConfig.from_file(path)
    applied = apply(manifests, config)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lightkube import Client, codecs
from lightkube.config.kubeconfig import KubeConfig
from lightkube.resources.core_v1 import Namespace

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
    """Remove a run: its namespace, and with it everything the run created."""
    with Client(config=config) as client:
        client.delete(Namespace, namespace)

"""Kubernetes EndpointSlices as the xDS control plane's endpoint source (the k8s mode).

Where discovery on Docker reads the nodes' own registrations under DB leases
(:class:`runtime.discovery.leases.DbLeaseSource`), on Kubernetes the cluster already knows which pods
back each Service and whether they are ready: the EndpointSlices of the Services named after
the runtime's services (``kubernetes.io/service-name: kv``...). :func:`endpoints_from_slices`
is the translation, pure; :class:`EndpointSliceSource` lists and watches the slices of one
namespace with lightkube and yields the translation after every change.

Translation, by the EndpointSlice API's own rules: a slice's port named ``https`` is the HTTP
API, ``grpc`` the gRPC API; each endpoint's first address is the one to use; ``ready`` unset
means ready; a pod that is terminating but still serving is listed as draining (Envoy sends
it nothing new, what is in flight finishes), one neither ready nor serving is left out; the
same pod in two slices (they overlap while the controller moves endpoints) is listed once.

    >>> kv = {"metadata": {"name": "kv-x", "labels": {SERVICE_LABEL: "kv"}},
    ...       "ports": [{"name": "https", "port": 8443}, {"name": "grpc", "port": 8445}],
    ...       "endpoints": [{"addresses": ["10.42.0.7"], "conditions": {"ready": True},
    ...                      "targetRef": {"kind": "Pod", "name": "kv-5d9f-abcde"}}]}
    >>> endpoints_from_slices([kv], ["kv"])  # doctest: +NORMALIZE_WHITESPACE
    [Endpoint(node='kv-5d9f-abcde', service='kv', host='10.42.0.7', port=8443, ready=True, version='',
              grpc_port=8445, tls_name='kv')]
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from typing import Any

from runtime.discovery.base import Endpoint

SERVICE_LABEL = "kubernetes.io/service-name"
HTTP_PORT_NAME, GRPC_PORT_NAME = "https", "grpc"
log = logging.getLogger("runtime.discovery")


def endpoints_from_slices(slices: Iterable[Mapping[str, Any]], services: Sequence[str]) -> list[Endpoint]:
    found: dict[tuple[str, str, int], Endpoint] = {}
    for item in slices:
        service = (item.get("metadata") or {}).get("labels", {}).get(SERVICE_LABEL)
        if service not in services:
            continue
        ports = {p.get("name"): p.get("port") for p in item.get("ports") or [] if p.get("port")}
        http_port = ports.get(HTTP_PORT_NAME)
        if not http_port:
            continue  # a slice without the API port names nothing Envoy could reach
        for endpoint in item.get("endpoints") or []:
            addresses = endpoint.get("addresses") or []
            if not addresses:
                continue
            conditions = endpoint.get("conditions") or {}
            ready = conditions.get("ready") is not False
            draining = not ready and bool(conditions.get("serving")) and bool(conditions.get("terminating"))
            if not ready and not draining:
                continue
            name = (endpoint.get("targetRef") or {}).get("name") or addresses[0]
            grpc_port = int(ports.get(GRPC_PORT_NAME) or 0)
            # a pod's certificate names its workload's Service, not the pod (runtime/manifests' bundles)
            made = Endpoint(name, service, addresses[0], int(http_port), ready, "", grpc_port, tls_name=service)
            key = (service, made.host, made.port)
            if key not in found or (made.ready and not found[key].ready):
                found[key] = made
    return sorted(found.values(), key=lambda e: (e.service, e.host, e.port))


class EndpointSliceSource:
    """The slices of ``services`` in ``namespace``: listed, then watched; relisted after any
    error of the watch (an expired resource version, a restarted API server), so a change is
    never missed for longer than the retry. ``client`` is a lightkube ``AsyncClient``
    (default: the pod's service account)."""

    def __init__(self, namespace: str, services: Sequence[str], client: Any = None, retry: float = 1.0) -> None:
        self.namespace, self.services, self.retry = namespace, list(services), retry
        self._client = client

    def _connect(self) -> Any:
        if self._client is None:
            from lightkube import AsyncClient  # only the k8s mode's xds pod needs it

            self._client = AsyncClient(namespace=self.namespace)
        return self._client

    async def watch(self) -> AsyncGenerator[list[Endpoint], None]:
        from lightkube.resources.discovery_v1 import EndpointSlice

        client, selector = self._connect(), {SERVICE_LABEL: self.services}
        last: list[Endpoint] | None = None
        while True:
            try:
                slices: dict[str, Mapping[str, Any]] = {}
                listed = client.list(EndpointSlice, namespace=self.namespace, labels=selector)
                async for item in listed:
                    slices[item.metadata.name] = item.to_dict()
                version = listed.resourceVersion
                now = endpoints_from_slices(slices.values(), self.services)
                if now != last:
                    last = now
                    yield now
                stream = client.watch(
                    EndpointSlice, namespace=self.namespace, labels=selector, resource_version=version
                )
                async for event, item in stream:
                    if event == "DELETED":
                        slices.pop(item.metadata.name, None)
                    else:
                        slices[item.metadata.name] = item.to_dict()
                    now = endpoints_from_slices(slices.values(), self.services)
                    if now != last:
                        last = now
                        yield now
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("EndpointSlice watch failed; relisting", extra={"fields": {"error": str(exc)[:300]}})
            await asyncio.sleep(self.retry)

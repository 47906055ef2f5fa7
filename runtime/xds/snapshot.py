"""What Envoy is told, built purely from the one route table and a set of endpoints.

A :class:`Snapshot` is the four resource kinds of one version, keyed by type URL as
go-control-plane keys them: a listener (HTTP connection manager, routes over ADS), one route
configuration generated from :data:`runtime.routing.ROUTES`, a cluster per service, and each
cluster's endpoints; :func:`inconsistencies` checks it as a whole before it is served (every
route's cluster defined, every endpoint set named by a cluster). Nothing here does I/O;
:mod:`runtime.xds.server` serves snapshots, :mod:`runtime.discovery` says which endpoints
exist.

Routing is the table's, rule for rule: a route per table entry (path regex, RE2-valid, and
the method; ``HEAD`` where the entry is ``GET``), then for each path a 405 with ``Allow``
naming its methods, then 404, the same answers the in-process router gives. Before them,
one route per gRPC method (:data:`runtime.routing.GRPC_METHODS`, exact path) to the
service's gRPC cluster (``kv-grpc``: HTTP/2 to the nodes' gRPC port, balanced per call),
with the retry rules of the HTTP route it mirrors.

    >>> table = route_configuration()
    >>> [r.name for r in table.virtual_hosts[0].routes][:2]
    ['grpc kv.get', 'grpc kv.put']
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2, health_check_pb2, protocol_pb2
from envoy.config.core.v3 import substitution_format_string_pb2 as core_format
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import http_pb2 as http_types_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2
from google.protobuf.message import Message
from google.protobuf.struct_pb2 import Struct

from runtime import routing
from runtime.discovery import Endpoint
from runtime.rpc import STREAMS_PER_CONNECTION

LISTENER = "api"
NOT_AT_THE_FRONT_DOOR = "no route for this path through the front door"
ROUTES = "routes"
OPS_CLUSTER = "ops"  # /healthz, /readyz, /ca.pem, /metrics, /openapi.json: any service node answers
TYPE = {
    "listener": "type.googleapis.com/envoy.config.listener.v3.Listener",
    "route": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
    "cluster": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
    "endpoint": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
}


@dataclass(frozen=True)
class Tls:
    """Where an Envoy finds its certificates: ``directory`` on the Envoy's node holds
    ``sds-node.json`` and ``sds-ca.json`` (written by its supervisor, :mod:`runtime.xds.edge`)
    naming the node's certificate files and the cluster CA. Envoy watches the directory, so a
    renewed certificate (an atomic rename there) is used from the next handshake on."""

    directory: str

    def sds(self, name: str) -> secret_pb2.SdsSecretConfig:
        return secret_pb2.SdsSecretConfig(
            name=name,
            sds_config=config_source_pb2.ConfigSource(
                path_config_source=config_source_pb2.PathConfigSource(
                    path=f"{self.directory}/sds-{name}.json",
                    watched_directory=base_pb2.WatchedDirectory(path=self.directory),
                ),
                resource_api_version=config_source_pb2.V3,
            ),
        )

    def common(self, *, verify: bool) -> tls_pb2.CommonTlsContext:
        """TLS 1.2 or newer, this node's certificate; ``verify``: peers must be the cluster CA's."""
        context = tls_pb2.CommonTlsContext(
            tls_params=common_pb2.TlsParameters(tls_minimum_protocol_version=common_pb2.TlsParameters.TLSv1_2),
            tls_certificate_sds_secret_configs=[self.sds("node")],
        )
        if verify:
            context.validation_context_sds_secret_config.CopyFrom(self.sds("ca"))
        return context


@dataclass(frozen=True)
class Snapshot:
    """One version of everything Envoy is told: type URL -> resource name -> resource."""

    version: str
    resources: Mapping[str, Mapping[str, Message]] = field(default_factory=dict)

    def of(self, type_url: str, names: Iterable[str] = ()) -> list[any_pb2.Any]:
        """The resources of one type, packed: all of them, or those named (for RDS and EDS)."""
        wanted = set(names)
        found = self.resources.get(type_url, {})
        return [_pack(resource) for name, resource in sorted(found.items()) if not wanted or name in wanted]

    def with_resources(self, type_url: str, changed: Mapping[str, Message]) -> Snapshot:
        """A new snapshot with ``changed`` in place of that type's resources, re-versioned."""
        return _versioned({**self.resources, type_url: dict(changed)})


def cluster_name(service: str) -> str:
    return service if service != routing.OPS else OPS_CLUSTER


def grpc_cluster_name(service: str) -> str:
    return f"{service}-grpc"


def services() -> list[str]:
    return [*routing.services_routed(), OPS_CLUSTER]


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _regex(pattern: str) -> regex_pb2.RegexMatcher:
    return regex_pb2.RegexMatcher(regex=pattern)


def _method(methods: Sequence[str]) -> route_components_pb2.HeaderMatcher:
    alternatives = "|".join(methods)
    return route_components_pb2.HeaderMatcher(
        name=":method", string_match=string_pb2.StringMatcher(safe_regex=_regex(f"^({alternatives})$"))
    )


def _error(status: int, code: str, detail: str, headers: Mapping[str, str] = {}) -> dict[str, object]:
    body = json.dumps({"error": code, "detail": detail})
    return {
        "direct_response": route_components_pb2.DirectResponseAction(
            status=status, body=base_pb2.DataSource(inline_string=body)
        ),
        "response_headers_to_add": [
            base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=k, value=v))
            for k, v in {"content-type": "application/json", **headers}.items()
        ],
    }


def route_configuration() -> route_pb2.RouteConfiguration:
    """The route table as Envoy routes: one per gRPC method, one per table entry (the
    cluster-internal ones answered 404 here), then each path's 405, then 404."""
    routes: list[route_components_pb2.Route] = []
    for method in routing.GRPC_METHODS:
        grpc_match = route_components_pb2.RouteMatch(
            path=method.path,
            grpc=route_components_pb2.RouteMatch.GrpcRouteMatchOptions(),  # content-type application/grpc*
        )
        routes.append(
            route_components_pb2.Route(name=f"grpc {method.route.name}", match=grpc_match, route=_forward_grpc(method))
        )
    for entry in routing.ROUTES:
        methods = [entry.method, "HEAD"] if entry.method == "GET" else [entry.method]
        match = route_components_pb2.RouteMatch(safe_regex=_regex(entry.pattern.pattern), headers=[_method(methods)])
        action: dict[str, object] = {"route": _forward(entry)}
        if entry.members_only:  # cluster-internal: Envoy answers 404 itself, nothing reaches a node
            action = _error(404, "not_found", NOT_AT_THE_FRONT_DOOR)
        routes.append(route_components_pb2.Route(name=entry.name, match=match, **action))
    allowed: dict[str, list[str]] = {}
    for entry in routing.ROUTES:
        allowed.setdefault(entry.pattern.pattern, []).append(entry.method)
    for pattern, methods in allowed.items():
        allow = ", ".join(sorted(set(methods)))
        routes.append(
            route_components_pb2.Route(
                name=f"405 {pattern}",
                match=route_components_pb2.RouteMatch(safe_regex=_regex(pattern)),
                **_error(405, "method_not_allowed", "this method is not allowed here", {"allow": allow}),
            )
        )
    routes.append(
        route_components_pb2.Route(
            name="404",
            match=route_components_pb2.RouteMatch(prefix="/"),
            **_error(404, "not_found", "no route for this path"),
        )
    )
    host = route_components_pb2.VirtualHost(name="api", domains=["*"], routes=routes)
    return route_pb2.RouteConfiguration(name=ROUTES, virtual_hosts=[host])


def _forward(entry: routing.Route) -> route_components_pb2.RouteAction:
    """Retries only where sending again is safe: idempotent routes on any failure Envoy sees
    after sending; every route when the request was refused before it was processed (no
    connection, or a reset before any byte came back)."""
    retry_on = "connect-failure,refused-stream,reset-before-request"
    if entry.idempotent:
        retry_on += ",reset,5xx"
    return _action(cluster_name(entry.service), retry_on)


def _action(cluster: str, retry_on: str) -> route_components_pb2.RouteAction:
    """To ``cluster``, 5 s, at most two retries on ``retry_on``, each to another node."""
    policy = route_components_pb2.RetryPolicy(
        retry_on=retry_on,
        num_retries=wrappers_pb2.UInt32Value(value=2),
        retry_host_predicate=[
            route_components_pb2.RetryPolicy.RetryHostPredicate(
                name="envoy.retry_host_predicates.previous_hosts",
                typed_config=_pack(previous_hosts_pb2.PreviousHostsPredicate()),
            )
        ],
    )
    return route_components_pb2.RouteAction(
        cluster=cluster, retry_policy=policy, timeout=duration_pb2.Duration(seconds=5)
    )


def _forward_grpc(method: routing.GrpcMethod) -> route_components_pb2.RouteAction:
    """As :func:`_forward`, in gRPC's terms: UNAVAILABLE from a node means nothing was applied
    (runtime/rpc/api.py), so every call may be sent again on it; idempotent calls also on a
    reset or an internal error."""
    retry_on = "connect-failure,refused-stream,reset-before-request,unavailable"
    if method.route.idempotent:
        retry_on += ",reset,internal,deadline-exceeded"
    return _action(grpc_cluster_name(method.route.service), retry_on)


def listener(port: int, tls: Tls | None) -> listener_pb2.Listener:
    manager = hcm.HttpConnectionManager(
        stat_prefix="api",
        codec_type=hcm.HttpConnectionManager.AUTO,
        rds=hcm.Rds(config_source=_ads(), route_config_name=ROUTES),
        http_filters=[hcm.HttpFilter(name="envoy.filters.http.router", typed_config=_pack(router_pb2.Router()))],
        use_remote_address=wrappers_pb2.BoolValue(value=True),  # X-Forwarded-For: the client, set by Envoy
        normalize_path=wrappers_pb2.BoolValue(value=False),  # keys travel as the client sent them
        stream_idle_timeout=duration_pb2.Duration(seconds=15),
        request_headers_timeout=duration_pb2.Duration(seconds=10),
        local_reply_config=local_replies(),
    )
    chain = listener_components_pb2.FilterChain(
        filters=[
            listener_components_pb2.Filter(
                name="envoy.filters.network.http_connection_manager", typed_config=_pack(manager)
            )
        ]
    )
    if tls is not None:
        common = tls.common(verify=False)
        common.alpn_protocols.extend(["h2", "http/1.1"])
        chain.transport_socket.CopyFrom(_tls_socket(tls_pb2.DownstreamTlsContext(common_tls_context=common)))
    return listener_pb2.Listener(
        name=LISTENER,
        address=address_pb2.Address(socket_address=address_pb2.SocketAddress(address="0.0.0.0", port_value=port)),
        filter_chains=[chain],
    )


# Envoy's own 503s, in the runtime's terms: no healthy node, or no connection made, means the
# request reached no service (the client may send it again); anything else may have.
NOT_SENT_FLAGS = ("UH", "UF", "NR")


def local_replies() -> hcm.LocalReplyConfig:
    def body(code: str, detail: str) -> core_format.SubstitutionFormatString:
        document = Struct()
        document.update({"error": code, "detail": detail + " (%RESPONSE_CODE_DETAILS%)"})
        return core_format.SubstitutionFormatString(json_format=document)

    refused = hcm.ResponseMapper(
        filter=accesslog_pb2.AccessLogFilter(
            response_flag_filter=accesslog_pb2.ResponseFlagFilter(flags=list(NOT_SENT_FLAGS))
        ),
        body_format_override=body("not_applied", "the request reached no service node; nothing was applied"),
    )
    unknown = hcm.ResponseMapper(
        filter=accesslog_pb2.AccessLogFilter(
            status_code_filter=accesslog_pb2.StatusCodeFilter(
                comparison=accesslog_pb2.ComparisonFilter(
                    op=accesslog_pb2.ComparisonFilter.GE,
                    value=base_pb2.RuntimeUInt32(default_value=500, runtime_key="modematrix.local_reply_min"),
                )
            )
        ),
        body_format_override=body("outcome_unknown", "the service node did not answer; it may have applied it"),
    )
    # gRPC clients read the HTTP status as a code (503 -> UNAVAILABLE, "send it again"); a
    # call that may have been applied must say UNKNOWN instead, which is what 500 becomes
    grpc_unknown = hcm.ResponseMapper(
        filter=accesslog_pb2.AccessLogFilter(
            and_filter=accesslog_pb2.AndFilter(
                filters=[
                    accesslog_pb2.AccessLogFilter(status_code_filter=unknown.filter.status_code_filter),
                    accesslog_pb2.AccessLogFilter(
                        header_filter=accesslog_pb2.HeaderFilter(
                            header=route_components_pb2.HeaderMatcher(
                                name="content-type",
                                string_match=string_pb2.StringMatcher(prefix="application/grpc"),
                            )
                        )
                    ),
                ]
            )
        ),
        status_code=wrappers_pb2.UInt32Value(value=500),
        body_format_override=unknown.body_format_override,
    )
    return hcm.LocalReplyConfig(mappers=[refused, grpc_unknown, unknown])


def _ads() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(), resource_api_version=config_source_pb2.V3
    )


def cluster(service: str, tls: Tls | None, health_interval_ms: int = 500) -> cluster_pb2.Cluster:
    """One service's nodes: endpoints from EDS, per-request round robin over HTTP/1.1
    connections (the runtime speaks HTTP/1.1), active checks of /readyz, outlier detection."""
    made = cluster_pb2.Cluster(
        name=cluster_name(service),
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=_ads()),
        connect_timeout=duration_pb2.Duration(nanos=500_000_000),
        lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
        ignore_health_on_host_removal=True,  # withdrawn from discovery: out now, not when checks fail
        # a node that stops answering /readyz (a pause, a partition) is out after 3 misses; a
        # slow answer under load is no miss (timeout 3 s), and a dead node leaves sooner, with
        # its lease (TTL 3 s) or its refused connections
        health_checks=[
            health_check_pb2.HealthCheck(
                timeout=duration_pb2.Duration(seconds=3),
                interval=duration_pb2.Duration(nanos=health_interval_ms * 1_000_000),
                unhealthy_threshold=wrappers_pb2.UInt32Value(value=3),
                healthy_threshold=wrappers_pb2.UInt32Value(value=1),
                http_health_check=health_check_pb2.HealthCheck.HttpHealthCheck(path="/readyz"),
            )
        ],
        outlier_detection=outlier_detection_pb2.OutlierDetection(
            consecutive_5xx=wrappers_pb2.UInt32Value(value=10),
            consecutive_gateway_failure=wrappers_pb2.UInt32Value(value=3),
            interval=duration_pb2.Duration(seconds=1),
            base_ejection_time=duration_pb2.Duration(seconds=2),
            max_ejection_percent=wrappers_pb2.UInt32Value(value=50),
        ),
        circuit_breakers=retry_budget(),
    )
    _speak(made, http2=False)
    if tls is not None:  # the service nodes take calls only from members: this node's certificate
        made.transport_socket.CopyFrom(_upstream_tls(tls, alpn=()))
    return made


# Envoy closes a connection to a node idle this long, before the node does (its idle_timeout,
# 15 s unless set lower): a request written into a connection the node is closing is reset,
# and only the idempotent ones may be sent again.
UPSTREAM_IDLE_S = 10


def retry_budget() -> circuit_breaker_pb2.CircuitBreakers:
    """Retries in flight at most a quarter of the requests in flight, and at least 64, instead
    of Envoy's fixed 3. At 64 requests at once on a saturated core, three refused streams, or
    three connections whose TLS handshake missed the 0.5 s connect timeout (a node busy on the
    same core: 95 in 24 s of the pinned bench), already overflowed the fixed limit, and the
    rest reached the client as errors although nothing had been sent. A budget still bounds
    retry storms: with every node failing, retries stay a quarter of the load."""
    budget = circuit_breaker_pb2.CircuitBreakers.Thresholds.RetryBudget(
        budget_percent=percent_pb2.Percent(value=25.0), min_retry_concurrency=wrappers_pb2.UInt32Value(value=64)
    )
    return circuit_breaker_pb2.CircuitBreakers(
        thresholds=[circuit_breaker_pb2.CircuitBreakers.Thresholds(retry_budget=budget)]
    )


def _speak(made: cluster_pb2.Cluster, *, http2: bool) -> None:
    """The protocol Envoy speaks to a cluster's nodes: HTTP/1.1 (the HTTP API), or HTTP/2 with
    half the streams a connection that a node's gRPC port allows (gRPC, balanced per call):
    grpc-core counts a stream until it has cleaned it up, after the client saw it end, so a
    client at exactly the limit has some refused (REFUSED_STREAM) at load. Idle connections
    are closed by Envoy first."""
    config = http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
        http2_protocol_options=protocol_pb2.Http2ProtocolOptions(
            max_concurrent_streams=wrappers_pb2.UInt32Value(value=STREAMS_PER_CONNECTION // 2)
        )
    )
    if not http2:
        config = http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
            http_protocol_options=protocol_pb2.Http1ProtocolOptions()
        )
    options = http_protocol_options_pb2.HttpProtocolOptions(
        explicit_http_config=config,
        common_http_protocol_options=protocol_pb2.HttpProtocolOptions(
            idle_timeout=duration_pb2.Duration(seconds=UPSTREAM_IDLE_S)
        ),
    )
    made.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].CopyFrom(
        _pack(options)
    )


def _tls_socket(context: Message) -> base_pb2.TransportSocket:
    """Envoy's TLS transport socket around a downstream or upstream TLS context."""
    return base_pb2.TransportSocket(name="envoy.transport_sockets.tls", typed_config=_pack(context))


def _upstream_tls(tls: Tls, *, alpn: Sequence[str]) -> base_pb2.TransportSocket:
    """TLS to a service node: this node's certificate; the node's must be the cluster CA's and
    carry the endpoint's name (SNI from the endpoint's hostname, checked against its SANs), so
    no other certificate of the CA, another service's or a client's, passes for a node."""
    upstream = tls_pb2.UpstreamTlsContext(
        common_tls_context=tls.common(verify=True), auto_host_sni=True, auto_sni_san_validation=True
    )
    upstream.common_tls_context.alpn_protocols.extend(alpn)
    return _tls_socket(upstream)


def grpc_cluster(service: str, tls: Tls | None, health_interval_ms: int = 500) -> cluster_pb2.Cluster:
    """A service's gRPC API: the same nodes and checks as :func:`cluster` (the health check
    goes to each node's HTTP port, over HTTP/1.1), calls over HTTP/2 and balanced per call,
    not per connection."""
    made = cluster(service, tls, health_interval_ms)
    made.name = grpc_cluster_name(service)
    made.health_checks[0].http_health_check.codec_client_type = http_types_pb2.HTTP1
    _speak(made, http2=True)
    if tls is not None:  # ALPN h2: the node's gRPC server speaks HTTP/2 only
        made.transport_socket.CopyFrom(_upstream_tls(tls, alpn=("h2",)))
    return made


def load_assignment(
    service: str, endpoints: Iterable[Endpoint], *, grpc: bool = False
) -> endpoint_pb2.ClusterLoadAssignment:
    """A cluster's endpoints; a node that registered as not ready (draining) is listed as
    draining, so Envoy sends it nothing new. ``grpc``: the gRPC port of each node that serves
    one, health checked on its HTTP port's /readyz."""
    members = []
    for e in sorted(endpoints, key=lambda e: (e.host, e.port)):
        if grpc and not e.grpc_port:
            continue
        endpoint = endpoint_components_pb2.Endpoint(
            address=address_pb2.Address(
                socket_address=address_pb2.SocketAddress(address=e.host, port_value=e.grpc_port if grpc else e.port)
            ),
            hostname=e.verified_as,  # Envoy's SNI to the node, and the name its certificate must carry
        )
        if grpc:
            endpoint.health_check_config.port_value = e.port
        health = health_check_pb2.HEALTHY if e.ready else health_check_pb2.DRAINING
        members.append(endpoint_components_pb2.LbEndpoint(endpoint=endpoint, health_status=health))
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=grpc_cluster_name(service) if grpc else cluster_name(service),
        endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=members)],
    )


def build(endpoints: Iterable[Endpoint], *, port: int, tls: Tls | None) -> Snapshot:
    """The whole snapshot; its version is a digest of its content, so the same inputs give
    the same version and a change gives a new one."""
    by_service: dict[str, list[Endpoint]] = {s: [] for s in services()}
    for e in endpoints:
        by_service.setdefault(e.service, []).append(e)
        by_service[OPS_CLUSTER].append(e)  # any service node answers the operations routes
    grpc = routing.GRPC_SERVICES
    resources: dict[str, dict[str, Message]] = {
        TYPE["listener"]: {LISTENER: listener(port, tls)},
        TYPE["route"]: {ROUTES: route_configuration()},
        TYPE["cluster"]: {
            **{cluster_name(s): cluster(s, tls) for s in services()},
            **{grpc_cluster_name(s): grpc_cluster(s, tls) for s in grpc},
        },
        TYPE["endpoint"]: {
            **{cluster_name(s): load_assignment(s, by_service[s]) for s in services()},
            **{grpc_cluster_name(s): load_assignment(s, by_service[s], grpc=True) for s in grpc},
        },
    }
    return _versioned(resources)


def _versioned(resources: Mapping[str, Mapping[str, Message]]) -> Snapshot:
    digest = hashlib.sha256()
    for type_url in sorted(resources):
        for name in sorted(resources[type_url]):
            message = resources[type_url][name].SerializeToString(deterministic=True)
            digest.update(type_url.encode() + name.encode() + message)
    return Snapshot(digest.hexdigest()[:16], resources)


def inconsistencies(snapshot: Snapshot) -> list[str]:
    """What Envoy would find missing, said before it is sent (go-control-plane's
    ``Snapshot.Consistent``): every endpoint set named by an EDS cluster and every such
    cluster's endpoints present; every route's cluster defined; the listener's route table
    present. Empty: consistent.

    >>> inconsistencies(build([], port=8443, tls=None))
    []
    """
    found = []
    clusters = snapshot.resources.get(TYPE["cluster"], {})
    assignments = snapshot.resources.get(TYPE["endpoint"], {})
    eds = {name for name, c in clusters.items() if isinstance(c, cluster_pb2.Cluster) and c.type == c.EDS}
    found += [f"cluster {name}: no endpoints (EDS)" for name in sorted(eds - set(assignments))]
    found += [f"endpoints {name}: no EDS cluster names them" for name in sorted(set(assignments) - eds)]
    routes = snapshot.resources.get(TYPE["route"], {})
    for table in routes.values():
        for host in table.virtual_hosts:  # type: ignore[attr-defined]
            for route in host.routes:
                if route.HasField("route") and route.route.cluster not in clusters:
                    found.append(f"route {route.name!r}: cluster {route.route.cluster!r} is not defined")
    if ROUTES not in routes:
        found.append(f"listener {LISTENER}: route table {ROUTES!r} is not defined")
    return found

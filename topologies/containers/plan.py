"""Decide, purely, what each container gets: environment, secrets, HAProxy config, firewall rules.

Nothing here talks to an engine. :mod:`topologies.containers.start` and the faults apply the
plan; the partition rules are computed from the groups before any rule is written (Jepsen's
grudge, then nemesis).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from runtime.routing import GRPC_METHODS
from topologies import service as service_files
from topologies.constants import (
    API_PORT,
    CLOCK_FILE,
    DB_CLIENT_PORT,
    ENVOY_RUNTIME_PORT,
    GRPC_PORT,
    PROXY_PORT,
    ROUTED_SERVICES,
    SECRETS_DIR,
    XDS_PORT,
)
from topologies.runs import SECRET_FILES, Secrets, secret_settings
from topologies.spec import LoadBalancerSpec, ModeSpec, NodeSpec


def addresses(spec: ModeSpec, subnet_prefix: str) -> dict[str, str]:
    """Fixed addresses: ``10.213.7`` -> node i gets ``10.213.7.(11+i)``, an HAProxy ``.10``."""
    ips = {node.name: f"{subnet_prefix}.{11 + i}" for i, node in enumerate(spec.nodes)}
    if spec.load_balancer is not None and spec.load_balancer.kind == "haproxy":
        ips[spec.load_balancer.name] = f"{subnet_prefix}.10"
    return ips


def node_secrets(node: NodeSpec, secrets: Secrets, tls_bundle: str | None) -> dict[str, bytes]:
    """The secrets a node's services use, as files (container path -> content): its own
    certificates for every node; the admin password and the cluster secret only for nodes
    that run ``auth`` (it creates the first admin and seals the signing keys). A kv, queue,
    Envoy or xds node never holds either, even when it hosts a DB member.

    >>> sorted(node_secrets(NodeSpec("kv-1", ("kv",)), Secrets("c" * 32, "p" * 16), "{}"))
    ['/run/modematrix/secrets/tls-bundle.json']
    """
    given = {"tls_bundle": tls_bundle} if tls_bundle is not None else {}
    if "auth" in node.services:
        given.update(cluster_secret=secrets.cluster_secret, admin_password=secrets.admin_password)
    return {f"{SECRETS_DIR}/{SECRET_FILES[name]}": value.encode() for name, value in given.items()}


def node_env(
    spec: ModeSpec, node: NodeSpec, ips: Mapping[str, str], secrets: Secrets, tls_bundle: str | None = None
) -> dict[str, str]:
    """A node's settings; ``tls_bundle`` is its certificates from :mod:`topologies.pki`. The
    secrets themselves are files (:func:`node_secrets`): here are only their paths."""
    env = {
        "RUNTIME_SERVICES": ",".join(node.services),
        "RUNTIME_NODE_NAME": node.name,
        "RUNTIME_ADVERTISE": ",".join([node.name, ips[node.name]]),
        "RUNTIME_LOG_LEVEL": "info",
        "RUNTIME_CLOCK_SKEW_FILE": CLOCK_FILE,  # the clock-skew fault's failpoint (runtime/clock.py)
        **secret_settings(node_secrets(node, secrets, tls_bundle)),
    }
    if spec.db == "etcd":
        env.update(
            RUNTIME_MODE="cluster",
            RUNTIME_DB_BACKEND="etcd",
            RUNTIME_DB_ENDPOINTS=",".join(db_endpoints(spec, node, ips)),
        )
    if node.db_member:
        env.update(
            RUNTIME_DB_MEMBER_NAME=node.name,
            RUNTIME_DB_MEMBER_HOST=ips[node.name],
            RUNTIME_DB_INITIAL_CLUSTER=service_files.runtime().peer_list([(m.name, ips[m.name]) for m in spec.members]),
        )
    if tls_bundle is not None:
        if "auth" not in node.services:
            env["RUNTIME_ISSUERS"] = ",".join(f"{ips[n.name]}:{API_PORT}" for n in spec.peers_of("auth"))
    peers = peer_setting(spec, node, ips)
    if peers:
        env["RUNTIME_PEERS"] = peers
    lb = spec.load_balancer
    if lb is not None and lb.kind == "haproxy" and node.is_edge:
        env.update(RUNTIME_PROXY_PORT=str(PROXY_PORT), RUNTIME_TRUSTED_PROXIES=ips[lb.name])
    if lb is not None and lb.kind == "envoy":
        env.update(envoy_env(spec, node, ips))
    return env


def envoy_env(spec: ModeSpec, node: NodeSpec, ips: Mapping[str, str]) -> dict[str, str]:
    """Envoy as the front door: service nodes register for discovery, the xds node serves
    the config, envoy nodes run Envoy on the API port (their runtime moves aside)."""
    env: dict[str, str] = {}
    if any(s in ROUTED_SERVICES for s in node.services):
        env["RUNTIME_DISCOVERY"] = "true"
    if "xds" in node.services:
        env.update(RUNTIME_XDS_PORT=str(XDS_PORT), RUNTIME_ENVOY_PORT=str(API_PORT))
    if node.is_envoy:
        planes = ",".join(f"{ips[n.name]}:{XDS_PORT}" for n in spec.nodes if "xds" in n.services)
        env.update(
            RUNTIME_LISTEN=f"0.0.0.0:{ENVOY_RUNTIME_PORT}",
            RUNTIME_XDS_SERVERS=planes,
            RUNTIME_ENVOY_PORT=str(API_PORT),
        )
    return env


def db_endpoints(spec: ModeSpec, node: NodeSpec, ips: Mapping[str, str]) -> list[str]:
    """Every member's client URL, the node's own member first, others rotated by node index
    so that nodes without a member spread their load."""
    members = [f"https://{ips[m.name]}:{DB_CLIENT_PORT}" for m in spec.members]
    if not members:
        return []  # the runtime refuses to start without them, and says so
    if node.db_member:
        own = f"https://{ips[node.name]}:{DB_CLIENT_PORT}"
        return [own, *[m for m in members if m != own]]
    shift = [n.name for n in spec.nodes].index(node.name) % len(members)
    return members[shift:] + members[:shift]


def service_sets(spec: ModeSpec) -> str:
    """``runtime db-init --service-sets``: each distinct service set of the mode's nodes."""
    return ";".join(sorted({",".join(n.services) for n in spec.nodes}))


def peer_setting(spec: ModeSpec, node: NodeSpec, ips: Mapping[str, str]) -> str:
    """``kv=ip:8443,ip:8443;auth=...`` for every routed service an edge node does not run."""
    if not node.is_edge:
        return ""
    groups = []
    for service in ROUTED_SERVICES:
        if service in node.services:
            continue
        hosts = ",".join(f"{ips[p.name]}:{API_PORT}" for p in spec.peers_of(service))
        groups.append(f"{service}={hosts}")
    return ";".join(groups)


def haproxy_config(lb: LoadBalancerSpec, mode: ModeSpec, ips: Mapping[str, str]) -> str:
    """HTTP API: TCP pass-through (TLS ends in the runtime), with TLS-verified HTTP checks of
    /readyz; each connection opens with the client's address (PROXY protocol v2) on the
    nodes' port for balancers, so the runtime throttles and logs by client, not by balancer.

    gRPC API (``GRPC_PORT``): HTTP/2 with TLS ended here (``lb.pem``, a certificate of
    the run's CA), each call routed by its path to the service's nodes and balanced per call,
    over TLS with the same certificate as the member's identity the service nodes ask for.
    """
    servers = "\n".join(f"    server {n.name} {ips[n.name]}:{PROXY_PORT} verifyhost {n.name}" for n in mode.edges)
    checks = f"inter {lb.check_interval_ms} fall 2 rise 2 check check-ssl verify required ca-file {SECRETS_DIR}/ca.pem"
    grpc = _haproxy_grpc(lb, mode, ips)
    return f"""global
    log stdout format raw local0 notice
    maxconn 4096
defaults
    mode tcp
    log global
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    retries 2
    option redispatch
frontend api
    bind :{API_PORT}
    default_backend ingress
backend ingress
    balance roundrobin
    option httpchk
    http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host {lb.name}
    http-check expect status 200
    default-server {checks} send-proxy-v2 check-send-proxy
{servers}
{grpc}"""


def _haproxy_grpc(lb: LoadBalancerSpec, mode: ModeSpec, ips: Mapping[str, str]) -> str:
    prefixes = {m.route.service: m.path.rsplit("/", 1)[0] + "/" for m in GRPC_METHODS}
    hosted = {service: mode.peers_of(service) for service in sorted(prefixes) if mode.peers_of(service)}
    if not hosted:
        return ""
    lines = [
        "frontend grpc",
        "    mode http",
        f"    bind :{GRPC_PORT} ssl crt {SECRETS_DIR}/lb.pem alpn h2",
        "    timeout http-request 10s",
        *(f"    use_backend {service}_grpc if {{ path_beg {prefixes[service]} }}" for service in hosted),
        "    default_backend not_found",  # any other path (the cluster's own routes among them): 404 here
        "backend not_found",
        "    mode http",
        '    http-request return status 404 content-type application/json string "{\\"error\\":\\"not_found\\"}"',
    ]
    checks = (
        f"inter {lb.check_interval_ms} fall 2 rise 2 check check-ssl check-alpn http/1.1 port {API_PORT} "
        f"ssl verify required ca-file {SECRETS_DIR}/ca.pem crt {SECRETS_DIR}/lb.pem alpn h2"
    )
    for service, nodes in hosted.items():
        lines += [
            f"backend {service}_grpc",
            "    mode http",
            "    balance roundrobin",
            "    retry-on conn-failure empty-response",  # nothing reached the node: safe for any call
            "    option httpchk",
            f"    http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host {lb.name}",
            "    http-check expect status 200",
            f"    default-server {checks}",
            *(f"    server {n.name} {ips[n.name]}:{GRPC_PORT} verifyhost {n.name}" for n in nodes),
        ]
    return "\n".join(lines) + "\n"


def partition_rules(groups: Sequence[Sequence[str]], ips: Mapping[str, str]) -> dict[str, list[str]]:
    """For each node, the iptables commands that cut it off from every node outside its group.

    >>> partition_rules([["a"], ["b", "c"]], {"a": "10.0.0.1", "b": "10.0.0.2", "c": "10.0.0.3"})["a"]
    ['iptables -A INPUT -s 10.0.0.2 -j DROP', 'iptables -A OUTPUT -d 10.0.0.2 -j DROP', \
'iptables -A INPUT -s 10.0.0.3 -j DROP', 'iptables -A OUTPUT -d 10.0.0.3 -j DROP']
    """
    listed = [name for group in groups for name in group]
    unknown = sorted(set(listed) - set(ips))
    if unknown:
        raise ValueError(f"partition names unknown nodes: {', '.join(unknown)}")
    if len(listed) != len(set(listed)):
        raise ValueError("partition puts a node in two groups")
    rules: dict[str, list[str]] = {}
    for group in groups:
        others = [name for name in listed if name not in group]
        for name in group:
            rules[name] = [
                rule
                for other in others
                for rule in (
                    f"iptables -A INPUT -s {ips[other]} -j DROP",
                    f"iptables -A OUTPUT -d {ips[other]} -j DROP",
                )
            ]
    return rules


def isolate(node: str, nodes: Sequence[str]) -> list[list[str]]:
    """The groups of "this node alone, the rest together"."""
    return [[node], [n for n in nodes if n != node]]


def loss_rules(percent: float) -> list[str]:
    """Drop ``percent`` of packets in each direction (iptables statistic: no kernel netem needed)."""
    if not 0 < percent < 100:
        raise ValueError(f"loss percent must be between 0 and 100, got {percent}")
    p = percent / 100
    return [
        f"iptables -A INPUT -m statistic --mode random --probability {p:.4f} -j DROP",
        f"iptables -A OUTPUT -m statistic --mode random --probability {p:.4f} -j DROP",
    ]


def delay_rules(ms: int, jitter_ms: int = 0) -> list[str]:
    if ms <= 0 or jitter_ms < 0:
        raise ValueError(f"delay must be positive and jitter non-negative, got {ms} ms, {jitter_ms} ms")
    return [f"tc qdisc replace dev eth0 root netem delay {ms}ms {jitter_ms}ms"]


HEAL_RULES = ["iptables -F INPUT", "iptables -F OUTPUT", "tc qdisc del dev eth0 root 2>/dev/null || true"]

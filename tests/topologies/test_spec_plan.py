"""Mode files and the pure plan: validation, addresses, environment, HAProxy, partitions."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from topologies import spec
from topologies.constants import SERVICES
from topologies.containers import plan
from topologies.exceptions import NotFound, SpecError
from topologies.runs import Secrets


@pytest.mark.parametrize("mode", ["single", "ha", "scaled", "scaled-haproxy"])
def test_shipped_modes_load(mode: str) -> None:
    loaded = spec.load(mode)
    assert loaded.mode == mode and loaded.nodes


def test_scaled_default_split() -> None:
    scaled = spec.load("scaled-haproxy")
    counts = {s: len(scaled.peers_of(s)) for s in SERVICES}
    assert counts == {"ingress": 3, "auth": 2, "kv": 2, "queue": 2}
    assert all(len(n.services) == 1 for n in scaled.nodes)
    assert len(scaled.members) == 3 and len({m.services for m in scaled.members}) == 3


def test_a_new_split_is_a_yaml_change(tmp_path: Path) -> None:
    path = tmp_path / "wide.yaml"
    path.write_text(
        "mode: wide\ndb: etcd\nnodes:\n"
        "  - {name: a, services: [ingress, auth], db_member: true}\n"
        "  - {name: b, services: [kv], db_member: true}\n"
        "  - {name: c, services: [kv, queue], db_member: true}\n"
    )
    wide = spec.load(path)
    assert [n.name for n in wide.peers_of("kv")] == ["b", "c"]


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ({"mode": "x", "db": "etcd", "nodes": []}, "nodes: expected a non-empty list"),
        ({"mode": "x", "db": "mysql", "nodes": [{"name": "a", "services": ["all"]}]}, "db: unknown db 'mysql'"),
        ({"mode": "x", "db": "sqlite", "nodes": [{"name": "a", "services": ["kvv"]}]}, "unknown service 'kvv'"),
        ({"mode": "x", "db": "sqlite", "nodes": [{"name": "A", "services": ["all"]}]}, "nodes[0].name"),
        (
            {
                "mode": "x",
                "db": "etcd",
                "nodes": [
                    {"name": "a", "services": ["all"], "db_member": True},
                    {"name": "b", "services": ["all"], "db_member": True},
                ],
            },
            "needs 1, 3 or 5 db_member nodes, got 2",
        ),
        (
            {"mode": "x", "db": "sqlite", "nodes": [{"name": "a", "services": ["kv"]}]},
            "no node runs auth, ingress, queue",
        ),
        (
            {"mode": "x", "db": "sqlite", "nodes": [{"name": "a", "services": ["all"], "colour": 1}]},
            "colour: unknown key",
        ),
        (
            {
                "mode": "x",
                "db": "sqlite",
                "nodes": [{"name": "a", "services": ["all"]}],
                "resources": {"memory": "lots"},
            },
            "resources.memory",
        ),
    ],
)
def test_invalid_specs_name_the_key(raw: dict[str, Any], problem: str) -> None:
    with pytest.raises(SpecError) as caught:
        spec.parse(raw, source="t.yaml")
    assert problem in str(caught.value)


def test_unknown_mode_lists_the_known_ones() -> None:
    with pytest.raises(NotFound, match="expected one of ha, scaled, scaled-haproxy, single"):
        spec.load("nonesuch")


def test_addresses_are_fixed_and_distinct() -> None:
    scaled = spec.load("scaled-haproxy")
    ips = plan.addresses(scaled, "10.9.9")
    assert ips["ingress-1"] == "10.9.9.11" and ips["lb"] == "10.9.9.10"
    assert len(set(ips.values())) == len(ips) == 10


def test_every_node_gets_every_member_and_edges_get_peers() -> None:
    scaled = spec.load("scaled-haproxy")
    ips = plan.addresses(scaled, "10.9.9")
    secrets = Secrets("s" * 32, "p" * 16)
    members = {f"https://{ips[m.name]}:2379" for m in scaled.members}
    for node in scaled.nodes:
        env = plan.node_env(scaled, node, ips, secrets)
        assert set(env["RUNTIME_DB_ENDPOINTS"].split(",")) == members
        assert env["RUNTIME_SERVICES"] == ",".join(node.services)
        assert ("RUNTIME_PEERS" in env) == node.is_edge
        assert ("RUNTIME_DB_MEMBER_NAME" in env) == node.db_member
    edge = plan.node_env(scaled, scaled.nodes[0], ips, secrets)["RUNTIME_PEERS"]
    assert (
        edge
        == "auth=10.9.9.14:8443,10.9.9.15:8443;kv=10.9.9.16:8443,10.9.9.17:8443;queue=10.9.9.18:8443,10.9.9.19:8443"
    )


def test_ha_nodes_use_their_own_member_first() -> None:
    ha = spec.load("ha")
    ips = plan.addresses(ha, "10.9.9")
    for node in ha.nodes:
        assert plan.db_endpoints(ha, node, ips)[0] == f"https://{ips[node.name]}:2379"


def balancer(mode: spec.ModeSpec) -> spec.LoadBalancerSpec:
    assert mode.load_balancer is not None, f"{mode.mode} has no load balancer"
    return mode.load_balancer


def test_haproxy_checks_readyz_over_verified_tls_and_sends_the_client_address() -> None:
    scaled = spec.load("scaled-haproxy")
    ips = plan.addresses(scaled, "10.9.9")
    config = plan.haproxy_config(balancer(scaled), scaled, ips)
    assert "uri /readyz" in config and "verify required ca-file /run/modematrix/secrets/ca.pem" in config
    http_api = config.split("frontend grpc")[0]
    assert http_api.count("\n    server ") == 3 and "server ingress-2 10.9.9.12:8444 verifyhost ingress-2" in config
    assert "send-proxy-v2 check-send-proxy" in config
    secrets = Secrets("s" * 32, "pw")
    edge = plan.node_env(scaled, next(n for n in scaled.nodes if n.name == "ingress-2"), ips, secrets)
    assert edge["RUNTIME_PROXY_PORT"] == "8444" and edge["RUNTIME_TRUSTED_PROXIES"] == ips["lb"]
    assert "RUNTIME_TRUSTED_PROXIES" not in plan.node_env(
        scaled, next(n for n in scaled.nodes if n.name == "kv-1"), ips, secrets
    )


def test_haproxy_routes_grpc_calls_by_path_to_each_services_nodes_over_h2() -> None:
    scaled = spec.load("scaled-haproxy")
    ips = plan.addresses(scaled, "10.9.9")
    grpc = plan.haproxy_config(balancer(scaled), scaled, ips).split("frontend grpc")[1]
    assert "bind :8445 ssl crt /run/modematrix/secrets/lb.pem alpn h2" in grpc
    assert "use_backend kv_grpc if { path_beg /modematrix.v1.Kv/ }" in grpc
    assert "use_backend queue_grpc if { path_beg /modematrix.v1.Queue/ }" in grpc
    kv = grpc.split("\nbackend kv_grpc")[1].split("\nbackend queue_grpc")[0]
    servers = [line.split()[1] for line in kv.splitlines() if line.startswith("    server ")]
    assert servers == [n.name for n in scaled.peers_of("kv")]
    assert f"server kv-1 {ips['kv-1']}:8445 verifyhost kv-1" in kv and "alpn h2" in kv and "port 8443" in kv


def test_partition_rules_cut_only_across_groups() -> None:
    ips = {"a": "1.0.0.1", "b": "1.0.0.2", "c": "1.0.0.3"}
    rules = plan.partition_rules([["a"], ["b", "c"]], ips)
    assert all("1.0.0.1" not in r for r in rules["a"])
    assert rules["b"] == ["iptables -A INPUT -s 1.0.0.1 -j DROP", "iptables -A OUTPUT -d 1.0.0.1 -j DROP"]
    assert plan.isolate("b", ["a", "b", "c"]) == [["b"], ["a", "c"]]


@pytest.mark.parametrize(("groups", "why"), [([["a"], ["a", "b"]], "two groups"), ([["a"], ["zz"]], "unknown nodes")])
def test_bad_partitions_are_refused_before_any_rule(groups: list[list[str]], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        plan.partition_rules(groups, {"a": "1.0.0.1", "b": "1.0.0.2"})


def test_loss_and_delay_rules_validate() -> None:
    assert "--probability 0.2500" in plan.loss_rules(25)[0]
    with pytest.raises(ValueError):
        plan.loss_rules(0)
    with pytest.raises(ValueError):
        plan.delay_rules(-1)


def test_the_scaled_mode_is_fronted_by_two_envoys_and_an_xds_node() -> None:
    scaled = spec.load("scaled")
    assert scaled.load_balancer is not None and scaled.load_balancer.kind == "envoy"
    ips = plan.addresses(scaled, "10.9.9")
    assert "lb" not in ips and len(ips) == 9
    secrets = Secrets("s" * 32, "p" * 16)
    env = {n.name: plan.node_env(scaled, n, ips, secrets) for n in scaled.nodes}
    assert env["envoy-1"]["RUNTIME_XDS_SERVERS"] == f"{ips['xds-1']}:18000"
    assert env["envoy-1"]["RUNTIME_LISTEN"] == "0.0.0.0:9443" and env["envoy-1"]["RUNTIME_ENVOY_PORT"] == "8443"
    assert env["xds-1"]["RUNTIME_XDS_PORT"] == "18000"
    registering = {name for name, e in env.items() if e.get("RUNTIME_DISCOVERY") == "true"}
    assert registering == {"auth-1", "auth-2", "kv-1", "kv-2", "queue-1", "queue-2"}
    assert plan.service_sets(scaled) == "auth;envoy;kv;queue;xds"


@pytest.mark.parametrize(
    ("nodes", "kind", "problem"),
    [
        ([{"name": "a", "services": ["envoy"]}], "haproxy", "role 'envoy' needs load_balancer: {kind: envoy}"),
        ([{"name": "a", "services": ["auth", "kv", "queue", "envoy"]}], "envoy", "no node runs xds"),
        ([{"name": "a", "services": ["auth", "kv", "queue", "xds"]}], "envoy", "no node runs envoy"),
        ([{"name": "a", "services": ["all"]}], "nginx", "load balancer kind 'nginx'; expected one of haproxy, envoy"),
    ],
)
def test_envoy_roles_and_kinds_are_checked(nodes: list[dict[str, Any]], kind: str, problem: str) -> None:
    raw = {"mode": "m", "db": "etcd", "nodes": [{**nodes[0], "db_member": True}], "load_balancer": {"kind": kind}}
    with pytest.raises(SpecError, match=re.escape(problem)):
        spec.parse(raw)

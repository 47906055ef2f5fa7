"""Service files: the shipped ones load and pass their JSON Schema; a wrong one is refused with
every problem named by its key, by the loader and by the CLI (one line, exit 2); templates are
filled per member."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from topologies import service
from topologies.exceptions import SpecError, UsageError

SHIPPED = service.SERVICES_DIR / service.SCHEMA_FILE


def good() -> dict[str, Any]:
    found: dict[str, Any] = yaml.safe_load((service.SERVICES_DIR / "etcd.yaml").read_text())
    return found


def test_the_shipped_schema_is_the_models() -> None:
    assert json.loads(SHIPPED.read_text()) == service.schema(), "regenerate: modematrix services schema > " + str(
        SHIPPED
    )


@pytest.mark.parametrize("name", service.available())
def test_every_shipped_service_names_the_schema_passes_it_and_loads(name: str) -> None:
    path = service.SERVICES_DIR / f"{name}.yaml"
    assert path.read_text().splitlines()[0] == f"# yaml-language-server: $schema={service.SCHEMA_FILE}"
    jsonschema.validate(yaml.safe_load(path.read_text()), service.schema())
    assert service.load(name).name == name


def test_a_members_templates_are_filled_with_its_name_address_and_peers() -> None:
    etcd = service.load("etcd")
    members = [("etcd-1", "10.0.0.11"), ("etcd-2", "10.0.0.12"), ("etcd-3", "10.0.0.13")]
    context = etcd.context(name="etcd-2", ip="10.0.0.12", index=1, run_id="r-1", members=members)
    command = etcd.member_command(context)
    assert "--name=etcd-2" in command
    assert "--advertise-client-urls=http://10.0.0.12:2379" in command
    assert (
        "--initial-cluster=etcd-1=http://10.0.0.11:2380,etcd-2=http://10.0.0.12:2380,etcd-3=http://10.0.0.13:2380"
        in command
    )
    assert "--initial-cluster-token=r-1" in command


def test_an_init_command_is_filled_as_the_first_members_with_every_peer() -> None:
    raw = {**good(), "roles": {**good()["roles"], "init": {"command": ["etcdctl", "--endpoints={peers}", "{name}"]}}}
    etcd = service.parse(raw, where=service.SERVICES_DIR)
    members = [("etcd-1", "10.0.0.11"), ("etcd-2", "10.0.0.12")]
    context = etcd.context(name="etcd-1", ip="10.0.0.11", index=0, run_id="r-1", members=members)
    assert etcd.init_command(context) == (
        "etcdctl",
        "--endpoints=etcd-1=http://10.0.0.11:2380,etcd-2=http://10.0.0.12:2380",
        "etcd-1",
    )


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"image": {}}, "image: expected exactly one of tag and build"),
        ({"image": {"tag": "a:1", "build": "."}}, "expected exactly one of tag and build"),
        ({"image": {"build": "nowhere"}}, "image.build: no Dockerfile in"),
        ({"client_port": "http"}, "client_port: 'http' is not a port; expected one of client, peer"),
        ({"ports": {"client": 2379, "peer": 70000}}, "ports.peer: expected a port (1-65535), got 70000"),
        ({"sizes": [2]}, "sizes[0]: Input should be 1, 3 or 5"),
        ({"roles": {"init": {"command": ["true"]}}}, "roles.member: required"),
        ({"roles": {"member": {"command": ["etcd", "--name={nmae}"]}}}, "unknown placeholder {nmae}"),
        ({"roles": {"member": {"command": ["--x={ports[http]}"]}}}, "ports: no port 'http', which a template names"),
        ({"roles": {"member": {"command": ["--x={"]}}}, "roles.member.command[0]: not a template"),
        ({"ready": {"tcp": "client", "http": "client"}}, "expected exactly one of tcp, http and exec"),
        ({"ready": {"tcp": "nope"}}, "ready: 'nope' is not a port"),
        ({"imagee": {"tag": "x"}}, "imagee: unknown key"),
        ({"workload": None}, "workload: Input should be a valid string"),
        ({"memory": "lots"}, "memory: "),
    ],
)
def test_a_wrong_service_file_is_refused_naming_the_key(change: dict[str, Any], says: str) -> None:
    with pytest.raises(SpecError) as refused:
        service.parse({**good(), **change}, source="mine.yaml", where=service.SERVICES_DIR)
    assert str(refused.value).startswith("mine.yaml: ")
    assert says in str(refused.value)


def test_every_problem_is_named_at_once() -> None:
    with pytest.raises(SpecError) as refused:
        service.parse({**good(), "client_port": "x", "ready": {"tcp": "y"}}, where=service.SERVICES_DIR)
    assert len(refused.value.problems) == 2


def test_the_cli_checks_a_service_file_with_one_line_and_exit_2(tmp_path: Path) -> None:
    wrong = tmp_path / "mine.yaml"
    wrong.write_text(yaml.safe_dump({**good(), "image": {"tag": "mine:1"}, "client_port": "http"}))
    done = subprocess.run(
        [sys.executable, "-m", "topologies.cli", "services", "check", str(wrong)], capture_output=True, text=True
    )
    assert done.returncode == 2, done
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "client_port: 'http' is not a port" in done.stderr
    right = tmp_path / "right.yaml"
    right.write_text(yaml.safe_dump({**good(), "image": {"tag": "mine:1"}}))
    done = subprocess.run(
        [sys.executable, "-m", "topologies.cli", "services", "check", str(right), "--json"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done
    assert json.loads(done.stdout)["service"] == "etcd"


def test_the_matrix_refuses_a_wrong_service_file_before_starting_anything(tmp_path: Path) -> None:
    wrong = tmp_path / "mine.yaml"
    wrong.write_text("service: Bad Name\n")
    done = subprocess.run(
        [sys.executable, "-m", "topologies.cli", "matrix", "--service", str(wrong), "--results", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2, done
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "mine.yaml: service: expected a lower-case name" in done.stderr
    assert not list(tmp_path.glob("2*")), "no results folder for a matrix that did not start"


def test_the_runtimes_own_file_is_what_its_nodes_are_started_with(tmp_path: Path) -> None:
    from topologies import constants
    from topologies.containers.start import Place, node_launch
    from topologies.engines.fake import FakeEngine
    from topologies.kubernetes.manifests import manifests, probe_manifest
    from topologies.pki import RunPki
    from topologies.runs import Secrets
    from topologies.spec import NodeSpec, load

    runtime = service.load("runtime")
    assert runtime.ports == {
        "api": constants.API_PORT,
        "grpc": constants.GRPC_PORT,
        "db-client": constants.DB_CLIENT_PORT,
        "db-peer": constants.DB_PEER_PORT,
    }
    assert (runtime.data_dir, runtime.ready.path, runtime.ready.tls) == (constants.DATA_DIR, "/readyz", True)
    place = Place(FakeEngine(), "r-1", "ha", "10.0.0", "modematrix/runtime:t", "320m")
    launch = node_launch(place, NodeSpec("node-1", ("kv",)), "10.0.0.11", {}, {})
    assert launch.command == runtime.command == ("serve",)
    assert (launch.volume_path, launch.publish) == (runtime.data_dir, (runtime.ports["api"], runtime.ports["grpc"]))
    made = manifests(
        load("scaled"), namespace="ns", image="i", secrets=Secrets("s" * 32, "pw"), pki=RunPki.create(tmp_path)
    )
    kv = next(m for m in made if m["kind"] == "Deployment" and m["metadata"]["name"] == "kv")
    container = kv["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == list(runtime.command)  # and on Kubernetes
    assert container["readinessProbe"]["httpGet"] == probe_manifest(runtime.ready, runtime.ports)["httpGet"]


def test_the_runtimes_nodes_are_members_launched_as_any_services_with_its_plan_on_top() -> None:
    """One launch for every member: a runtime node is the runtime file's member, plus the
    runtime's settings, secret files and ports; a service's member keeps its file's own."""
    from topologies.containers.service import member_launch
    from topologies.containers.start import Place, node_launch
    from topologies.engines.fake import FakeEngine
    from topologies.spec import NodeSpec

    runtime = service.load("runtime")
    place = Place(FakeEngine(), "r-1", "ha", "10.0.0", "modematrix/runtime:t", "320m", cpuset="0")
    node = NodeSpec("node-1", ("kv",), db_member=True)
    launch = node_launch(place, node, "10.0.0.11", {"RUNTIME_SERVICES": "kv"}, {"/run/secrets/x": b"x"})
    member = member_launch(runtime, "r-1", "ha", "node-1", 0, {"node-1": "10.0.0.11"}, "modematrix/runtime:t")
    same = ("name", "image", "command", "network", "hostname", "ip", "volume", "volume_path")
    assert [getattr(launch, f) for f in same] == [getattr(member, f) for f in same]
    assert launch.labels == {**member.labels, "modematrix.services": "kv", "modematrix.db_member": "true"}
    assert launch.labels["modematrix.service"] == "runtime" and launch.healthcheck and not member.healthcheck
    assert (launch.env, launch.files, launch.cpuset) == ({"RUNTIME_SERVICES": "kv"}, {"/run/secrets/x": b"x"}, "0")
    assert launch.publish == (runtime.ports["api"], runtime.ports["grpc"])
    etcd = service.load("etcd")
    ips = {"etcd-1": "10.0.0.11", "etcd-2": "10.0.0.12"}
    first = member_launch(etcd, "r-2", "etcd-2", "etcd-1", 0, ips, "svc")
    assert first.publish == (2379, 2380) and first.volume_path == etcd.data_dir and not first.healthcheck
    assert "--initial-cluster=etcd-1=http://10.0.0.11:2380,etcd-2=http://10.0.0.12:2380" in first.command


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("1", "--members: '1': service redis-sentinel runs as 3, 5 members"),
        ("3,x", "--members: 'x': service redis-sentinel runs as 3, 5 members"),
        ("3,-5", "--members: '-5'"),
    ],
)
def test_a_size_the_service_does_not_run_as_is_a_usage_error(given: str, says: str) -> None:
    spec = service.load("redis-sentinel")
    with pytest.raises(UsageError, match=re.escape(says)):
        spec.sizes_from(given, "--members")
    with pytest.raises(UsageError, match=re.escape("--members: service redis-sentinel runs as 3, 5 members, not 1")):
        spec.check_size(1, "--members")


def test_sizes_it_runs_as_are_taken_and_nothing_given_is_none() -> None:
    spec = service.load("etcd")
    assert spec.sizes_from(" 5, 1 ", "--members") == (5, 1)
    assert spec.sizes_from("", "--members") == ()
    assert (spec.check_size(5), spec.default_size(), service.load("redis-sentinel").default_size()) == (5, 3, 3)

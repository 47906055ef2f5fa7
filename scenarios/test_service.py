"""Any service of a service file, checked as the runtime is: its members started from its own
image, its register driven through the workload its file names, broken by the container
faults that need nothing of the runtime, and judged by the same checkers (linearizable-kv,
no-lost-writes, availability) into the same failover report.

    pytest scenarios/test_service.py --service topologies/services/etcd.yaml
    pytest scenarios/test_service.py --service my/service.yaml --members 3 --cycles 1
    pytest scenarios/test_service.py --service topologies/services/etcd.yaml --members 3 --on kubernetes
    modematrix up --service etcd --on kubernetes --kubeconfig ~/.kube/config --image REG/etcd:T
    pytest scenarios/test_service.py --run RUN          # that run, on your cluster; left running
    modematrix matrix --service topologies/services/etcd.yaml

Without ``--service`` (or ``--run`` of a service's run) every test here skips.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace

import pytest

from scenarios import runner
from scenarios.catalogue import FOR_SERVICES, FOR_SERVICES_K8S, for_service
from scenarios.checkers import CHECKS
from scenarios.history import FAIL, OK
from scenarios.runner import Result
from scenarios.workload import Invocation, Register, workload
from topologies import ServiceRun
from topologies.kubernetes.service import ServiceKubeRun
from topologies.pytest_plugin import given_run

Served = ServiceRun | ServiceKubeRun


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The failover test's scenarios: the Docker faults, or with ``--on kubernetes`` the Kubernetes ones."""
    if "name" in metafunc.fixturenames:
        given = given_run(metafunc.config)  # --run: where that run is
        on_k8s = metafunc.config.getoption("modematrix_on") == "kubernetes" or isinstance(given, ServiceKubeRun)
        metafunc.parametrize("name", FOR_SERVICES_K8S if on_k8s else FOR_SERVICES)


@pytest.fixture(scope="session")
def register_of(service_run: Served) -> Callable[[int], Register]:
    """Clients of the run's register, the first on member ``index``; a service file that names
    an unknown workload or check is refused here, in one line."""
    unknown = [c for c in service_run.service.weaknesses or {} if c not in CHECKS]
    if unknown:
        pytest.fail(f"known_weaknesses: no check {unknown[0]!r}; expected some of {', '.join(CHECKS)}", pytrace=False)
    try:
        register = workload(service_run.service.workload)
    except ValueError as exc:
        pytest.fail(f"{service_run.service.name}: {exc}", pytrace=False)
    return lambda index: register.client(service_run, index=index, timeout=5.0)


def test_every_member_reads_what_another_wrote(service_run: Served, register_of: Callable[[int], Register]) -> None:
    members = len(service_run.spec.nodes)
    session = uuid.uuid4().hex[:8]  # a run given with --run keeps what an earlier session wrote
    for index in range(members):
        key = f"functional-{service_run.run_id}-{session}-{index}"
        with register_of(index) as writer, register_of((index + 1) % members) as reader:
            assert writer.invoke(Invocation("write", key, {"value": "a"})).outcome == OK
            read = reader.invoke(Invocation("read", key))
            assert (read.outcome, read.result.get("value")) == (OK, "a"), read
            revision = read.result["revision"]
            assert writer.invoke(Invocation("cas", key, {"value": "b", "expected": revision})).outcome == OK
            stale = reader.invoke(Invocation("cas", key, {"value": "c", "expected": revision}))
            assert stale.outcome == FAIL, stale  # the revision moved: refused, nothing applied
            assert reader.invoke(Invocation("read", key)).result["value"] == "b"
            fresh = writer.invoke(Invocation("cas", key + "-new", {"value": "x", "expected": 0}))
            assert fresh.outcome == OK, fresh  # expected 0: only if absent
            again = reader.invoke(Invocation("cas", key + "-new", {"value": "y", "expected": 0}))
            assert again.outcome == FAIL, again
            assert writer.invoke(Invocation("delete", key)).result.get("deleted") is True
            assert reader.invoke(Invocation("read", key)).result.get("value") is None


def test_exactly_one_member_leads(service_run: Served) -> None:
    if not service_run.has_leader:
        pytest.skip(f"{service_run.service.name}'s file has no leader probe")
    from topologies.containers.node import probe

    leader = service_run.service.leader
    assert leader is not None
    if isinstance(service_run, ServiceKubeRun):
        pods = service_run.ready_pods(service_run.service.name)
        assert len(pods) == len(service_run.spec.nodes), pods
        saying = [pod for pod in pods if service_run.exec(pod, list(leader.exec))[0] == 0]
        assert saying == [service_run.db_leader()]
    else:
        saying = [n.name for n in service_run.nodes if probe(n, leader, service_run.service.ports)[0]]
        assert saying == [service_run.db_leader().name]


@pytest.mark.failover
def test_failover_keeps_every_promise(
    service_run: Served,
    name: str,
    failover_results: list[Result],
    cycles: int,
    register_of: Callable[[int], Register],
) -> None:
    chosen = {s.name: s for s in for_service(service_run)}
    if name not in chosen:
        where = "on Kubernetes" if isinstance(service_run, ServiceKubeRun) else "on Docker"
        pytest.skip(f"{name}: not a fault of a {len(service_run.spec.nodes)}-member service {where}")
    scenario = chosen[name]
    result = runner.run(service_run, replace(scenario, cycles=cycles) if cycles else scenario)
    if result.skipped:
        pytest.skip(result.skipped)
    failover_results.append(result)
    assert not result.traffic_errors, result.traffic_errors
    known = service_run.service.weaknesses or {}
    unexpected = [v for v in result.verdicts if not v.passed and v.check not in known]
    found = [v for v in result.verdicts if not v.passed and v.check in known]
    where = f"{name} on {service_run.mode} after {result.faults}"
    assert not unexpected, f"{where}: " + "; ".join(f"{v.check}: {v.result} ({v.detail})" for v in unexpected)
    if found:  # what its own documentation says it does: shown as found, in the report too
        pytest.xfail(
            f"{where}, a known weakness: " + "; ".join(f"{v.check} ({known[v.check]}): {v.detail}" for v in found)
        )

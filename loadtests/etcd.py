"""Load on etcd alone (``topologies/services/etcd.yaml``), over etcd's own gRPC KV API: the
locustfile its service file names. Without ``--endpoints`` or ``--run`` it starts the
service's members itself (``--members``, default 3) and removes them at the end; a run given
by ``--run`` (``modematrix up --service etcd``, or the matrix's shared one on Kubernetes) is
left running.

    locust -f loadtests/etcd.py --headless -u 10 -r 10 -t 45s
    locust -f loadtests/etcd.py --headless -u 10 -r 10 -t 45s --members 5 --fault kill-leader
    locust -f loadtests/etcd.py --headless -u 10 -r 10 -t 45s --on kubernetes --fault kill-leader   (its pod deleted)
    locust -f loadtests/etcd.py --headless -u 10 -t 30s --endpoints 127.0.0.1:2379,127.0.0.1:22379
    locust -f loadtests/etcd.py --headless -u 10 -t 30s --run r-1a2b3c4d --fault kill-leader

Each user keeps one channel to one member (users spread over them) and moves to the next
after a call that failed, as etcd's clients do. Put, linearizable Range and a
compare-and-set transaction; the exit code is the SLOs' verdict (:mod:`loadtests.slo`).
"""

from __future__ import annotations

import itertools
import logging
import random
import sys
import time
from typing import Any

import gevent
import grpc
from aetcd import rpc
from locust import User, between, events, task
from locust.env import Environment

from loadtests import slo
from loadtests.grpc_user import report
from topologies import (
    ContainerRun,
    ServiceRun,
    TopologyError,
    UsageError,
    engines,
    faults,
    service,
    start_service,
    targets,
)
from topologies.containers import victims
from topologies.containers.faults import Kill, Partition, Pause
from topologies.kubernetes import faults as kube
from topologies.kubernetes.service import ServiceKubeRun, start_service_k8s

log = logging.getLogger("modematrix.load")
DEFAULTS = slo.Slo(fail_ratio=0.01, p95_ms=200, p99_ms=1000, min_rps=50)
FAULTS = ("kill-leader", "pause-leader", "partition-leader")
PREFIX = b"/modematrix-load/"
TIMEOUT = 3.0


class Cluster:
    """The members' client addresses, and the run they are of (None: ``--endpoints``),
    removed at the end if this load run started it."""

    endpoints: list[str] = []
    run: ServiceRun | ServiceKubeRun | None = None
    owned = False
    spread = itertools.count()


def _options(parser: Any) -> None:
    group = parser.add_argument_group("modematrix etcd")
    group.add_argument("--service", default="etcd", help="the service file (default: the shipped etcd.yaml)")
    group.add_argument("--members", type=int, default=3, help="members to start (1, 3 or 5; default 3)")
    group.add_argument(
        "--on",
        default="containers",
        choices=["containers", "kubernetes"],
        help="where to start them (default containers)",
    )
    group.add_argument("--endpoints", default="", help="HOST:PORT,... of a running etcd instead (plain gRPC)")
    group.add_argument("--run", default="", help="a running run of the service instead (left running)")
    group.add_argument("--fault", default="", choices=["", *FAULTS], help="break the leader during the run")
    group.add_argument("--fault-at", type=float, default=15.0, help="seconds after the start")
    group.add_argument("--fault-for", type=float, default=8.0, help="seconds before healing")
    group.add_argument("--slo-fail-ratio", type=float, default=DEFAULTS.fail_ratio)
    group.add_argument("--slo-p95-ms", type=float, default=DEFAULTS.p95_ms)
    group.add_argument("--slo-p99-ms", type=float, default=DEFAULTS.p99_ms)
    group.add_argument("--slo-min-rps", type=float, default=DEFAULTS.min_rps)
    parser.set_defaults(csv_prefix="results/load/etcd", html_file="results/load/etcd.html")


def _begin(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    if options is None:
        return
    given = [e.strip() for e in options.endpoints.split(",") if e.strip()]
    if given:
        Cluster.endpoints = given
    else:
        if options.run:
            try:
                Cluster.run = _attached(options.run)
            except TopologyError as exc:  # a wrong id: one line, exit 2, as the CLI says it
                log.error("%s", exc)
                sys.exit(2)
        else:
            log.info("no --endpoints: starting %s with %d members on %s", options.service, options.members, options.on)
            if options.on == "kubernetes":
                Cluster.run = start_service_k8s(service.load(options.service), options.members, engine=engines.get())
            else:
                Cluster.run = start_service(options.service, options.members)
            Cluster.owned = True
        Cluster.endpoints = [e.split("://", 1)[1] for e in Cluster.run.endpoints]
    environment.host = ",".join(Cluster.endpoints)
    environment.events.quitting.add_listener(_finish)
    if options.fault and environment.runner is not None:
        gevent.spawn(_inject, options.fault, options.fault_at, options.fault_for)


def _attached(run_id: str) -> ServiceRun | ServiceKubeRun:
    """``--run``'s run, which must be a service's (the runtime's has no etcd API to load)."""
    run = targets.attach(run_id)
    if not isinstance(run, (ServiceRun, ServiceKubeRun)):
        raise UsageError(f"--run {run_id}: a run of the runtime's {run.mode} mode, not of a service (etcd)")
    return run


def _inject(name: str, at: float, duration: float) -> None:
    run = Cluster.run
    if run is None:
        log.error("--fault needs the members this load run started (no --endpoints)")
        return
    gevent.sleep(at)
    if isinstance(run, ServiceKubeRun):  # its leader's pod deleted; the StatefulSet makes it again
        with faults.injected(run, kube.DeletePod(run.service.name, run.db_leader()), mark=_said):
            gevent.sleep(duration)
        return
    node = victims.leader(run)
    choices: dict[str, faults.Fault[ContainerRun]] = {
        "kill": Kill(node),
        "pause": Pause(node),
        "partition": Partition.isolating(node, run),
    }
    fault = choices[name.split("-")[0]]
    with faults.injected(run, fault, mark=_said):
        gevent.sleep(duration)


def _said(event: str) -> None:
    log.info("%s", event)


def _finish(environment: Environment, **_: Any) -> None:
    try:
        options = environment.parsed_options
        missed = slo.breaches(environment.stats, options) if environment.stats.total.num_requests else ["no request"]
        for breach in missed:
            log.error(breach)
        if not missed:
            log.info("all SLOs met")
        environment.process_exit_code = 1 if missed else 0
    finally:
        if Cluster.run is not None and Cluster.owned:
            log.info("removing the etcd run started for this load run")
            Cluster.run.stop()


events.init_command_line_parser.add_listener(_options)
events.init.add_listener(_begin)


class EtcdUser(User):
    wait_time = between(0.0, 0.01)

    def on_start(self) -> None:
        self.at = next(Cluster.spread)
        self.channel = grpc.insecure_channel(Cluster.endpoints[self.at % len(Cluster.endpoints)])
        self.kv = rpc.KVStub(self.channel)
        self.keys = [PREFIX + f"k{i}".encode() for i in range(16)]

    def on_stop(self) -> None:
        self.channel.close()

    def _call(self, name: str, call: Any) -> Any:
        started = time.perf_counter()
        try:
            answer = call()
        except grpc.RpcError as exc:
            report(self.environment, name, started, exc)
            self.channel.close()  # the next member, as etcd's clients move on
            self.at += 1
            self.channel = grpc.insecure_channel(Cluster.endpoints[self.at % len(Cluster.endpoints)])
            self.kv = rpc.KVStub(self.channel)
            return None
        report(self.environment, name, started, None)
        return answer

    @task(3)
    def get(self) -> None:
        key = random.choice(self.keys)
        self._call("Range", lambda: self.kv.Range(rpc.RangeRequest(key=key), timeout=TIMEOUT))

    @task(2)
    def put(self) -> None:
        key, value = random.choice(self.keys), str(time.time()).encode()
        self._call("Put", lambda: self.kv.Put(rpc.PutRequest(key=key, value=value), timeout=TIMEOUT))

    @task(1)
    def cas(self) -> None:
        key = random.choice(self.keys)
        found = self._call("Range", lambda: self.kv.Range(rpc.RangeRequest(key=key), timeout=TIMEOUT))
        if found is None:
            return
        revision = found.kvs[0].mod_revision if found.kvs else 0
        same = rpc.Compare(
            key=key, target=rpc.Compare.CompareTarget.MOD, result=rpc.Compare.CompareResult.EQUAL, mod_revision=revision
        )
        write = rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=b"cas"))
        self._call("Txn (cas)", lambda: self.kv.Txn(rpc.TxnRequest(compare=[same], success=[write]), timeout=TIMEOUT))

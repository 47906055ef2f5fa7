"""Every locust event hook of a modematrix run, in one place.

A per-mode locustfile calls :func:`register` once with its mode and SLO defaults. The run's
state (target, timeline, CPU samples) lives in one :class:`LoadRun` made when locust starts,
whose methods are the listeners; nothing is kept at module level.
"""

from __future__ import annotations

import logging
import random
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, TypeVar

import gevent
from locust import events
from locust.env import Environment

from loadtests import slo, target, users
from loadtests.timeline import Timeline, recovery
from topologies import ContainerRun, KubeRun, Run, faults
from topologies.containers import victims
from topologies.containers.faults import Kill, Partition, Pause
from topologies.kubernetes import faults as kube

log = logging.getLogger("modematrix.load")
R = TypeVar("R", bound=Run)
CPU_LIMIT = 90.0
FAULTS = {  # --fault: which node (containers), and what happens to it
    "kill-leader": ("leader", "kill"),
    "kill-node": ("other", "kill"),
    "pause-node": ("other", "pause"),
    "partition-leader": ("leader", "partition"),
}


def register(mode: str, defaults: slo.Slo) -> None:
    """Add the modematrix options (with ``mode``'s SLO defaults) and start a LoadRun with locust."""

    def options(parser: Any) -> None:
        group = parser.add_argument_group("modematrix")
        group.add_argument("--cluster-json", default="", help="output of `modematrix up --json` for a cluster")
        group.add_argument("--ca-file", default="", help="cluster CA (with --host)")
        group.add_argument("--admin-password", default="", help="admin password (with --host)")
        group.add_argument("--grpc-target", default="", help="gRPC front door(s), HOST:PORT,... (with --host)")
        group.add_argument("--slo-fail-ratio", type=float, default=defaults.fail_ratio, help="max failed/total")
        group.add_argument("--slo-p95-ms", type=float, default=defaults.p95_ms)
        group.add_argument("--slo-p99-ms", type=float, default=defaults.p99_ms)
        group.add_argument("--slo-min-rps", type=float, default=defaults.min_rps)
        group.add_argument("--fault", default="", choices=["", *FAULTS], help="inject a fault during the run")
        group.add_argument("--fault-at", type=float, default=20.0, help="seconds after the start")
        group.add_argument("--fault-for", type=float, default=10.0, help="seconds before healing")
        parser.set_defaults(csv_prefix=f"results/load/{mode}", html_file=f"results/load/{mode}.html")

    def start(environment: Environment, **_: Any) -> None:
        if environment.parsed_options is not None:
            LoadRun(mode, environment).begin()

    events.init_command_line_parser.add_listener(options)
    events.init.add_listener(start)


def on_containers(name: str, run: ContainerRun) -> faults.Fault[ContainerRun]:
    which, action = FAULTS[name]
    node = victims.choose(run, which, random.Random())
    choices: dict[str, faults.Fault[ContainerRun]] = {
        "kill": Kill(node),
        "pause": Pause(node),
        "partition": Partition.isolating(node, run),
    }
    return choices[action]


def on_kubernetes(name: str, run: KubeRun) -> faults.Fault[KubeRun] | None:
    """kill-node and pause-node on a cluster built here: one worker's node container."""
    actions = {"kill-node": "kill", "pause-node": "pause"}
    if name not in actions:
        return None
    return kube.NodeFault(kube.any_worker(run, random.Random()), actions[name])


@dataclass
class LoadRun:
    mode: str
    environment: Environment
    timeline: Timeline = field(default_factory=Timeline)
    cpu: list[float] = field(default_factory=list)
    target: target.Target | None = None

    def begin(self) -> None:
        options = self.environment.parsed_options
        self.target = target.resolve(self.mode, options)
        target.publish(self.mode, self.target, options)
        self.environment.host = self.target.endpoints[0]
        self.environment.events.request.add_listener(self.count)
        self.environment.events.request.add_listener(users.fail_over)
        self.environment.events.quitting.add_listener(self.finish)
        if self.environment.runner is not None:
            gevent.spawn(self.sample_cpu)
            if options is not None and options.fault:
                gevent.spawn(self.inject, options.fault, options.fault_at, options.fault_for)

    def count(self, exception: BaseException | None = None, **_: Any) -> None:
        self.timeline.count(time.time(), exception is not None)

    def sample_cpu(self) -> None:
        runner = self.environment.runner
        while runner is not None:
            gevent.sleep(1.0)
            if runner.user_count:
                self.cpu.append(runner.current_cpu_usage)

    def inject(self, name: str, at: float, duration: float) -> None:
        """The fault cycle of topologies, timed by the load run."""
        run = self.target.run if self.target else None
        if run is None:
            log.error("--fault needs a run this load run started, or --cluster-json of one")
            return
        gevent.sleep(at)
        if isinstance(run, KubeRun):
            fault = on_kubernetes(name, run)
            if fault is None:
                log.error("--fault %s: the Kubernetes modes have kill-node and pause-node (a worker)", name)
                return
            self._hold(run, fault, duration)
        elif isinstance(run, ContainerRun):
            self._hold(run, on_containers(name, run), duration)

    def _hold(self, run: R, fault: faults.Fault[R], duration: float) -> None:
        with faults.injected(run, fault, mark=lambda event: self.timeline.mark(time.time(), event)):
            gevent.sleep(duration)

    def finish(self, environment: Environment, **_: Any) -> None:
        try:
            self.report()
        finally:
            if self.target is not None and self.target.owned and self.target.run is not None:
                log.info("removing the %s run started for this load run", self.mode)
                self.target.run.stop()

    def report(self) -> None:
        environment, options = self.environment, self.environment.parsed_options
        if self.cpu:
            peak, mean = max(self.cpu), statistics.mean(self.cpu)
            log.info("locust CPU: mean %.0f%%, peak %.0f%%", mean, peak)
            if peak > CPU_LIMIT:
                log.warning("locust itself used over %.0f%% CPU: the load generator may be the bottleneck", CPU_LIMIT)
        for at, event in self.timeline.events:
            log.info("%s at +%.1f s", event, at - environment.stats.total.start_time)
        applied = [at for at, event in self.timeline.events if event.startswith("apply ")]
        if applied:
            peak_rate, back = recovery(self.timeline.per_second, applied[0])
            back_text = f"{back:.0f} s" if back is not None else "never within the run"
            log.info("failover: error rate peaked at %.0f%%; back under 1%% after %s", peak_rate * 100, back_text)
        environment.process_exit_code = self.verdict(options)

    def verdict(self, options: Any) -> int:
        """The SLOs decide, not locust's default "any failed request exits 1": a failover run
        with a short error spike inside the failure budget is a pass."""
        if options is None or self.environment.stats.total.num_requests == 0:
            log.error("no request was made")
            return 1
        missed = slo.breaches(self.environment.stats, options)
        for breach in missed:
            log.error(breach)
        crashed = bool(self.environment.runner and self.environment.runner.exceptions)
        if crashed:
            log.error("user code raised exceptions: see the exceptions report")
        if not missed:
            log.info("all SLOs met")
        return 1 if missed or crashed else 0

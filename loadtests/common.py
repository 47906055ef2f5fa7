"""Shared by every locustfile: the target, the user, the SLO gate, the failover timeline.

A per-mode locustfile only calls :func:`configure` with its mode and SLO defaults::

    locust -f loadtests/scaled.py --headless -u 20 -r 10 -t 30s

Without ``--host`` the mode is started through ``topologies`` and removed when locust quits
(Ctrl-C included; if locust is killed, the reaper removes it). With ``--host`` (plus
``--cluster-json`` from ``modematrix up --json``, or ``--ca-file`` and ``--admin-password``)
an existing cluster is used.
"""

from __future__ import annotations

import sys

# Locust runs under gevent's monkey-patching, which removes select.epoll; trio (pulled in by
# some environments) fails to import then, and httpcore (under httpx, which topologies use)
# imports trio if it can. httpcore treats an ImportError as "trio absent", so say so up front.
if "trio" not in sys.modules:
    sys.modules["trio"] = None  # type: ignore[assignment]

import json
import logging
import random
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
import gevent.ssl
from locust import FastHttpUser, between, events, task
from locust.env import Environment

log = logging.getLogger("modematrix.load")
CPU_LIMIT = 90.0


@dataclass(frozen=True)
class Slo:
    fail_ratio: float = 0.01
    p95_ms: float = 500.0
    p99_ms: float = 1500.0
    min_rps: float = 10.0


@dataclass
class Target:
    """Where the users go, and what the run observed."""

    mode: str = "single"
    slo: Slo = field(default_factory=Slo)
    endpoints: list[str] = field(default_factory=list)
    ca_file: str = ""
    username: str = "admin"
    password: str = ""
    cluster: Any = None  # a topologies.Cluster when this run started it (or attached to it)
    owned: bool = False
    per_second: dict[int, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    cpu: list[float] = field(default_factory=list)
    fault_times: list[tuple[float, str]] = field(default_factory=list)


TARGET = Target()


def configure(mode: str, slo: Slo) -> None:
    """Called once by a per-mode locustfile at import."""
    TARGET.mode, TARGET.slo = mode, slo


# -- the user -----------------------------------------------------------------------------


def _ssl_context(cafile: str | None = None, **_: Any) -> gevent.ssl.SSLContext:
    return gevent.ssl.create_default_context(cafile=TARGET.ca_file)


class RuntimeUser(FastHttpUser):
    """Logs in once, then a weighted mix: kv GET most, PUT, CAS, list; queue enqueue/claim/ack."""

    wait_time = between(0.005, 0.05)
    insecure = False
    ssl_context_factory = staticmethod(_ssl_context)
    keys = 200
    _count = 0

    def __init__(self, environment: Environment) -> None:
        RuntimeUser._count += 1
        self._endpoint = RuntimeUser._count
        if TARGET.endpoints:  # HA: spread users over every node, as its clients would
            self.host = TARGET.endpoints[self._endpoint % len(TARGET.endpoints)]
        super().__init__(environment)
        self.prefix = f"load-{TARGET.mode}"
        self._send = self.client.request
        self.client.request = self._request  # type: ignore[method-assign]

    def _request(self, method: str, url: str, **kwargs: Any) -> Any:
        """Like an HA client that knows every address: after a connection failure, the next
        request goes to the next endpoint (the failed one is still counted as failed)."""
        reply = self._send(method, url, **kwargs)
        if isinstance(getattr(reply, "error", None), OSError) and len(TARGET.endpoints) > 1:
            self._endpoint += 1
            self.client.base_url = TARGET.endpoints[self._endpoint % len(TARGET.endpoints)]
        return reply

    def on_start(self) -> None:
        self.login()

    def login(self) -> None:
        with self.client.post(
            "/v1/auth/login", json={"username": TARGET.username, "password": TARGET.password}, catch_response=True
        ) as reply:
            if reply.status_code != 200:
                reply.failure(f"login: HTTP {reply.status_code}")
                return
            self.client.auth_header = f"Bearer {reply.json()['token']}"

    def key(self) -> str:
        return f"{self.prefix}/{random.randrange(self.keys)}"

    @task(50)
    def kv_get(self) -> None:
        with self.client.get(f"/v1/kv/{self.key()}", name="/v1/kv/[key] GET", catch_response=True) as reply:
            if reply.status_code in (200, 404):
                reply.success()

    @task(15)
    def kv_put(self) -> None:
        self.client.put(f"/v1/kv/{self.key()}", data=random.randbytes(64), name="/v1/kv/[key] PUT")

    @task(8)
    def kv_cas(self) -> None:
        key = self.key()
        with self.client.get(f"/v1/kv/{key}", name="/v1/kv/[key] GET (cas)", catch_response=True) as read:
            if read.status_code == 404:
                read.success()
                headers = {"If-None-Match": "*"}
            elif read.status_code == 200:
                headers = {"If-Match": read.headers["etag"]}
            else:
                return
        with self.client.put(
            f"/v1/kv/{key}", data=b"cas", headers=headers, name="/v1/kv/[key] PUT If-Match", catch_response=True
        ) as reply:
            if reply.status_code in (200, 412):  # losing a CAS race is a correct answer
                reply.success()

    @task(5)
    def kv_list(self) -> None:
        self.client.get(f"/v1/kv?prefix={self.prefix}/1&limit=20", name="/v1/kv?prefix")

    @task(6)
    def enqueue(self) -> None:
        self.client.post(f"/v1/queue/{self.prefix}/jobs", json={"t": time.time()}, name="/v1/queue/[q]/jobs")

    @task(6)
    def claim_and_ack(self) -> None:
        with self.client.post(
            f"/v1/queue/{self.prefix}/claim?lease=30", name="/v1/queue/[q]/claim", catch_response=True
        ) as claim:
            if claim.status_code == 204:
                claim.success()
                return
            if claim.status_code != 200:
                return
            job = claim.json()
        self.client.post(
            f"/v1/queue/{self.prefix}/jobs/{job['id']}/ack",
            json={"lease_id": job["lease_id"]},
            name="/v1/queue/[q]/jobs/[id]/ack",
        )


# -- command line ---------------------------------------------------------------------------


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    mode, slo = TARGET.mode, TARGET.slo
    group = parser.add_argument_group("modematrix")
    group.add_argument("--cluster-json", default="", help="output of `modematrix up --json` for an existing cluster")
    group.add_argument("--ca-file", default="", help="cluster CA (with --host)")
    group.add_argument("--admin-password", default="", help="admin password (with --host)")
    group.add_argument("--slo-fail-ratio", type=float, default=slo.fail_ratio, help="max failed/total requests")
    group.add_argument("--slo-p95-ms", type=float, default=slo.p95_ms)
    group.add_argument("--slo-p99-ms", type=float, default=slo.p99_ms)
    group.add_argument("--slo-min-rps", type=float, default=slo.min_rps)
    group.add_argument("--fault", default="", choices=["", *FAULTS], help="inject a fault during the run")
    group.add_argument("--fault-at", type=float, default=20.0, help="seconds after the start")
    group.add_argument("--fault-for", type=float, default=10.0, help="seconds before healing")
    parser.set_defaults(csv_prefix=f"results/load/{mode}", html_file=f"results/load/{mode}.html")


# -- target ---------------------------------------------------------------------------------


@events.init.add_listener
def _resolve_target(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    if options is None:
        return
    described: dict[str, Any] = json.loads(Path(options.cluster_json).read_text()) if options.cluster_json else {}
    if options.host or described:
        TARGET.endpoints = [options.host] if options.host else list(described["endpoints"])
        TARGET.ca_file = options.ca_file or described.get("ca_file", "")
        TARGET.password = options.admin_password or described.get("admin", {}).get("password", "")
        if not TARGET.ca_file or not TARGET.password:
            raise SystemExit("modematrix: with --host, give --cluster-json, or --ca-file and --admin-password")
        if described and options.fault:
            import topologies

            TARGET.cluster = topologies.attach(described["run_id"])
    else:
        import topologies

        log.info("no --host: starting the %s mode", TARGET.mode)
        TARGET.cluster = topologies.launch(TARGET.mode)
        TARGET.owned = True
        TARGET.endpoints = TARGET.cluster.endpoints
        TARGET.ca_file, TARGET.password = str(TARGET.cluster.ca_file), TARGET.cluster.admin.password
    environment.host = TARGET.endpoints[0]
    if environment.runner is not None:
        gevent.spawn(_sample_cpu, environment)
        if options.fault:
            gevent.spawn(_fault_timeline, options.fault, options.fault_at, options.fault_for)


@events.request.add_listener
def _count(exception: BaseException | None = None, **_: Any) -> None:
    TARGET.per_second[int(time.time())][1 if exception else 0] += 1


def _sample_cpu(environment: Environment) -> None:
    while True:
        gevent.sleep(1.0)
        if environment.runner is not None and environment.runner.user_count:
            TARGET.cpu.append(environment.runner.current_cpu_usage)


# -- failover under load -------------------------------------------------------------------


def _victim(cluster: Any, which: str) -> str:
    leader = cluster.db_leader().name if cluster.spec.db == "etcd" else cluster.nodes[0].name
    if which == "leader":
        return str(leader)
    others = [n.name for n in cluster.nodes if n.name != leader]
    return random.choice(others or [leader])


FAULTS = {
    "kill-leader": lambda c: _kill(c, _victim(c, "leader")),
    "kill-node": lambda c: _kill(c, _victim(c, "other")),
    "pause-node": lambda c: _pause(c, _victim(c, "other")),
    "partition-leader": lambda c: _partition(c, _victim(c, "leader")),
}


def _kill(cluster: Any, node: str) -> Any:
    from topologies.faults import Kill

    return Kill(node)


def _pause(cluster: Any, node: str) -> Any:
    from topologies.faults import Pause

    return Pause(node)


def _partition(cluster: Any, node: str) -> Any:
    from topologies.faults import Partition

    return Partition.isolating(node, cluster)


def _fault_timeline(name: str, at: float, duration: float) -> None:
    if TARGET.cluster is None:
        log.error("--fault needs a cluster this run started, or --cluster-json of one")
        return
    from topologies.faults import heal_all

    gevent.sleep(at)
    fault = FAULTS[name](TARGET.cluster)
    TARGET.fault_times.append((time.time(), f"apply {fault.name}"))
    fault.apply(TARGET.cluster)
    gevent.sleep(duration)
    fault.heal(TARGET.cluster)
    heal_all(TARGET.cluster)
    TARGET.fault_times.append((time.time(), f"heal {fault.name}"))


def recovery(
    per_second: dict[int, list[int]], fault_at: float, threshold: float = 0.01, stable_s: int = 3
) -> tuple[float, float | None]:
    """(peak error rate after the fault, seconds from the fault until the error rate stays
    under ``threshold`` for ``stable_s`` seconds; None if it never does).

    >>> series = {100: [10, 0], 101: [2, 8], 102: [5, 5], 103: [10, 0], 104: [10, 0], 105: [10, 0]}
    >>> recovery(series, 101.0)
    (0.8, 2.0)
    """
    seconds = sorted(s for s in per_second if s >= int(fault_at))
    rates = {s: per_second[s][1] / max(1, sum(per_second[s])) for s in seconds}
    peak = max(rates.values(), default=0.0)
    calm = 0
    for s in seconds:
        calm = calm + 1 if rates[s] < threshold and sum(per_second[s]) else 0
        if calm == stable_s:
            return peak, float(s - stable_s + 1 - int(fault_at))
    return peak, None


# -- verdict ----------------------------------------------------------------------------------


def slo_breaches(stats: Any, options: Any) -> list[str]:
    total = stats.total
    rps = total.num_requests / max(1e-9, (total.last_request_timestamp or 0) - total.start_time)
    checks = [
        ("fail ratio", total.fail_ratio, options.slo_fail_ratio, "max"),
        ("p95 ms", total.get_response_time_percentile(0.95), options.slo_p95_ms, "max"),
        ("p99 ms", total.get_response_time_percentile(0.99), options.slo_p99_ms, "max"),
        ("requests/s", rps, options.slo_min_rps, "min"),
    ]
    return [
        f"SLO {name} {'>' if kind == 'max' else '<'} {limit:g}: measured {value:.3g}"
        for name, value, limit, kind in checks
        if (kind == "max" and value > limit) or (kind == "min" and value < limit)
    ]


@events.quitting.add_listener
def _verdict(environment: Environment, **_: Any) -> None:
    try:
        _report(environment)
    finally:
        if TARGET.owned and TARGET.cluster is not None:
            log.info("removing the %s cluster started for this run", TARGET.mode)
            TARGET.cluster.stop()


def _report(environment: Environment) -> None:
    options = environment.parsed_options
    if TARGET.cpu:
        peak, mean = max(TARGET.cpu), statistics.mean(TARGET.cpu)
        log.info("locust CPU: mean %.0f%%, peak %.0f%%", mean, peak)
        if peak > CPU_LIMIT:
            log.warning("locust itself used over %.0f%% CPU: the load generator may be the bottleneck", CPU_LIMIT)
    for at, event in TARGET.fault_times:
        log.info("%s at +%.1f s", event, at - environment.stats.total.start_time)
    if TARGET.fault_times:
        peak_rate, back = recovery(TARGET.per_second, TARGET.fault_times[0][0])
        back_text = f"{back:.0f} s" if back is not None else "never within the run"
        log.info("failover: error rate peaked at %.0f%%; back under 1%% after %s", peak_rate * 100, back_text)
    if options is None or environment.stats.total.num_requests == 0:
        environment.process_exit_code = 1
        log.error("no request was made")
        return
    breaches = slo_breaches(environment.stats, options)
    for breach in breaches:
        log.error(breach)
    crashed = bool(environment.runner and environment.runner.exceptions)
    if crashed:
        log.error("user code raised exceptions: see the exceptions report")
    # The SLOs decide, not locust's default "any failed request exits 1": a failover run
    # with a short error spike inside the failure budget is a pass.
    environment.process_exit_code = 1 if breaches or crashed else 0
    if not breaches:
        log.info("all SLOs met")

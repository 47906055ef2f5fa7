"""``modematrix bench``: requests per second and latency of each mode, as ratios against
baselines measured in the same run.

    modematrix bench --mode single,ha,scaled [--seconds 8] [--connections 64]

The load generator is wrk (compiled; Debian's ``wrk``), pinned with ``taskset`` to another
core than every server container (all pinned to ``--server-core``), so the generator never
takes the server's CPU. Baselines, in the same run:

- bare Starlette JSON on the runtime's own stack (uvicorn, httptools, uvloop, TLS), in a
  container of the runtime image (``loadtests/baseline_app.py``);
- raw puts to the same etcd cluster (one member) for ha and scaled, as etcd's root, by
  ``loadtests/etcdload`` (Go, etcd's own client, pinned to wrk's core): etcd takes only client
  certificates, which wrk cannot present, and its JSON gateway ignores certificate users; for
  k8s, to its ``etcd-0`` through a ``kubectl port-forward`` of its own (pod addresses are not
  reachable from here; the rows through Envoy take the same kind of tunnel).

gRPC rows (every mode with a gRPC front door) come from ``loadtests/grpcload`` (Go, grpc-go,
pinned to wrk's core; wrk speaks no gRPC), against the same baselines. With single among the
modes, the gRPC floor comes first: Kv Put and Get answered with fixed replies by grpcio alone
(``loadtests/baseline_grpc.py``: ``grpc.aio`` on uvloop as the runtime serves it, grpcio's
synchronous server with 16 threads, and that server handing each call to a uvloop loop), so
the runtime's gRPC rows read against what the Python server costs here before any work.

Every mode's parts are also measured at idle, after the start and before any load: each
container's or pod's resident memory (:meth:`topologies.Run.memory`), against a budget per
role (runtime 64 MiB, runtime with an etcd member 96 MiB, Envoy 48 MiB).

Where each row's CPU went, in a mode of containers: every container's CPU time (its cgroup's)
read before and after the row, and the busy time of the server cores (``/proc/stat``: the
containers and the kernel's network path between them), each over the row's requests, in
microseconds of CPU per request.

Rows go to stdout as tables and to ``results/bench/`` as JSON (``bench-*.json``,
``memory-*.json``, ``cpu-*.json``) and Markdown.

    modematrix bench --start --mode single,k8s [--repeat 3]

times ``up`` instead: from the call to every part ready (on k8s: every workload available and
the front door answering through port-forward), with the phases the start reports (node
containers, nodes Ready, the image in every worker's containerd, the deploy), images built.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

import images
import topologies
from images import golang
from topologies import ContainerRun, KubeRun, Run, engines, targets
from topologies.cli.common import example
from topologies.constants import (
    API_PORT,
    DB_CLIENT_PORT,
    GRPC_PORT,
    LABEL_MODE,
    LABEL_NODE,
    LABEL_ROLE,
    LABEL_RUN,
)
from topologies.kubernetes import forward
from topologies.kubernetes.clusters import NodeCluster
from topologies.pki import RunPki
from topologies.wait import wait_until

BASELINE_APP = Path(__file__).with_name("baseline_app.py")
BASELINE_GRPC = Path(__file__).with_name("baseline_grpc.py")
# the gRPC floor's servers (loadtests/baseline_grpc.py), measured when the bench has single
GRPC_FLOORS = {
    "aio": "bare grpc.aio (TLS, uvloop), same stack",
    "threads": "bare grpcio sync server, 16 threads (TLS)",
    "bridge": "bare grpcio sync server, each call handed to a uvloop loop",
}
BARE = "bare Starlette JSON (TLS), same stack"
RAW_ETCD = "raw etcd puts, same cluster"


@dataclass(frozen=True)
class Measured:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


@dataclass(frozen=True)
class Row:
    mode: str
    target: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    baseline: str = ""
    ratio: float | None = None


MIB = 1 << 20
BUDGET_MIB = {"runtime": 64, "runtime + etcd member": 96, "envoy": 48}  # idle, per part (issue 29)


@dataclass(frozen=True)
class MemoryRow:
    mode: str
    part: str
    role: str
    rss_mib: float
    budget_mib: int | None  # None: no budget for the role (HAProxy, etcd alone)

    @property
    def within(self) -> bool | None:
        return None if self.budget_mib is None else self.rss_mib <= self.budget_mib


@dataclass(frozen=True)
class CostRow:
    """Where a row's CPU went, in microseconds of CPU per request: on the server cores as a
    whole (every container on them, and the kernel's network path between them), and in each
    container of the run (an Envoy node's Envoy with the runtime that supervises it)."""

    mode: str
    target: str
    requests: int
    cores_us: float | None  # None: the run's servers are not pinned (no core is theirs alone)
    parts_us: dict[str, float]


def cpus(spec: str) -> set[int]:
    """The cores a cpuset string names.

    >>> sorted(cpus("0")), sorted(cpus("0,2-3"))
    ([0], [0, 2, 3])
    """
    found: set[int] = set()
    for piece in spec.split(","):
        first, _, last = piece.strip().partition("-")
        found |= set(range(int(first), int(last or first) + 1))
    return found


def busy_seconds(cores: set[int], stat: str | None = None) -> float:
    """Busy CPU seconds of ``cores`` since boot: every /proc/stat field but idle and iowait.

    >>> busy_seconds({1}, "cpu  9 9 9 9 9 9 9 0 0 0\\ncpu0 1 0 1 50 0 0 0 0 0 0\\ncpu1 100 0 50 9 3 0 50 0 0 0\\n")
    2.0
    """
    text = Path("/proc/stat").read_text() if stat is None else stat
    ticks = 0
    for line in text.splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cores:
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
            ticks += user + nice + system + irq + softirq + steal
    return ticks / os.sysconf("SC_CLK_TCK")


class Meter:
    """Measures what each row costs in CPU where it can: a run of containers, each read
    before and after the row (:meth:`topologies.ContainerRun.cpu`), and the server cores when
    the run has them alone. Other runs (pods) are measured without it."""

    def __init__(self, run: Run, cores: str | None, seconds: float) -> None:
        self.run, self.seconds = run, seconds
        self.cores = cpus(cores) if cores is not None else None
        self.costs: list[CostRow] = []

    def __call__(self, target: str, measure: Callable[[], Measured]) -> Measured:
        if not isinstance(self.run, ContainerRun):
            return measure()
        before, core_before = self.run.cpu(), self._cores()
        measured = measure()
        after, core_after = self.run.cpu(), self._cores()
        requests = max(1, round(measured.rps * self.seconds))

        def per_request(seconds: float) -> float:
            return round(1e6 * seconds / requests, 1)

        parts = {name: per_request(used - before[name]) for name, used in after.items() if name in before}
        cores = None if core_before is None or core_after is None else per_request(core_after - core_before)
        self.costs.append(CostRow(self.run.mode, target, requests, cores, parts))
        return measured

    def _cores(self) -> float | None:
        return None if self.cores is None else busy_seconds(self.cores)

    def named(self, names: dict[str, str]) -> list[CostRow]:
        """The costs with each row's target as the table of rows names it."""
        return [CostRow(c.mode, names.get(c.target, c.target), c.requests, c.cores_us, c.parts_us) for c in self.costs]


def render_costs(rows: Sequence[CostRow], top: int = 4) -> str:
    lines = ["| mode | target | server cores µs/req | the parts that cost most, µs/req |", "|---|---|---:|---|"]
    for r in rows:
        cores = "-" if r.cores_us is None else f"{r.cores_us:,.0f}"
        parts = ", ".join(f"{name} {us:,.0f}" for name, us in sorted(r.parts_us.items(), key=lambda p: -p[1])[:top])
        lines.append(f"| {r.mode} | {r.target} | {cores} | {parts} |")
    return "\n".join(lines)


def idle_memory(run: Run) -> list[MemoryRow]:
    """Each running part of ``run`` now, with its role's budget; none, said on stderr, where the
    figures cannot be had (a cluster whose kubeconfig may not read its nodes' kubelets): the
    load rows do not depend on them."""
    try:
        parts = run.memory()
    except topologies.TopologyError as exc:
        print(f"bench: no idle memory figures for {run.mode}: {exc}", file=sys.stderr)
        return []
    return [MemoryRow(run.mode, f.part, f.role, round(f.rss_bytes / MIB, 1), BUDGET_MIB.get(f.role)) for f in parts]


def render_memory(rows: Sequence[MemoryRow]) -> str:
    lines = ["| mode | part | role | idle RSS MiB | budget MiB | within |", "|---|---|---|---:|---:|---|"]
    for r in rows:
        within = "-" if r.within is None else "yes" if r.within else "**no**"
        budget = "-" if r.budget_mib is None else str(r.budget_mib)
        lines.append(f"| {r.mode} | {r.part} | {r.role} | {r.rss_mib:.1f} | {budget} | {within} |")
    return "\n".join(lines)


# -- wrk ---------------------------------------------------------------------------------------

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    """``812.00us`` -> 0.812; ``1.23ms`` -> 1.23; ``2.00s`` -> 2000.0"""
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if found is None:
        raise ValueError(f"wrk latency {text!r}: expected a number with us, ms, s or m")
    return float(found.group(1)) * _UNITS[found.group(2)]


def parse_wrk(output: str) -> Measured:
    """Read wrk's ``--latency`` report.

    >>> parse_wrk('''  Latency Distribution
    ...      50%    1.20ms
    ...      99%    9.50ms
    ...   12000 requests in 8.00s, 1.2MB read
    ...   Socket errors: connect 0, read 2, write 0, timeout 1
    ...   Non-2xx or 3xx responses: 4
    ... Requests/sec:   1500.10''')
    Measured(rps=1500.1, p50_ms=1.2, p99_ms=9.5, errors=7)
    """
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    if not (rps and p50 and p99):
        raise ValueError(f"wrk printed no latency report:\n{output[-800:]}")
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = (sum(map(int, socket.groups())) if socket else 0) + (int(non_2xx.group(1)) if non_2xx else 0)
    return Measured(float(rps.group(1)), _ms(p50.group(1)), _ms(p99.group(1)), errors)


def _lua_put(path_prefix: str, keys: int = 1000) -> str:
    return f"""
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("PUT", "{path_prefix}" .. (counter % {keys}), nil, "value-" .. counter)
end
"""


@dataclass(frozen=True)
class Wrk:
    seconds: float
    connections: int
    core: int

    def run(self, url: str, *, token: str = "", script: str = "") -> Measured:
        with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
            lua.write(script)
            lua.flush()
            argv = ["taskset", "-c", str(self.core), "wrk", "-t1", f"-c{self.connections}", f"-d{self.seconds:g}s"]
            argv += ["--latency", "--timeout", "5s"]
            argv += ["-H", f"Authorization: Bearer {token}"] if token else []
            argv += ["-s", lua.name] if script else []
            done = subprocess.run([*argv, url], capture_output=True, text=True, timeout=self.seconds + 60)
        if done.returncode != 0:
            raise RuntimeError(f"wrk exited {done.returncode}: {done.stderr.strip()[-500:]}")
        return parse_wrk(done.stdout)


# -- what is measured --------------------------------------------------------------------------


@contextmanager
def bare_starlette(image: str, core: str) -> Iterator[str]:
    """The baseline server in a container of the runtime image; yields its URL."""
    script = (images.IMAGE_PYTHON, "-c", BASELINE_APP.read_text())
    with _baseline_server(image, core, "baseline", script, {}, API_PORT) as port:
        url = f"https://127.0.0.1:{port}/hello"
        wait_until(
            lambda: httpx.get(url, verify=False, timeout=1).status_code == 200,  # noqa: S501 (self-signed, loopback)
            timeout=30,
            interval=0.2,
            message="the baseline server answers",
        )
        yield url


@contextmanager
def bare_grpc(image: str, core: str, kind: str) -> Iterator[tuple[str, Path]]:
    """A gRPC floor server (:data:`GRPC_FLOORS`) in a container of the runtime image, with a
    certificate of a CA of its own for 127.0.0.1; yields its target and that CA's file."""
    with tempfile.TemporaryDirectory(prefix="modematrix-grpc-floor-") as folder:
        pki = RunPki.create(Path(folder))
        cert, key = pki.pair("grpc-floor", "grpc-floor", ["127.0.0.1", "localhost"])
        ca_file = Path(folder, "ca.pem")
        ca_file.write_bytes(pki.ca.cert_pem)
        script = (images.IMAGE_PYTHON, "-c", BASELINE_GRPC.read_text(), kind)
        env = {"BASELINE_CERT": cert.decode(), "BASELINE_KEY": key.decode()}
        with _baseline_server(image, core, "grpc-floor", script, env, GRPC_PORT) as port:
            target, trust = f"127.0.0.1:{port}", ssl.create_default_context(cafile=str(ca_file))
            wait_until(
                lambda: _handshakes(target, trust), timeout=30, interval=0.2, message=f"the {kind} gRPC floor answers"
            )
            yield target, ca_file


@contextmanager
def _baseline_server(
    image: str, core: str, name: str, entrypoint: tuple[str, ...], env: dict[str, str], port: int
) -> Iterator[int]:
    """A baseline server ``name`` of the runtime image on ``core``, as a run of its own (so
    the reaper removes it if this process dies); yields its published ``port``, removes it."""
    engine = engines.get("docker")
    engine.guard(image)
    run_id = f"bench-{uuid.uuid4().hex[:6]}"
    labels = {LABEL_RUN: run_id, LABEL_MODE: "bench", LABEL_NODE: name, LABEL_ROLE: "baseline"}
    launch = engines.Launch(
        name=f"mm-{run_id}-{name}",
        image=image,
        labels=labels,
        entrypoint=entrypoint,
        env=env,
        publish=(port,),
        cpuset=core,
    )
    try:
        yield engine.launch(launch).ports[port]
    finally:
        engine.remove_run(run_id)


def _handshakes(target: str, trust: ssl.SSLContext) -> bool:
    """Whether ``target`` completes a TLS handshake (a port bound before its server started
    takes connections and drops them)."""
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1) as raw:
            trust.wrap_socket(raw, server_hostname=host).close()
            return True
    except OSError:
        return False


def grpc_floors(image: str, core: str, wrk: Wrk, bare: Row) -> list[Row]:
    """Get and Put of each gRPC floor server, as ratios of the bare Starlette row."""
    rows = []
    for kind, name in GRPC_FLOORS.items():
        with bare_grpc(image, core, kind) as (target, ca_file):
            for method in ("put", "get"):
                measured = _grpcload(target, ca_file, "floor", method, "bench-get" if method == "get" else "bench", wrk)
                rows.append(_row("-", f"{name}: Kv {method.capitalize()}", measured, bare))
    return rows


def _rows_for(mode: str, wrk: Wrk, core: str, bare: Row, memory: list[MemoryRow], costs: list[CostRow]) -> list[Row]:
    """One mode's rows: HTTP PUT and GET (wrk) and gRPC Put and Get (grpcload) through its
    front door, against raw etcd puts to one of its members where it has them, else against
    the bare row. Servers are pinned to ``core`` where the mode allows it
    (:func:`topologies.targets.pinnable`); rows of one that does not say unpinned."""
    pinned = targets.pinnable(mode)
    with topologies.start(mode, cpuset=core if pinned else None, timeout=400) as run:
        memory += idle_memory(run)  # before any load
        return _rows_of(run, wrk, bare, pinned=pinned, cores=core if pinned else None, costs=costs)


def _rows_of(
    run: Run, wrk: Wrk, bare: Row, *, pinned: bool, cores: str | None = None, costs: list[CostRow] | None = None
) -> list[Row]:
    """The rows of a run that is up (started by the bench, or handed to it by ``--run``). A
    k8s run on a cluster built here is measured through its port-forward and, for comparison,
    through a node port of every worker (the same Envoys without the API server's tunnel).
    What each row cost in CPU, where it can be read, goes to ``costs``."""
    mode = run.mode
    meter = Meter(run, cores, wrk.seconds)
    with run.client() as api:
        token = api.token or api.login()
        seeded = api.put("/v1/kv/bench-get", content=b"x" * 64)
        if seeded.status_code != 200:
            raise topologies.TopologyError(f"{mode}: could not write the GET key: {seeded.status_code} {seeded.text}")
        url = run.endpoints[0]
        get = meter("kv GET", lambda: wrk.run(f"{url}/v1/kv/bench-get", token=token))
        put = meter("kv PUT", lambda: wrk.run(f"{url}/v1/kv/", token=token, script=_lua_put(f"/v1/kv/bench-{mode}-")))
        grpc_put = meter("kv PUT over gRPC", lambda: _grpc(run, token, "put", wrk)) if run.grpc_endpoints else None
        grpc_get = meter("kv GET over gRPC", lambda: _grpc(run, token, "get", wrk)) if run.grpc_endpoints else None
        baseline, through = _baseline(run, mode, wrk, bare, meter)
        through = " ".join(word for word in (through, "" if pinned else "(unpinned)") if word)
        measured = [("kv PUT", put), ("kv GET", get)]
        if grpc_put and grpc_get:
            measured += [("kv PUT over gRPC", grpc_put), ("kv GET over gRPC", grpc_get)]
        if isinstance(run, KubeRun) and run.expose == "port-forward" and isinstance(run.cluster, NodeCluster):
            with run.node_port_doors() as doors:
                direct = f"https://{doors[0]}"
                measured += [
                    (
                        "kv PUT through a node port (no tunnel)",
                        wrk.run(f"{direct}/v1/kv/", token=token, script=_lua_put(f"/v1/kv/bench-{mode}-np-")),
                    ),
                    ("kv GET through a node port (no tunnel)", wrk.run(f"{direct}/v1/kv/bench-get", token=token)),
                ]
        rows = [baseline] if baseline is not bare else []
        named = {what: what if "node port" in what else f"{what} {through}".strip() for what, _ in measured}
        if costs is not None:
            costs += meter.named(named)
        return rows + [_row(mode, named[what], numbers, baseline) for what, numbers in measured]


def _baseline(run: Run, mode: str, wrk: Wrk, bare: Row, meter: Meter) -> tuple[Row, str]:
    """The row a mode's rows are ratios of (raw etcd puts to one of its members, where the
    host reaches one; else the bare server), and how its requests travel."""
    if isinstance(run, KubeRun):
        # pod addresses, etcd's among them, are not reachable from the host: etcd-0 through a
        # port-forward of its own, the tunnel the user's path to Envoy takes too
        with forward.once(run.cluster.kubectl_argv(), run.namespace, "pod/etcd-0", DB_CLIENT_PORT) as port:
            measured = _raw_etcd(run.workdir, f"127.0.0.1:{port}", wrk)
        return _row(
            mode, f"{RAW_ETCD} (through kubectl port-forward)", measured, None
        ), f"through {run.expose} to Envoy"
    if not isinstance(run, ContainerRun) or run.spec.db != "etcd":
        return bare, ""
    member = next(n for n in run.nodes if n.db_member)
    endpoint = f"{member.ip}:{DB_CLIENT_PORT}"
    raw = _row(mode, RAW_ETCD, meter(RAW_ETCD, lambda: _raw_etcd(run.workdir, endpoint, wrk)), None)
    envoys = any(n.spec.is_envoy for n in run.nodes)
    return raw, "through the load balancer" if run.lb else "through Envoy" if envoys else "through one node"


ETCDLOAD = Path(__file__).with_name("etcdload")
GRPCLOAD = Path(__file__).with_name("grpcload")


def go_binary(folder: Path) -> Path:
    """A Go load generator of ``loadtests/`` (etcdload, grpcload), built once per source version."""
    try:
        return golang.binary(folder)
    except images.ImageError as exc:
        raise topologies.TopologyError(f"the bench builds loadtests/{folder.name}: {exc}") from exc


def _grpc(run: Run, token: str, method: str, wrk: Wrk) -> Measured:
    """Unary Kv calls over gRPC through the mode's gRPC front door, by ``loadtests/grpcload``
    (Go, pinned to wrk's core): 4 HTTP/2 connections carrying as many calls at once as wrk
    has connections."""
    key = "bench-get" if method == "get" else f"bench-grpc-{run.mode}"
    return _grpcload(run.grpc_endpoints[0], run.ca_file, token, method, key, wrk)


def _grpcload(target: str, ca_file: Path, token: str, method: str, key: str, wrk: Wrk) -> Measured:
    argv = ["taskset", "-c", str(wrk.core), str(go_binary(GRPCLOAD)), f"-target={target}"]
    argv += [f"-cacert={ca_file}", f"-token={token}", f"-method={method}", f"-key={key}"]
    argv += [f"-clients={wrk.connections}", f"-seconds={wrk.seconds:g}"]
    return _go_load("grpcload", argv, wrk)


def _go_load(name: str, argv: list[str], wrk: Wrk) -> Measured:
    """Run a Go load generator of ``loadtests/`` and read the JSON line it prints."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=wrk.seconds + 60)
    if done.returncode != 0:
        raise topologies.TopologyError(f"{name} failed: {done.stderr.strip()[-300:]}")
    result = json.loads(done.stdout)
    return Measured(
        round(result["rps"], 1), round(result["p50_ms"], 2), round(result["p99_ms"], 2), int(result["errors"])
    )


def _raw_etcd(workdir: Path, endpoint: str, wrk: Wrk) -> Measured:
    """Puts straight to one member (``HOST:PORT``) as etcd's root (a certificate of the run's
    CA, in ``workdir``), with etcd's own Go client: wrk presents no client certificate, and
    etcd's JSON gateway ignores certificate users."""
    pki = RunPki.load(workdir)
    root = pki.root().get("node")
    assert root is not None
    with tempfile.TemporaryDirectory() as folder:
        files = {name: Path(folder, name) for name in ("ca.pem", "root.pem", "root-key.pem")}
        files["ca.pem"].write_bytes(pki.ca.cert_pem)
        files["root.pem"].write_bytes(root[0])
        files["root-key.pem"].touch(mode=0o600)
        files["root-key.pem"].write_bytes(root[1])
        argv = ["taskset", "-c", str(wrk.core), str(go_binary(ETCDLOAD)), f"-endpoint={endpoint}"]
        argv += [f"-cacert={files['ca.pem']}", f"-cert={files['root.pem']}", f"-key={files['root-key.pem']}"]
        argv += [f"-clients={wrk.connections}", f"-seconds={wrk.seconds:g}"]
        return _go_load("etcdload", argv, wrk)


def _row(mode: str, target: str, measured: Measured, baseline: Row | None) -> Row:
    ratio = round(measured.rps / baseline.rps, 2) if baseline and baseline.rps else None
    return Row(mode, target, **asdict(measured), baseline=baseline.target if baseline else "", ratio=ratio)


def render(rows: Sequence[Row], wrk: Wrk) -> str:
    head = f"wrk -t1 -c{wrk.connections} -d{wrk.seconds:g}s on core {wrk.core}; servers pinned to another core\n"
    lines = [
        "| mode | target | req/s | p50 ms | p99 ms | errors | ratio | to |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else "1.00x"
        lines.append(
            f"| {r.mode} | {r.target} | {r.rps:,.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.errors} | {ratio} "
            f"| {r.baseline or '(baseline)'} |"
        )
    return head + "\n".join(lines)


def bench(
    modes: Sequence[str], wrk: Wrk, server_core: str, results: Path, run: Run | None = None
) -> tuple[list[Row], list[MemoryRow], list[CostRow]]:
    """Rows of every mode in ``modes`` (each started for it, pinned where it can be), or of
    ``run`` alone (a run that is up, unpinned), after the bare baseline; the idle memory of
    each mode's parts (of ``run``: as it is when the bench begins); and what each row of a
    run of containers cost in CPU, part by part."""
    image = engines.get("docker").image(quiet=False)
    etcd_rows = run is not None or any(mode != "single" for mode in modes)
    for generator in (GRPCLOAD, ETCDLOAD) if etcd_rows else (GRPCLOAD,):  # now, not in a row whose CPU counts
        go_binary(generator)
    with bare_starlette(image, server_core) as url:
        bare = _row("-", BARE, wrk.run(url), None)
    rows, memory, costs = [bare], list[MemoryRow](), list[CostRow]()
    if run is None and "single" in modes:  # what the Python gRPC server alone costs here
        rows += grpc_floors(image, server_core, wrk, bare)
    if run is not None:
        memory += idle_memory(run)
        rows += _rows_of(run, wrk, bare, pinned=False, costs=costs)
    for mode in modes if run is None else ():
        rows += _rows_for(mode, wrk, server_core, bare, memory, costs)
    results.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (results / f"bench-{stamp}.json").write_text(json.dumps([asdict(r) for r in rows], indent=2))
    (results / f"memory-{stamp}.json").write_text(json.dumps([asdict(m) for m in memory], indent=2))
    (results / f"cpu-{stamp}.json").write_text(json.dumps([asdict(c) for c in costs], indent=2))
    tables = (render(rows, wrk), render_memory(memory), render_costs(costs))
    (results / "bench.md").write_text("\n\n".join(tables) + "\n")
    return rows, memory, costs


# -- start times --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Started:
    mode: str
    seconds: float  # from the call to the run ready
    phases: list[tuple[float, str]]  # (seconds since the call, what the start reported)


def time_start(mode: str, repeat: int = 1) -> list[Started]:
    """Start ``mode`` ``repeat`` times, one after the other (each removed before the next):
    how long each took to be ready, and its phases."""
    found = []
    for _ in range(repeat):
        began = time.monotonic()
        phases: list[tuple[float, str]] = []

        def heard(line: str, began: float = began, phases: list[tuple[float, str]] = phases) -> None:
            phases.append((round(time.monotonic() - began, 1), line))

        with targets.start(mode, targets.Options(report=heard)) as run:
            seconds = time.monotonic() - began
            run.wait_healthy()
        found.append(Started(mode, round(seconds, 1), phases))
    return found


def render_starts(starts: Sequence[Started]) -> str:
    lines = ["| mode | up to ready, s | phases (s since the call) |", "|---|---:|---|"]
    for s in starts:
        phases = "; ".join(f"{at:.1f} {what}" for at, what in s.phases) or "-"
        lines.append(f"| {s.mode} | {s.seconds:.1f} | {phases} |")
    return "\n".join(lines)


# -- the `modematrix bench` subcommand ----------------------------------------------------------


def command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Registered through the ``modematrix.commands`` entry point group."""
    parser = sub.add_parser(
        "bench",
        help="requests/s and latency per mode, against same-run baselines (wrk)",
        epilog=example(
            "modematrix bench --mode ha --seconds 8", "modematrix bench --mode k8s --json", "modematrix bench --start"
        ),
    )
    parser.add_argument(
        "--mode",
        default="single,ha,scaled",
        help=f"comma-separated, of {', '.join(targets.modes())} (default %(default)s)",
    )
    parser.add_argument(
        "--run", dest="run_id", metavar="RUN", help="measure this run (modematrix up), instead of starting --mode"
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="per row (default %(default)s)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--server-core", default="0", help="host core(s) every server container is pinned to")
    parser.add_argument("--load-core", type=int, default=1, help="host core wrk is pinned to")
    parser.add_argument("--results", type=Path, default=Path("results/bench"))
    parser.add_argument("--json", action="store_true", help="print the rows as JSON (docs/cli.md)")
    parser.add_argument(
        "--start", action="store_true", help="time `up` of each --mode to ready, with its phases, instead of load"
    )
    parser.add_argument("--repeat", type=int, default=1, help="with --start: starts per mode (default %(default)s)")
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    modes = [m.strip() for m in args.mode.split(",") if m.strip()]
    unknown = [m for m in modes if m not in topologies.modes()]
    if unknown or not modes:
        raise topologies.UsageError(
            f"--mode: no mode {unknown[0] if unknown else ''!r}; expected some of {', '.join(topologies.modes())}"
        )
    if args.start:
        return _starts(args, modes)
    if shutil.which("wrk") is None or shutil.which("taskset") is None:
        raise topologies.UsageError("modematrix bench needs wrk and taskset: sudo apt-get install wrk util-linux")
    if args.seconds <= 0 or args.connections < 1:
        raise topologies.UsageError("--seconds must be positive and --connections at least 1")
    wrk = Wrk(args.seconds, args.connections, args.load_core)
    given = topologies.attach(args.run_id) if args.run_id else None  # an unknown run: exit 2 before anything starts
    rows, memory, costs = bench(modes, wrk, args.server_core, args.results, run=given)
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
        return 0
    print(render(rows, wrk))
    print()
    print(render_memory(memory))
    if costs:
        print()
        print(render_costs(costs))
    print(f"written to {args.results}/")
    return 0


def _starts(args: argparse.Namespace, modes: Sequence[str]) -> int:
    if args.run_id or not 1 <= args.repeat <= 20:
        raise topologies.UsageError("--start: times new runs (not --run), --repeat from 1 to 20")
    starts = [started for mode in modes for started in time_start(mode, args.repeat)]
    args.results.mkdir(parents=True, exist_ok=True)
    document = [
        {"mode": s.mode, "seconds": s.seconds, "phases": [{"at": a, "what": w} for a, w in s.phases]} for s in starts
    ]
    (args.results / f"start-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(document, indent=2))
    print(json.dumps(document, indent=2) if args.json else render_starts(starts))
    return 0

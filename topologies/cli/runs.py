"""``modematrix up | status | down | logs | exec | kubeconfig``: runs, and what is inside them."""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import time
from typing import Any

from images.progress import step
from topologies import engines, kubernetes, targets
from topologies.cli.common import EXIT_OK, Sub, emit, example, say
from topologies.constants import LABEL_RUN
from topologies.exceptions import NotFound, TopologyError, UsageError
from topologies.kubernetes import apply
from topologies.kubernetes.clusters import GivenCluster, NodeCluster
from topologies.kubernetes.manifests import EXPOSURES
from topologies.kubernetes.run import KubeRun
from topologies.run import Run
from topologies.runs import recorded, runs_root


def register(sub: Sub) -> None:
    modes = ", ".join(targets.modes())
    up = sub.add_parser(
        "up",
        help="start a mode and leave it running",
        epilog=example(
            "modematrix up ha --json",
            "modematrix up k8s --kubeconfig ~/.kube/config",
            "modematrix up --service topologies/services/etcd.yaml --members 3",
        ),
    )
    up.add_argument("mode", nargs="?", help=f"one of {modes}, or a path to a mode .yaml")
    served = up.add_argument_group("a service file's service instead of a mode (docs/services.md)")
    served.add_argument("--service", metavar="FILE", help="a service file, or a shipped one's name (etcd)")
    served.add_argument("--members", type=int, metavar="N", help="its members (default 3, or the smallest it allows)")
    served.add_argument(
        "--on",
        choices=("containers", "kubernetes"),
        default="containers",
        help="containers (default), or Kubernetes: a cluster built here, or yours with --kubeconfig (and --image)",
    )
    up.add_argument("--json", action="store_true", help="print the run as JSON (docs/cli.md)")
    up.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="until every part is ready (default: 180 on containers, 400 on Kubernetes)",
    )
    up.add_argument("--image", help="the runtime image to run (default: build it, or reuse it)")
    up.add_argument(
        "--data-size",
        metavar="SIZE",
        help="container modes: each node's data dir a file system of this size (64MiB, 1GiB), which "
        "`modematrix fault RUN disk-full NODE` can fill (a tmpfs, kept across node restarts)",
    )
    up.add_argument(
        "--lazy-fs",
        action="store_true",
        help="container modes: each node's data dir on lazyfs (FUSE, built here with Go): killing a node "
        "loses every write no fsync covered, as a power cut does; `fault RUN io-errors|slow-io NODE` apply",
    )
    kube = up.add_argument_group("Kubernetes modes")
    kube.add_argument("--kubeconfig", help="deploy onto this cluster, in a namespace of the run's own")
    kube.add_argument("--namespace", help="with --kubeconfig: that namespace (refused if it is not a run's)")
    kube.add_argument("--workers", type=int, default=3, help="without --kubeconfig: worker nodes built here")
    kube.add_argument(
        "--control-planes",
        type=int,
        default=1,
        metavar="N",
        help="without --kubeconfig: 1, or 3 (stacked etcd of three, HAProxy in front of the API servers)",
    )
    kube.add_argument(
        "--image-registry", help="where the cluster pulls the image, and its -envoy image, from (default: loaded)"
    )
    kube.add_argument(
        "--expose",
        choices=EXPOSURES,
        help="how Envoy is reached from here: port-forward (default; local ports on 127.0.0.1 through the "
        "API server), nodeport (every node's port 30443), loadbalancer (the cluster's load balancer)",
    )
    kube.add_argument(
        "--evict-after",
        type=int,
        metavar="SECONDS",
        help="a dead or unreachable node's pods move to other nodes after this long, once Kubernetes marks "
        "the node (default 10; Kubernetes' own default is 300)",
    )
    up.set_defaults(run=_up)
    status = sub.add_parser(
        "status", help="the runs; with RUN, its parts", epilog=example("modematrix status r-1a2b3c4d")
    )
    status.add_argument("run_id", nargs="?", metavar="RUN")
    status.add_argument("--json", action="store_true")
    status.set_defaults(run=_status)
    down = sub.add_parser(
        "down", help="remove runs", epilog=example("modematrix down r-1a2b3c4d", "modematrix down --all")
    )
    down.add_argument("run_ids", nargs="*", metavar="RUN")
    down.add_argument("--all", action="store_true", help="every run of this machine, and whatever they left behind")
    down.add_argument("--kubeconfig", help="RUN is a run's namespace in this cluster (no record needed)")
    down.add_argument("--json", action="store_true")
    down.set_defaults(run=_down)
    logs = sub.add_parser("logs", help="a part's log lines", epilog=example("modematrix logs r-1a2b3c4d node-1"))
    logs.add_argument("run_id", metavar="RUN")
    logs.add_argument("part", nargs="?", metavar="PART", help="a container or pod (default: list them)")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing as lines are written")
    logs.add_argument("--tail", type=int, default=100, metavar="LINES")
    logs.set_defaults(run=_logs)
    run_in = sub.add_parser(
        "exec", help="run a command in a part", epilog=example("modematrix exec r-1a2b node-1 -- id")
    )
    run_in.add_argument("run_id", metavar="RUN")
    run_in.add_argument("part", metavar="PART")
    run_in.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND")
    run_in.set_defaults(run=_exec)
    kubeconfig = sub.add_parser(
        "kubeconfig", help="the kubeconfig of a Kubernetes run", epilog=example("modematrix kubeconfig r-1a2b3c4d")
    )
    kubeconfig.add_argument("run_id", metavar="RUN")
    kubeconfig.set_defaults(run=_kubeconfig)


SIZE = re.compile(r"(\d+)\s*([kmg]?)(?:i?b)?", re.IGNORECASE)
UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def size(text: str) -> int:
    """Bytes from ``64MiB``, ``64m``, ``1GiB`` or a plain number (binary units, as Docker's).

    >>> size("64MiB"), size("1g"), size("4096")
    (67108864, 1073741824, 4096)
    >>> size("lots")
    Traceback (most recent call last):
    topologies.exceptions.UsageError: --data-size: expected a size such as 64MiB, 512m or 1GiB, got 'lots'
    """
    found = SIZE.fullmatch(text.strip())
    if found is None:
        raise UsageError(f"--data-size: expected a size such as 64MiB, 512m or 1GiB, got {text!r}")
    return int(found[1]) * UNITS[found[2].lower()]


def _options(args: argparse.Namespace, quiet: bool) -> targets.Options:
    started = time.monotonic()

    def report(line: str) -> None:
        if not quiet:
            say(f"  {time.monotonic() - started:6.1f} s  {line}")

    return targets.Options(
        engine=args.engine,
        reaper=False,  # the run outlives this command, until `modematrix down`
        image=args.image,
        timeout=args.timeout,
        quiet=quiet,
        kubeconfig=args.kubeconfig,
        namespace=args.namespace,
        image_registry=args.image_registry,
        workers=args.workers,
        control_planes=args.control_planes,
        expose=args.expose,
        evict_after=args.evict_after,
        data_size=None if args.data_size is None else size(args.data_size),
        lazy_fs=args.lazy_fs,
        report=report,
    )


def _up_service(args: argparse.Namespace) -> int:
    """``up --service FILE``: its members, ready, left running until ``modematrix down``."""
    from topologies import service
    from topologies.containers.service import start_service
    from topologies.kubernetes.service import start_service_k8s

    started = time.monotonic()
    spec = service.load(args.service)  # a wrong file is refused before anything starts
    members = spec.check_size(args.members or spec.default_size(), "--members")
    engine = engines.get(args.engine, reaper=False)  # the run outlives this command
    with step(f"starting {spec.name} with {members} members on {args.on}", quiet=args.json):
        if args.on == "kubernetes":
            run: Run = start_service_k8s(spec, members, engine=engine, kubeconfig=args.kubeconfig, image=args.image)
        else:
            run = start_service(spec, members, engine, image=args.image)
    described = {**run.describe(), "seconds": round(time.monotonic() - started, 1)}
    lines = [
        f"run {run.run_id}: {run.mode} ready in {described['seconds']} s",
        f"  endpoints: {' '.join(run.endpoints)}",
        *(f"  {n['name']:18} {n['ip']}" for n in described["nodes"]),
        f"stop it with: modematrix down {run.run_id}",
    ]
    emit(args, described, "\n".join(lines))
    return EXIT_OK


def _up(args: argparse.Namespace) -> int:
    if args.service:
        if args.mode:
            raise UsageError("up: a mode or --service FILE, not both")
        return _up_service(args)
    if not args.mode:
        raise UsageError(f"up: which mode? one of {', '.join(targets.modes())}, a mode .yaml, or --service FILE")
    if args.members is not None or args.on != "containers":
        raise UsageError("--members, --on: only with --service")
    started = time.monotonic()
    layout = targets.spec_of(args.mode)  # bad input is refused before anything starts
    with step(f"starting {layout.mode if args.mode.endswith(('.yaml', '.yml')) else args.mode}", quiet=args.json):
        run = targets.start(args.mode, _options(args, quiet=args.json))
    described = {**run.describe(), "seconds": round(time.monotonic() - started, 1)}
    lines = [
        f"run {run.run_id}: {run.mode} ready in {described['seconds']} s",
        f"  endpoints: {' '.join(run.endpoints)}",
        f"  CA:        {run.ca_file}",
        f"  admin:     admin / {run.admin.password}",
        *(
            f"  {n['name']:18} {n['ip']:15} {', '.join(n.get('services', [n.get('role', '')]))}"
            for n in described["nodes"]
        ),
        f"stop it with: modematrix down {run.run_id}",
    ]
    emit(args, described, "\n".join(lines))
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    if args.run_id:
        report = targets.attach(args.run_id, args.engine).status()
        emit(args, report, _status_text(report))
        return EXIT_OK
    rows = _runs(args.engine)
    text = (
        "\n".join(f"{r['run_id']}  {r['mode']:15} {r['target']:11} {r['state']}" for r in rows) or "no modematrix runs"
    )
    emit(args, rows, text)
    return EXIT_OK


def _runs(engine_name: str) -> list[dict[str, Any]]:
    """Every run: the recorded ones, and containers labelled with a run this machine has no
    record of (left by a run whose folder went away)."""
    engine = engines.get(engine_name, reaper=False)
    by_run: dict[str, list[str]] = {}
    for handle in engine.list_run(None):
        by_run.setdefault(handle.labels.get(LABEL_RUN, "?"), []).append(engine.state(handle))
    rows, shared = [], set()
    for record in recorded():
        cluster = str(record.details.get("cluster_run", record.run_id))  # a cluster of another run's
        states = by_run.pop(record.run_id, []) if cluster == record.run_id else by_run.get(cluster, [])
        state = f"{states.count('running')}/{len(states)} containers running" if states else "no containers"
        if cluster != record.run_id:
            shared.add(cluster)
            state = f"namespace {record.details.get('namespace')} on cluster {cluster}: {state}"
        if record.target == kubernetes.TARGET and not record.details.get("built"):
            state = f"namespace {record.details.get('namespace')} of {record.details.get('kubeconfig')}"
        rows.append({"run_id": record.run_id, "mode": record.mode, "target": record.target, "state": state})
    for run_id, states in sorted((r, s) for r, s in by_run.items() if r not in shared):
        rows.append(
            {"run_id": run_id, "mode": "?", "target": "?", "state": f"{len(states)} containers, no record (down it)"}
        )
    listed = shared | {row["run_id"] for row in rows}
    for folder in sorted(runs_root().iterdir()) if runs_root().is_dir() else []:
        if folder.is_dir() and folder.name not in listed:  # its process died before its record was written
            rows.append({"run_id": folder.name, "mode": "?", "target": "?", "state": "a folder, no record (down it)"})
    return rows


def _status_text(report: dict[str, Any]) -> str:
    lines = [
        f"run {report['run_id']}: {report['mode']} ({report['target']}), endpoints {' '.join(report['endpoints'])}"
    ]
    if "data_size" in report:
        lines.append(f"  data dirs: {report['data_size'] >> 20} MiB each (tmpfs; up --data-size)")
    if report.get("lazy_fs"):
        lines.append("  data dirs: on lazyfs (a kill loses unsynced writes; up --lazy-fs)")
    for node in report.get("nodes", []):
        lines.append(f"  {node['name']:18} {node['ip']:15} {node['state']:8} {','.join(node.get('services', []))}")
    for pod in report.get("pods", []):
        ready = "ready" if pod["ready"] else "not ready"
        lines.append(f"    pod {pod['name']:28} {pod['phase']:10} {ready:9} on {pod['node']}")
    for name, clusters in report.get("envoys", {}).items():
        lines.append(f"  {name}: what its Envoy routes to")
        lines += [f"    {c:10} {'; '.join(h) or '(no endpoints)'}" for c, h in sorted(clusters.items())]
    return "\n".join(lines)


def _down(args: argparse.Namespace) -> int:
    if args.kubeconfig:
        return _down_namespaces(args)
    if args.all == bool(args.run_ids):
        raise UsageError("down: expected RUN... or --all")
    engine = engines.get(args.engine, reaper=False)
    chosen = [r.run_id for r in recorded()] if args.all else list(args.run_ids)
    lines = [f"removed {run_id}: {_remove(run_id, engine)}" for run_id in chosen]
    document: dict[str, Any] = {"removed": chosen}
    if args.all:  # whatever runs left behind: containers, networks and volumes of no record
        document["unrecorded"] = swept = engine.remove_run(None)
        shutil.rmtree(runs_root(), ignore_errors=True)
        lines.append(f"removed what no record names: {_counted(swept)}")
    emit(args, document, "\n".join(lines) or "no runs")
    return EXIT_OK


def _counted(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in counts.items())


def _remove(run_id: str, engine: engines.Engine) -> str:
    """Remove one run: through its target when it can still be reached, else whatever carries
    its label; NotFound when this machine knows nothing of it. What was done, in words."""
    known = (runs_root() / run_id).exists()
    try:
        run = targets.attach(run_id, engine.name)
    except TopologyError:
        run = None
    if run is not None:
        run.stop()
        return "stopped"
    gone = engine.remove_run(run_id)
    shutil.rmtree(runs_root() / run_id, ignore_errors=True)
    if not known and not any(gone.values()):
        raise NotFound(f"no run {run_id!r}; `modematrix status` lists the runs")
    return f"swept what carries its label ({_counted(gone)})"


def _down_namespaces(args: argparse.Namespace) -> int:
    """``down NS --kubeconfig PATH``: a run's namespace in a cluster, found without a record."""
    cluster = GivenCluster.read(args.kubeconfig)
    for namespace in args.run_ids:
        owned = apply.owns(cluster.config, namespace)
        if owned is None:
            raise NotFound(f"no namespace {namespace!r} in that cluster")
        if not owned:
            raise UsageError(f"namespace {namespace!r} is not a modematrix run's; nothing removed")
    for namespace in args.run_ids:
        apply.delete_namespace(cluster.config, namespace)
        for record in recorded():  # a run of this machine in that namespace: its folder goes too
            details = record.details
            if details.get("namespace") == namespace and details.get("kubeconfig") == str(cluster.kubeconfig_path):
                shutil.rmtree(runs_root() / record.run_id, ignore_errors=True)
    emit(args, {"removed": args.run_ids}, "\n".join(f"removed namespace {n}" for n in args.run_ids))
    return EXIT_OK


def _part(run: Run, part: str | None) -> str:
    if part is None or part not in run.parts():
        raise UsageError(
            f"{'expected a PART' if part is None else f'no part {part!r}'}; parts: {', '.join(run.parts())}"
        )
    return part


def _logs(args: argparse.Namespace) -> int:
    run = targets.attach(args.run_id, args.engine)
    if args.part is None:
        print("\n".join(run.parts()))
        return EXIT_OK
    part = _part(run, args.part)
    if not args.follow:
        sys.stdout.write(run.logs(part, tail=args.tail))
        return EXIT_OK
    for line in run.follow(part, tail=args.tail):
        sys.stdout.write(line)
        sys.stdout.flush()
    return EXIT_OK


def _exec(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise UsageError("exec: expected a command after --")
    run = targets.attach(args.run_id, args.engine)
    code, out = run.exec(_part(run, args.part), command)
    sys.stdout.write(out)
    return code


def _kubeconfig(args: argparse.Namespace) -> int:
    run = targets.attach(args.run_id, args.engine)
    if not isinstance(run, KubeRun):
        raise UsageError(f"run {args.run_id} is {run.mode} on containers: it has no kubeconfig")
    print(run.kubeconfig)
    if isinstance(run.cluster, NodeCluster):
        say(f"kubectl: {run.cluster.kubectl_path} --kubeconfig {run.kubeconfig} get pods -n {run.namespace}")
    return EXIT_OK

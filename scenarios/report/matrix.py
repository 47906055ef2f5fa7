"""``modematrix matrix``: every chosen mode against every check, one results folder, one page.

    modematrix matrix --modes single,ha --quick          # a subset that finishes in minutes
    modematrix matrix --modes single,ha,scaled           # everything
    modematrix matrix --service topologies/services/etcd.yaml   # a service file's service

Each cell (mode x check) runs as its own process, exactly as a user would run it: pytest for
the functional and failover scenarios, locust for the load test, ``modematrix bench``. A
container mode's cell starts a run of its own; a Kubernetes mode's cells share one run (a
cluster is built once), started before them and removed after, handed to each as a user
hands one (``pytest --run``, ``locust --cluster-json``, ``bench --run``). Its
artifacts and log go to ``results/<run-id>/<mode>/<check>/``; ``matrix.json`` is rewritten
after every cell, and the report page is built at the end (``results/<run-id>/report/`` and
``results/report/``). The exit code is 0 only if every cell passed.

With ``--service FILE`` the modes are the service's sizes (``etcd-1``, ``etcd-3``,
``etcd-5``): functional and failover are ``scenarios/test_service.py`` with ``--service``,
load is the locustfile the file names; bench measures the runtime's API, so it is n/a. A
size on Kubernetes (``etcd-3-k8s``) is one run its cells share, as a Kubernetes mode's are:
pytest and the locustfile get ``--run RUN``; on Docker they get ``--service FILE --members N``
and start their own.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from images import ImageError, golang
from images.progress import step
from scenarios.report import page
from scenarios.report.results import MATRIX_FILE
from topologies import UsageError, engines, service, targets
from topologies.cli.common import example
from topologies.containers import TARGET as CONTAINERS
from topologies.containers.service import image_of
from topologies.engines import Engine
from topologies.kubernetes import TARGET as KUBERNETES
from topologies.kubernetes import NodeCluster
from topologies.kubernetes.service import build_cluster, start_service_k8s
from topologies.run import Run
from topologies.runs import new_run_id, run_dir

ROOT = Path(__file__).resolve().parents[2]
CHECKS = ("functional", "failover", "load", "bench")
QUICK_SCENARIOS = {CONTAINERS: "kill-leader or partition-one", KUBERNETES: "delete-an-etcd-pod or delete-an-envoy-pod"}
# scenarios on a run of their own (--data-size, --lazy-fs): a full failover cell runs them too;
# each module picks the modes it applies to (single and ha) and has nothing for the others
OWN_RUN_SCENARIOS = ("test_full_disk.py", "test_lazy_fs.py")
# seconds a cell takes, for the first ETA; replaced by what the run measures
GUESS = {"functional": 40.0, "failover": 320.0, "load": 80.0, "bench": 110.0}
QUICK_GUESS = {"functional": 40.0, "failover": 90.0, "load": 45.0, "bench": 50.0}


@dataclass(frozen=True)
class Cell:
    mode: str
    check: str
    status: str = "pending"  # pass, fail, n/a (the check does not apply to the mode), pending
    seconds: float = 0.0
    log: str = ""
    reason: str = ""


def plan(modes: Sequence[str], checks: Sequence[str]) -> list[Cell]:
    """The cells, in the order they run; a check that does not apply to a mode is n/a.

    >>> [(c.mode, c.check, c.status) for c in plan(["single"], ["functional", "failover"])]
    [('single', 'functional', 'pending'), ('single', 'failover', 'n/a')]
    """
    cells = []
    for mode in modes:
        for check in checks:
            missing = bench_missing() if check == "bench" else None
            if check == "failover" and targets.spec_of(mode).db != "etcd":
                cells.append(Cell(mode, check, "n/a", reason="no replicated DB: nothing to fail over to"))
            elif missing:
                cells.append(Cell(mode, check, "n/a", reason=f"this machine lacks {missing}"))
            else:
                cells.append(Cell(mode, check))
    return cells


@dataclass(frozen=True)
class ServiceCells:
    """A service file's matrix: its file, the sizes whose runs are the modes on Docker
    (``etcd-3``), and those on a Kubernetes cluster built here (``etcd-3-k8s``)."""

    file: Path
    spec: service.ServiceSpec
    sizes: tuple[int, ...]
    k8s_sizes: tuple[int, ...] = ()

    @property
    def modes(self) -> list[str]:
        return [f"{self.spec.name}-{n}" for n in self.sizes] + [f"{self.spec.name}-{n}-k8s" for n in self.k8s_sizes]

    def members(self, mode: str) -> int:
        return int(mode.removesuffix("-k8s").rsplit("-", 1)[1])

    def on(self, mode: str) -> str:
        return KUBERNETES if mode.endswith("-k8s") else CONTAINERS


def plan_service(chosen: ServiceCells, checks: Sequence[str]) -> list[Cell]:
    """A service's cells: functional, failover, load per size; bench is the runtime's.

    >>> etcd = ServiceCells(Path("etcd.yaml"), service.load("etcd"), (1,), (3,))
    >>> [(c.mode, c.check, c.status) for c in plan_service(etcd, ["failover", "bench"])]
    [('etcd-1', 'failover', 'pending'), ('etcd-1', 'bench', 'n/a'), ('etcd-3-k8s', 'failover', 'pending'), \
('etcd-3-k8s', 'bench', 'n/a')]
    """
    cells = []
    for mode in chosen.modes:
        for check in checks:
            if check == "bench":
                cells.append(Cell(mode, check, "n/a", reason="bench measures the runtime's API"))
            elif check == "load" and not chosen.spec.locustfile:
                cells.append(Cell(mode, check, "n/a", reason="its service file names no locustfile"))
            else:
                cells.append(Cell(mode, check))
    return cells


def service_argv(
    cell: Cell, folder: Path, chosen: ServiceCells, *, quick: bool, shared: Path | None = None
) -> list[str]:
    """The command that runs one cell of a service's matrix (pure); with ``shared`` (the
    described run its size's cells share), against that run.

    >>> etcd = ServiceCells(Path("etcd.yaml"), service.load("etcd"), (), (3,))
    >>> shared = Path("/runs/r-1a2b3c4d/matrix-run.json")
    >>> service_argv(Cell("etcd-3-k8s", "load"), Path("/r"), etcd, quick=True, shared=shared)[-2:]
    ['--run', 'r-1a2b3c4d']
    """
    python = sys.executable
    members = str(chosen.members(cell.mode))
    given = (
        ["--run", _run_id(shared)]
        if shared
        else ["--service", str(chosen.file.resolve()), "--members", members, "--on", chosen.on(cell.mode)]
    )
    pytest = [python, "-m", "pytest", "-p", "no:cacheprovider", "--junitxml", str(folder / "junit.xml")]
    test = str(ROOT / "scenarios" / "test_service.py")
    if cell.check == "functional":
        return [*pytest, test, *given, "-m", "not failover"]
    if cell.check == "failover":
        picked = (
            "delete-the-leader-pod or kill-a-worker"
            if chosen.on(cell.mode) == KUBERNETES
            else "kill-leader or partition-leader"
        )
        short = ["--cycles", "1", "-k", picked] if quick else []
        return [*pytest, test, *given, "-m", "failover", "--results", str(folder), *short]
    if cell.check == "load":
        locustfile = str(ROOT / str(chosen.spec.locustfile))
        users = ["-u", "10", "-r", "10", "-t", "15s" if quick else "45s"]
        reports = ["--csv", str(folder / "load"), "--html", str(folder / "load.html")]
        return [python, "-m", "locust", "-f", locustfile, "--headless", *users, *reports, *given]
    raise ValueError(f"no check {cell.check!r} for a service; expected functional, failover or load")


def bench_missing() -> str | None:
    """What the bench needs and this machine lacks (wrk and taskset pin the load generator;
    Go builds the gRPC and etcd load generators), or None."""
    lacking = [tool for tool in ("wrk", "taskset") if shutil.which(tool) is None]
    try:
        golang.go()
    except ImageError:
        lacking.append("go")
    return ", ".join(lacking) or None


def argv(cell: Cell, folder: Path, *, quick: bool, shared: Path | None = None) -> list[str]:
    """The command that runs one cell, writing its artifacts into ``folder`` (pure); with
    ``shared`` (the described run its mode's cells share, as JSON), against that run.

    >>> argv(Cell("k8s", "functional"), Path("/r"), quick=True, shared=Path("/runs/r-1a2b3c4d/matrix-run.json"))[-2:]
    ['--run', 'r-1a2b3c4d']
    """
    python = sys.executable
    pytest = [python, "-m", "pytest", "-p", "no:cacheprovider", "--junitxml", str(folder / "junit.xml")]
    shared_id = _run_id(shared) if shared else None
    which = ["--run", shared_id] if shared_id else ["--mode", cell.mode]
    if cell.check == "functional":
        return [*pytest, str(ROOT / "scenarios" / "test_functional.py"), *which]
    if cell.check == "failover":
        files = [str(ROOT / "scenarios" / "test_failover.py")]
        if quick:
            return [
                *pytest,
                *files,
                "--results",
                str(folder),
                *which,
                "--cycles",
                "1",
                "-k",
                QUICK_SCENARIOS[targets.target_of(cell.mode)],
            ]
        files += [str(ROOT / "scenarios" / name) for name in OWN_RUN_SCENARIOS]
        return [*pytest, *files, "--results", str(folder), *which]
    if cell.check == "load":
        locustfile = str(ROOT / "loadtests" / f"{cell.mode}.py")
        users = ["-u", "10", "-r", "10", "-t", "15s" if quick else "45s"]
        reports = ["--csv", str(folder / "load"), "--html", str(folder / "load.html")]
        given = ["--cluster-json", str(shared)] if shared else []
        return [python, "-m", "locust", "-f", locustfile, "--headless", *users, *reports, *given]
    if cell.check == "bench":
        seconds = "2" if quick else "8"
        return [
            python,
            "-m",
            "topologies.cli",
            "bench",
            "--mode",
            cell.mode,
            "--seconds",
            seconds,
            "--results",
            str(folder),
            *(["--run", shared_id] if shared_id else []),
        ]
    raise ValueError(f"no check {cell.check!r}; expected one of {', '.join(CHECKS)}")


def _run_id(described: Path) -> str:
    """The run id of a described run (``up --json``'s document); a doctest's path is an example."""
    if not described.exists():
        return "r-1a2b3c4d"
    return str(json.loads(described.read_text())["run_id"])


def run_cell(
    cell: Cell, root: Path, *, quick: bool, shared: Path | None = None, chosen: ServiceCells | None = None
) -> Cell:
    folder = root / cell.mode / cell.check
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "log.txt"
    started = time.monotonic()
    command = (
        service_argv(cell, folder, chosen, quick=quick, shared=shared)
        if chosen
        else argv(cell, folder, quick=quick, shared=shared)
    )
    with log.open("w") as out:
        done = subprocess.run(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=folder,
            timeout=3600,
        )
    status = "pass" if done.returncode == 0 else "fail"
    return Cell(cell.mode, cell.check, status, round(time.monotonic() - started, 1), str(log.relative_to(root)))


class Progress:
    """Elapsed time and an ETA: each cell is guessed as long as the same mode and check took
    in the last matrix of this kind (quick or not) under ``results``, else as long as its kind
    of check took last in this run, else a default. One plain line per finished cell (what CI
    keeps)."""

    def __init__(self, cells: Sequence[Cell], quick: bool, results: Path | None = None) -> None:
        self.todo = [c for c in cells if c.status == "pending"]
        self.guess = dict(QUICK_GUESS if quick else GUESS)
        self.seen = seen_before(results, quick) if results else {}
        self.started = time.monotonic()
        self.done = 0

    def eta(self) -> float:
        return sum(self.seen.get((c.mode, c.check), self.guess[c.check]) for c in self.todo[self.done :])

    def finished(self, cell: Cell) -> str:
        self.guess[cell.check] = cell.seconds
        self.done += 1
        elapsed = time.monotonic() - self.started
        return (
            f"[{self.done}/{len(self.todo)}] {cell.mode} {cell.check}: {cell.status} in {cell.seconds:.0f} s "
            f"(elapsed {_clock(elapsed)}, eta {_clock(self.eta())})"
        )


def seen_before(results: Path, quick: bool) -> dict[tuple[str, str], float]:
    """How long each (mode, check) took to pass in the matrices under ``results`` run as
    ``quick`` (the newest that ran it wins); a file that cannot be read is passed over."""
    seen: dict[tuple[str, str], float] = {}
    for path in sorted(results.glob(f"*/{MATRIX_FILE}")):  # run ids sort by their start
        try:
            document = json.loads(path.read_text())
            passed = [c for c in document["cells"] if c["status"] == "pass"] if document.get("quick") == quick else []
            seen |= {(c["mode"], c["check"]): float(c["seconds"]) for c in passed}
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return seen


def _clock(seconds: float) -> str:
    return f"{int(seconds) // 60}m{int(seconds) % 60:02d}s"


def run(
    modes: Sequence[str],
    checks: Sequence[str],
    *,
    quick: bool,
    results: Path,
    quiet: bool = False,
    chosen: ServiceCells | None = None,
) -> tuple[Path, Path, bool]:
    """Run the cells; with ``chosen``, a service's (its sizes are the modes, ``modes`` unused)."""
    run_id = f"{datetime.datetime.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:4]}"
    root = (results / run_id).resolve()  # absolute: each cell runs with its own folder as cwd
    root.mkdir(parents=True, exist_ok=True)
    cells = plan_service(chosen, checks) if chosen else plan(modes, checks)
    modes = chosen.modes if chosen else modes
    progress = Progress(cells, quick, results)
    meta: dict[str, object] = {"run_id": run_id, "started": datetime.datetime.now().isoformat(timespec="seconds")}
    meta |= {"modes": list(modes), "checks": list(checks), "quick": quick}
    if chosen:
        meta["service"] = {"file": str(chosen.file), **chosen.spec.to_dict()}
    out = sys.stderr if quiet else sys.stdout  # with --json, stdout is the summary alone
    print(f"matrix {run_id}: {len(progress.todo)} cells, about {_clock(progress.eta())}; results in {root}", file=out)
    shared: dict[str, tuple[Run, Path] | str] = {}  # a Kubernetes mode's run, or why it did not start
    cluster = SharedCluster()  # the one a service's Kubernetes sizes share, once one needs it
    try:
        for index, cell in enumerate(cells):
            if cell.status == "pending":
                given = _shared(cell.mode, shared, quiet=quiet, chosen=chosen, cluster=cluster)
                with step(f"{cell.mode} {cell.check} (eta {_clock(progress.eta())})", quiet=quiet):
                    if isinstance(given, str):
                        cells[index] = Cell(cell.mode, cell.check, "fail", reason=given)
                    else:
                        cells[index] = run_cell(
                            cell, root, quick=quick, shared=given[1] if given else None, chosen=chosen
                        )
                print(progress.finished(cells[index]), file=out, flush=True)
            _write(root, meta, cells)
            _release(cell.mode, cells[index + 1 :], shared)
    finally:
        for mode in list(shared):
            _release(mode, [], shared)
        cluster.stop()
    page_path = page.build(root, also=results / "report")
    passed = all(c.status in ("pass", "n/a") for c in cells)
    verdict = "all passed" if passed else "FAILED"
    print(f"report: {page_path} (also {results / 'report' / 'index.html'}); {verdict}", file=out)
    return root, page_path, passed


class SharedCluster:
    """The cluster built here that a service's Kubernetes sizes share, each in a namespace of
    its own (one cluster start, about 30 s here, instead of one per size); built at the first
    size's first cell, removed at the matrix's end, by the reaper if the matrix dies."""

    def __init__(self) -> None:
        self.built: NodeCluster | None = None

    def get(self, chosen: ServiceCells, engine: Engine) -> NodeCluster:
        if self.built is None:
            cluster_id = new_run_id()
            image = image_of(chosen.spec, engine)
            self.built = build_cluster(cluster_id, run_dir(cluster_id) / "cluster", engine, image)
        return self.built

    def stop(self) -> None:
        if self.built is not None:
            self.built.stop()
            shutil.rmtree(self.built.workdir.parent, ignore_errors=True)
            self.built = None


def _shared(
    mode: str,
    shared: dict[str, tuple[Run, Path] | str],
    *,
    quiet: bool,
    chosen: ServiceCells | None = None,
    cluster: SharedCluster,
) -> tuple[Run, Path] | str | None:
    """The run a Kubernetes mode's cells share (with ``chosen``, a service's size on the
    cluster its sizes share), started at its first cell (None: a container mode, whose cells
    start their own); a str says why it did not start."""
    if (chosen.on(mode) if chosen else targets.target_of(mode)) != KUBERNETES:
        return None
    if mode not in shared:
        with step(f"{mode}: starting the run its cells share", quiet=quiet):
            try:
                if chosen:
                    engine = engines.get()
                    on = cluster.get(chosen, engine)
                    started: Run = start_service_k8s(chosen.spec, chosen.members(mode), engine=engine, on=on)
                else:
                    started = targets.start(mode, targets.Options(quiet=quiet))
            except Exception as exc:  # every cell of the mode fails with this reason
                shared[mode] = f"the {mode} run did not start: {exc}"
                return shared[mode]
        # in the run's own folder (0700), not the results: the document carries its admin password
        described = started.workdir / "matrix-run.json"
        described.touch(mode=0o600)
        described.write_text(json.dumps(started.describe(), indent=2))
        shared[mode] = (started, described)
    return shared[mode]


def _release(mode: str, rest: Sequence[Cell], shared: dict[str, tuple[Run, Path] | str]) -> None:
    """Remove a mode's shared run once none of ``rest`` needs it."""
    given = shared.get(mode)
    if given is None or any(c.mode == mode and c.status == "pending" for c in rest):
        return
    del shared[mode]
    if not isinstance(given, str):
        given[0].stop()


def _write(root: Path, meta: dict[str, object], cells: Sequence[Cell]) -> None:
    (root / MATRIX_FILE).write_text(json.dumps({**meta, "cells": [asdict(c) for c in cells]}, indent=2))


# -- the `modematrix matrix` subcommand ------------------------------------------------------------


def command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Registered through the ``modematrix.commands`` entry point group."""
    parser = sub.add_parser(
        "matrix",
        help="run modes x checks, write results/<run-id>/ and the report page",
        epilog=example("modematrix matrix --quick --open", "modematrix matrix --modes single,ha --checks functional"),
    )
    parser.add_argument(
        "--modes",
        default=",".join(targets.modes(CONTAINERS)),
        help=f"comma-separated, of {', '.join(targets.modes())} (default: the container modes, %(default)s)",
    )
    parser.add_argument("--checks", default=",".join(CHECKS), help="comma-separated (default %(default)s)")
    parser.add_argument(
        "--service",
        type=Path,
        metavar="FILE",
        help="a service file (topologies/services/etcd.yaml, or yours) instead of the runtime's modes",
    )
    parser.add_argument(
        "--members", default="", metavar="N,...", help="with --service: its sizes (default: every size it allows)"
    )
    parser.add_argument(
        "--k8s-members",
        default="",
        metavar="N,...",
        help="with --service: these sizes on a Kubernetes cluster built here too (one per size, its cells share it)",
    )
    parser.add_argument("--quick", action="store_true", help="two failover scenarios, one cycle each; short load")
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--open", action="store_true", help="open the report page in a browser at the end")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON (docs/cli.md)")
    parser.set_defaults(run=_run)


def _service_cells(file: Path, members: str, k8s_members: str) -> ServiceCells:
    """``--service``, ``--members`` and ``--k8s-members``: a wrong file or size is a
    UsageError (exit 2, one line)."""
    spec = service.load(file)
    docker = spec.sizes_from(members, "--members") or spec.sizes
    return ServiceCells(file, spec, docker, spec.sizes_from(k8s_members, "--k8s-members"))


def _run(args: argparse.Namespace) -> int:
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    checks = [c.strip() for c in args.checks.split(",") if c.strip()]
    bad_modes = [m for m in modes if m not in targets.modes()]
    bad_checks = [c for c in checks if c not in CHECKS]
    if not modes or bad_modes:
        raise UsageError(f"--modes: expected some of {', '.join(targets.modes())}, got {args.modes!r}")
    if not checks or bad_checks:
        raise UsageError(f"--checks: expected some of {', '.join(CHECKS)}, got {args.checks!r}")
    chosen = _service_cells(args.service, args.members, args.k8s_members) if args.service else None
    if (args.members or args.k8s_members) and not chosen:
        raise UsageError("--members, --k8s-members: only with --service")
    root, page_path, passed = run(modes, checks, quick=args.quick, results=args.results, quiet=args.json, chosen=chosen)
    if args.json:
        summary = json.loads((root / MATRIX_FILE).read_text())
        print(json.dumps({**summary, "results": str(root), "report": str(page_path), "passed": passed}, indent=2))
    if args.open:
        import webbrowser

        webbrowser.open(page_path.resolve().as_uri())
    return 0 if passed else 1

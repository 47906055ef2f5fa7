"""The one table of modes and the targets they run on: the only place that names one.

==================  ==============  ==============================================
mode                target          layout
==================  ==============  ==============================================
single, ha, ...     containers      its mode file (``topologies/modes/*.yaml``)
k8s                 kubernetes      the ``scaled`` mode's nodes, as workloads
==================  ==============  ==============================================

Every list of modes (help texts, errors, ``matrix --modes``, ``bench --mode``, pytest's
``--mode`` and markers) comes from :func:`modes`; starting, finding, scaling and breaking a
run go through the functions here, which hand it to its target.

    run = targets.start("ha")                    # a ContainerRun, ready
    run = targets.attach("r-1a2b3c4d")           # the same run, from another process
    targets.scale(run, {"kv": 3})
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from topologies import containers, engines, kubernetes, spec
from topologies.containers import faults as container_faults
from topologies.containers import scale as container_scale
from topologies.containers.run import ContainerRun
from topologies.exceptions import NotFound, UsageError
from topologies.kubernetes import faults as kubernetes_faults
from topologies.kubernetes.run import KubeRun
from topologies.run import Run
from topologies.runs import RunRecord

KUBERNETES_MODES = {"k8s": "scaled"}  # mode -> the mode file whose nodes it deploys as workloads
# a data dir smaller than 16 MiB cannot hold a node's TLS files and a fresh DB; over 64 GiB
# of tmpfs is memory a machine like this one does not have
MIN_DATA_SIZE, MAX_DATA_SIZE = 16 << 20, 64 << 30
DEFAULT_TIMEOUT = {containers.TARGET: 180.0, kubernetes.TARGET: 400.0}  # seconds; a cluster built here starts first

Report = Callable[[str], None]


def _quiet(line: str) -> None:
    pass


@dataclass(frozen=True)
class Options:
    """How to start a run, whatever its target; each target uses what applies to it and the
    CLI refuses (exit 2) what does not (:func:`refused`)."""

    engine: str = "docker"
    reaper: bool = True
    image: str | None = None
    timeout: float | None = None  # until every part is ready; None: the target's own (DEFAULT_TIMEOUT)
    quiet: bool = True
    env: Mapping[str, str] | None = None
    cpuset: str | None = None
    kubeconfig: str | None = None
    namespace: str | None = None
    image_registry: str | None = None
    workers: int = 3
    control_planes: int = 1  # a cluster built here: 1, or 3 behind a balancer
    expose: str | None = None  # how the front door is reached from here; None: port-forward
    evict_after: int | None = None  # seconds a dead node's pods stay bound to it; None: 10
    data_size: int | None = None  # bytes: each node's data dir a file system this small (containers)
    lazy_fs: bool = False  # each node's data dir on lazyfs: a kill loses what no fsync covered (containers)
    report: Report = _quiet


def modes(target: str | None = None) -> list[str]:
    """Every mode (the mode files, then the Kubernetes ones), or those of one target
    (``containers``, ``kubernetes``)."""
    every = [*spec.available(), *KUBERNETES_MODES]
    return [m for m in every if target is None or target_of(m) == target]


def targets() -> list[str]:
    return [containers.TARGET, kubernetes.TARGET]


def kubernetes_modes() -> list[str]:
    return list(KUBERNETES_MODES)


def target_of(mode: str) -> str:
    return kubernetes.TARGET if mode in KUBERNETES_MODES else containers.TARGET


def pinnable(mode: str) -> bool:
    """Whether a mode's servers can be pinned to host cores (``cpuset``). Not a Kubernetes
    mode's: a kubelet in a node container narrower than the machine fails ("failed to write
    0-1: .../cpuset/kubelet/kubepods/cpuset.cpus: permission denied") and its node stops."""
    return target_of(mode) != kubernetes.TARGET


def spec_of(mode: str | Path) -> spec.ModeSpec:
    """The layout a mode runs: its file, or for a Kubernetes mode the file it deploys."""
    name = str(mode)
    try:
        return spec.load(KUBERNETES_MODES.get(name, name))
    except NotFound:
        if name.endswith((".yaml", ".yml")):
            raise
        raise NotFound(f"no mode {name!r}; expected one of {', '.join(modes())} or a path to a .yaml file") from None


def refused(mode: str, options: Options) -> str | None:
    """Why ``options`` do not apply to ``mode`` (a flag the user gave that would be ignored)."""
    if options.data_size is not None and not MIN_DATA_SIZE <= options.data_size <= MAX_DATA_SIZE:
        limits = f"{MIN_DATA_SIZE >> 20} MiB to {MAX_DATA_SIZE >> 30} GiB"
        return f"--data-size: expected {limits}, got {options.data_size} bytes"
    if target_of(mode) == containers.TARGET:
        given = {
            "--kubeconfig": options.kubeconfig,
            "--namespace": options.namespace,
            "--image-registry": options.image_registry,
            "--workers": options.workers != Options.workers,
            "--control-planes": options.control_planes != Options.control_planes,
            "--expose": options.expose,
            "--evict-after": options.evict_after is not None,
        }
        wrong = [flag for flag, value in given.items() if value]
        return (
            f"{', '.join(wrong)} apply to the Kubernetes modes only ({', '.join(KUBERNETES_MODES)})" if wrong else None
        )
    if options.data_size is not None:
        return "--data-size applies to the container modes (a pod's volume is its cluster's)"
    if options.lazy_fs:
        return "--lazy-fs applies to the container modes (a pod's volume is its cluster's)"
    if options.workers < 2:
        return f"--workers: expected 2 or more, got {options.workers}"
    if options.evict_after is not None and not 0 <= options.evict_after <= kubernetes.MAX_EVICT_AFTER_S:
        return f"--evict-after: expected 0 to {kubernetes.MAX_EVICT_AFTER_S} seconds, got {options.evict_after}"
    if options.kubeconfig and options.workers != Options.workers:
        return "--workers applies to a cluster built here, not to one given by --kubeconfig"
    if options.kubeconfig and options.control_planes != Options.control_planes:
        return "--control-planes applies to a cluster built here, not to one given by --kubeconfig"
    if options.control_planes not in (1, 3):
        return f"--control-planes: expected 1 or 3 (an etcd quorum), got {options.control_planes}"
    if not options.kubeconfig and options.namespace:
        return "--namespace applies to a cluster given by --kubeconfig (a cluster built here uses the run's id)"
    return None


def start(mode: str | Path, options: Options = Options()) -> Run:
    """Start ``mode`` (a name, or a path to a mode file) and return the ready run."""
    name = str(mode)
    layout = spec_of(mode)
    reason = refused(layout.mode if name.endswith((".yaml", ".yml")) else name, options)
    if reason:
        raise UsageError(reason)
    timeout = options.timeout if options.timeout is not None else DEFAULT_TIMEOUT[target_of(name)]
    if timeout <= 0:
        raise UsageError(f"--timeout: expected seconds above 0, got {timeout:g}")
    if target_of(name) == kubernetes.TARGET:
        engine = None if options.kubeconfig else engines.get(options.engine, reaper=options.reaper)
        return kubernetes.start(
            layout,
            name,
            engine=engine,
            kubeconfig=options.kubeconfig,
            namespace=options.namespace,
            image=options.image,
            image_registry=options.image_registry,
            workers=options.workers,
            control_planes=options.control_planes,
            expose=options.expose,
            evict_after=kubernetes.EVICT_AFTER_S if options.evict_after is None else options.evict_after,
            timeout=timeout,
            report=options.report,
            cpuset=options.cpuset,
        )
    engine = engines.get(options.engine, reaper=options.reaper)
    return containers.start(
        layout,
        engine,
        image=options.image,
        timeout=timeout,
        quiet=options.quiet,
        env=options.env,
        cpuset=options.cpuset,
        data_size=options.data_size,
        lazy_fs=options.lazy_fs,
    )


def attach(run_id: str, engine: str = "docker") -> Run:
    """The run ``run_id`` started on this machine (by any process), from its record."""
    record = RunRecord.read(run_id)
    if record.target == kubernetes.TARGET:
        built = bool(record.details.get("built"))
        return kubernetes.attach(record, engines.get(engine, reaper=False) if built else None)
    if record.target == containers.TARGET:
        return containers.attach(record, engines.get(str(record.details.get("engine", engine)), reaper=False))
    raise NotFound(f"run {run_id}: unknown target {record.target!r} in its record")


def scale(run: Run, counts: Mapping[str, int]) -> str:
    """``modematrix scale``: nodes started or drained on containers; ``kubectl scale`` on
    Kubernetes. UsageError (exit 2) before anything changes for bad input. What was done."""
    if isinstance(run, ContainerRun):
        done = container_scale.apply(run, counts)
        added, removed = ", ".join(n.name for n in done.add) or "none", ", ".join(done.remove) or "none"
        return f"added {added}; drained and removed {removed}"
    if isinstance(run, KubeRun):
        before = kubernetes.scale(run, counts)
        return "; ".join(f"deployment/{s}: {before[s]} -> {n} replicas" for s, n in counts.items())
    raise UsageError(f"run {run.run_id}: its target cannot scale")


def inject(run: Run, action: str, target: str) -> str:
    """``modematrix fault RUN ACTION TARGET``: apply one fault by name (healed later with
    ``modematrix fault RUN heal``); UsageError for one its target does not know. Its name."""
    if isinstance(run, ContainerRun):
        on_containers = container_faults.named(action, target, run)
        reason = on_containers.applies_to(run)
        if reason:
            raise UsageError(f"{on_containers.name}: {reason}")
        on_containers.apply(run)
        return on_containers.name
    if isinstance(run, KubeRun):
        on_kubernetes = kubernetes_faults.named(action, target, run)
        reason = on_kubernetes.applies_to(run)
        if reason:
            raise UsageError(f"{on_kubernetes.name}: {reason}")
        on_kubernetes.apply(run)
        return on_kubernetes.name
    raise UsageError(f"run {run.run_id}: its target has no faults")


def heal_all(run: Run) -> None:
    """``modematrix fault RUN heal``: undo every fault of the run, whichever process applied it
    (a removed DB member is replaced: a restart would not bring it back)."""
    if isinstance(run, ContainerRun):
        container_faults.heal_replaced(run)
    run.heal_all()
    if isinstance(run, KubeRun):  # after the nodes, whose pods must answer exec and port-forward
        kubernetes_faults.heal_replaced(run)
        kubernetes_faults.heal_clocks(run)


def fault_actions(mode: str) -> list[str]:
    """The faults ``modematrix fault`` knows for a mode's target."""
    if target_of(mode) == kubernetes.TARGET:
        return list(kubernetes_faults.ACTIONS)
    return list(container_faults.BY_NAME)

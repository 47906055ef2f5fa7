"""Target 2: a mode as objects in a namespace of a Kubernetes cluster, given a kubeconfig.

    run = kubernetes.start(spec, "k8s", kubeconfig="~/.kube/config")     # a cluster the user has
    run = kubernetes.start(spec, "k8s", engine=engines.get("docker"))     # one built here first
    run = kubernetes.attach(RunRecord.read(run_id), engine)                # the same run, later

``manifests`` decides (pure), ``apply`` puts them in, ``run`` is the deployed mode (one deploy
path for both kinds of cluster), ``faults`` break it, ``clusters`` say where the kubeconfig
comes from.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from images import envoy_image
from runtime.config import parse_kubernetes_name
from topologies.engines import Engine
from topologies.exceptions import UsageError
from topologies.kubernetes import apply, forward
from topologies.kubernetes.clusters import Cluster, GivenCluster, NodeCluster
from topologies.kubernetes.clusters.layout import CONTROL_PLANE_COUNTS
from topologies.kubernetes.manifests import EVICT_AFTER_S, EXPOSURES, MAX_EVICT_AFTER_S, Ingress
from topologies.kubernetes.run import TARGET, KubeRun, built_here_details, deploy, scale
from topologies.runs import RunRecord, Secrets, new_run_id, run_dir
from topologies.spec import ModeSpec, parse

Report = Callable[[str], None]


def _quiet(line: str) -> None:
    pass


def start(
    spec: ModeSpec,
    mode: str,
    *,
    engine: Engine | None = None,
    kubeconfig: str | Path | None = None,
    namespace: str | None = None,
    image: str | None = None,
    image_registry: str | None = None,
    workers: int = 3,
    control_planes: int = 1,
    expose: str | None = None,
    evict_after: int = EVICT_AFTER_S,
    timeout: float = 400,
    report: Report = _quiet,
    cpuset: str | None = None,
) -> KubeRun:
    """The mode ``mode`` (laid out as ``spec``) on a cluster the user has (``kubeconfig``), or
    on one built here on ``engine``, its front door reached as ``expose`` says (default
    ``port-forward``, the same on both); a dead node's pods move after ``evict_after`` seconds
    (plus the node monitor's grace period); everything it makes is removed again if it fails."""
    if kubeconfig is None and engine is None:
        raise UsageError("the k8s mode needs a cluster: --kubeconfig PATH, or an engine to build one on")
    if kubeconfig is None and workers < 2:
        raise UsageError(f"--workers: expected 2 or more, got {workers}")
    if control_planes not in CONTROL_PLANE_COUNTS:
        raise UsageError(f"--control-planes: expected 1 or 3, got {control_planes}")
    expose = expose or EXPOSURES[0]
    if expose not in EXPOSURES:
        raise UsageError(f"--expose: expected one of {', '.join(EXPOSURES)}, got {expose!r}")
    if not 0 <= evict_after <= MAX_EVICT_AFTER_S:
        raise UsageError(f"--evict-after: expected 0 to {MAX_EVICT_AFTER_S} seconds, got {evict_after}")
    run_id = new_run_id()
    namespace = _namespace(namespace or run_id)
    given = GivenCluster.read(kubeconfig) if kubeconfig is not None else None
    if given is not None and apply.owns(given.config, namespace) is False:
        raise UsageError(f"--namespace {namespace}: exists and is not a modematrix run's; choose another")
    folder, secrets = run_dir(run_id), Secrets.generate()
    cluster: Cluster | None = given
    try:
        tag = image or _image_of(engine)
        image = f"{image_registry.rstrip('/')}/{tag}" if image_registry else tag
        details: dict[str, object] = {"namespace": namespace, "image": image}
        if given is None:
            assert engine is not None
            engine.guard(image)
            built = NodeCluster.create(
                run_id,
                folder / "cluster",
                engine,
                workers=workers,
                control_planes=control_planes,
                report=report,
                cpuset=cpuset,
                preload=list(dict.fromkeys([image, envoy_image(image)])),
            )
            cluster = built
            details.update(built_here_details(built))
        else:
            details.update(built=False, kubeconfig=str(given.kubeconfig_path))
        assert cluster is not None  # given, or built just now
        ingress = Ingress(expose, tuple(cluster.node_addresses()) if expose == "nodeport" else ())
        details.update(expose=expose, evict_after=evict_after)
        record = RunRecord(run_id, mode, TARGET, spec.to_dict(), details)
        record.write(folder, secrets)
        report(f"deploying the mode into namespace {namespace}, its front door by {expose}")
        run = deploy(
            run_id, mode, spec, cluster, namespace=namespace, image=image, folder=folder, secrets=secrets,
            ingress=ingress, evict_after=evict_after, timeout=timeout,
        )  # fmt: skip
        details.update(doors=run.doors)
        record.write(folder, secrets)
        run.wait_healthy(timeout=timeout)
    except BaseException:
        forward.stop(folder)
        if isinstance(cluster, NodeCluster):
            cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return run


def _image_of(engine: Engine | None) -> str:
    if engine is None:
        raise UsageError("--image: the image to deploy onto a cluster given by --kubeconfig (or an engine to build it)")
    from topologies import service
    from topologies.containers.service import image_of

    return image_of(service.runtime(), engine)  # the runtime's file's image, as any service's


def _namespace(name: str) -> str:
    try:
        return parse_kubernetes_name(name)
    except ValueError as exc:
        raise UsageError(f"--namespace: {exc}") from None


def attach(record: RunRecord, engine: Engine | None) -> KubeRun:
    """The run of ``record``, from another process: its cluster (the kubeconfig it was given,
    or the node containers built for it) and its namespace."""
    details = record.details
    folder = run_dir(record.run_id)
    cluster: Cluster
    if details.get("built"):
        if engine is None:
            raise UsageError(f"run {record.run_id} was built on a container engine; name it (--engine)")
        cluster = NodeCluster.attach(  # its own, or another run's that it shares
            str(details.get("cluster_run", record.run_id)),
            Path(str(details.get("cluster_dir", folder / "cluster"))),
            engine,
            prefix=str(details["prefix"]),
            workers=int(details["workers"]),
            kubectl=Path(str(details["kubectl"])),
            control_planes=int(details.get("control_planes", 1)),
        )
    else:
        cluster = GivenCluster(Path(str(details["kubeconfig"])))
    if "service" in record.spec:  # a service file's members (topologies.kubernetes.service)
        from topologies.kubernetes.service import attach_service

        return attach_service(record, cluster)
    spec = parse(record.spec, source=f"run {record.run_id}'s record")
    return KubeRun(
        record.run_id,
        record.mode,
        spec,
        cluster=cluster,
        namespace=str(details["namespace"]),
        image=str(details["image"]),
        workdir=folder,
        doors=[str(d) for d in details.get("doors", [])],
        expose=str(details.get("expose", EXPOSURES[0])),
    )


__all__ = [
    "EVICT_AFTER_S",
    "MAX_EVICT_AFTER_S",
    "TARGET",
    "GivenCluster",
    "KubeRun",
    "NodeCluster",
    "attach",
    "scale",
    "start",
]

"""``modematrix k8s build | manifests``: the Kubernetes mode's parts."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import images
from runtime.config import parse_kubernetes_name
from topologies import pki, targets
from topologies.cli.common import EXIT_OK, Sub, example
from topologies.exceptions import UsageError
from topologies.kubernetes import manifests
from topologies.runs import Secrets, new_run_id, run_dir


def register(sub: Sub) -> None:
    k8s = sub.add_parser("k8s", help="the Kubernetes mode's parts", epilog=example("modematrix k8s build"))
    verbs = k8s.add_subparsers(dest="action", required=True, metavar="ACTION")
    build = verbs.add_parser("build", help="Kubernetes from source (Go module proxy), then the node image")
    build.add_argument("--jobs", type=int, help="Go's parallelism (GOMAXPROCS; default: every core)")
    build.add_argument("--quiet", action="store_true")
    build.set_defaults(run=_build)
    made = verbs.add_parser("manifests", help="print the mode's manifests (YAML) for your own tooling")
    made.add_argument(
        "--mode",
        default=targets.kubernetes_modes()[0],
        help="a Kubernetes mode, or a mode with etcd members (default %(default)s)",
    )
    made.add_argument("--namespace", default="modematrix", help="the namespace (default %(default)s)")
    made.add_argument("--image", help="the runtime image (default: the current content tag)")
    made.add_argument("--pki-dir", type=Path, help="where the new cluster CA goes (default: a new run folder)")
    made.add_argument(
        "--format",
        choices=manifests.FORMATS,
        default="yaml",
        help="yaml to stdout (default), or a kustomize base or a Helm chart written to --output",
    )
    made.add_argument(
        "--evict-after",
        type=int,
        default=manifests.EVICT_AFTER_S,
        metavar="SECONDS",
        help="a not-ready or unreachable node's pods move after this long (default %(default)s)",
    )
    made.add_argument("--output", type=Path, help="the folder for --format kustomize|helm (must not exist)")
    made.set_defaults(run=_manifests)
    load = verbs.add_parser(
        "load-image",
        help="put a local image into every worker's containerd of a cluster built here (where missing)",
        epilog=example("modematrix k8s load-image r-1a2b3c4d myservice:dev"),
    )
    load.add_argument("run_id", metavar="RUN", help="a k8s run on a cluster built here")
    load.add_argument("tag", metavar="TAG", help="an image this machine's engine has")
    load.set_defaults(run=_load_image)


def _build(args: argparse.Namespace) -> int:
    from images import kubernetes

    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"k8s build: --jobs: expected 1 or more, got {args.jobs}")
    node = kubernetes.node_image(jobs=args.jobs, quiet=args.quiet)
    built = node.components
    print(node.tag)
    took = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in built.seconds.items())
    state = "reused: nothing changed" if built.reused else f"built ({took})"
    print(
        f"Kubernetes {built.version} in {built.directory}: {state}; node image {node.tag}: "
        + ("reused" if node.reused else "built"),
        file=sys.stderr,
    )
    return EXIT_OK


def _load_image(args: argparse.Namespace) -> int:
    """``k8s load-image RUN TAG``: a local image onto the nodes of a cluster built here (a
    cluster handed by --kubeconfig pulls from a registry: ``up --image-registry``)."""
    from topologies.kubernetes.clusters import NodeCluster
    from topologies.kubernetes.run import KubeRun

    run = targets.attach(args.run_id)
    if not isinstance(run, KubeRun) or not isinstance(run.cluster, NodeCluster):
        raise UsageError(
            f"run {args.run_id} is not on a cluster built here: a cluster you were handed pulls "
            "images from a registry (modematrix up k8s --image-registry REG)"
        )
    seconds = run.cluster.load_images([args.tag])
    print(f"{args.tag}: in every worker's containerd of run {args.run_id} ({seconds:.1f} s)", file=sys.stderr)
    return EXIT_OK


def _manifests(args: argparse.Namespace) -> int:
    """The k8s mode's manifests for the user's own tooling; the run's CA, which clients need,
    is written to ``--pki-dir``."""
    try:
        namespace = parse_kubernetes_name(args.namespace)
    except ValueError as exc:
        raise UsageError(f"k8s manifests: --namespace: {exc}") from None
    layout = targets.spec_of(args.mode)
    if layout.db != "etcd" or not layout.members:
        raise UsageError(f"k8s manifests: --mode {args.mode}: expected a mode with etcd members (k8s, scaled)")
    if args.format != "yaml" and args.output is None:
        raise UsageError(f"k8s manifests: --format {args.format} writes a folder: give --output DIR")
    if args.output is not None and (args.format == "yaml" or args.output.exists()):
        raise UsageError(
            f"k8s manifests: --output {args.output}: "
            + (
                "already exists (nothing is overwritten)"
                if args.output.exists()
                else "only with --format kustomize|helm"
            )
        )
    if not 0 <= args.evict_after <= manifests.MAX_EVICT_AFTER_S:
        raise UsageError(
            f"k8s manifests: --evict-after: expected 0 to {manifests.MAX_EVICT_AFTER_S} seconds, got {args.evict_after}"
        )
    image = args.image or images.build(quiet=True).tag
    folder = args.pki_dir or run_dir(new_run_id())
    made = manifests.manifests(
        layout,
        namespace=namespace,
        image=image,
        secrets=Secrets.generate(),
        pki=pki.RunPki.create(folder),
        evict_after=args.evict_after,
    )
    if args.output is None:
        print(manifests.to_yaml(made), end="")
    else:
        for name, text in manifests.files(made, args.format, name=f"modematrix-{namespace}").items():
            (args.output / name).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            (args.output / name).touch(mode=0o600)  # Secrets among them
            (args.output / name).write_text(text)
        print(f"{args.format}: {args.output}", file=sys.stderr)
    print(f"cluster CA: {folder / 'ca.pem'}; admin password in the Secret modematrix-secrets", file=sys.stderr)
    return EXIT_OK

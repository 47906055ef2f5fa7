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
    made.set_defaults(run=_manifests)


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
    image = args.image or images.build(quiet=True).tag
    folder = args.pki_dir or run_dir(new_run_id())
    made = manifests.manifests(
        layout, namespace=namespace, image=image, secrets=Secrets.generate(), pki=pki.RunPki.create(folder)
    )
    print(manifests.to_yaml(made), end="")
    print(f"cluster CA: {folder / 'ca.pem'}; admin password in the Secret modematrix-secrets", file=sys.stderr)
    return EXIT_OK

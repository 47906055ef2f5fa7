"""The ``modematrix`` command: build the image, start modes, break them, tear them down.

modematrix images build            modematrix up ha [--json]
modematrix images base             modematrix status [--json]
modematrix images wheels --dest D  modematrix down RUN_ID | --all
modematrix images context DIR      modematrix fault RUN_ID NODE kill|stop|start|restart|pause|unpause|partition|heal
modematrix images check [TAG]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import images
from images.progress import step
from topologies import cluster as clusters
from topologies import faults, spec
from topologies.attach import attach
from topologies.exceptions import TopologyError
from topologies.launch import launch

EXIT_USAGE, EXIT_FAILED = 2, 1


def _images(args: argparse.Namespace) -> int:
    client = images.docker_client()
    if args.action == "build":
        built = images.build(args.base, quiet=args.quiet, client=client)
        print(built.tag)
        note = "reused: nothing changed" if built.reused else "built"
        print(f"{note} in {built.seconds:.1f} s", file=sys.stderr)
    elif args.action == "base":
        print(images.ensure_base(client, args.base))
    elif args.action == "wheels":
        from images.wheels import ensure_wheelhouse

        dest = Path(args.dest) if args.dest else images.wheelhouse_dir()
        from images.build import ROOT, platform_of

        wheels = ensure_wheelhouse(ROOT / "images" / "requirements.lock", dest, arch=args.arch or platform_of(client))
        print(f"{len(wheels)} wheels in {dest}")
    elif args.action == "context":
        images.assemble_context(Path(args.dest), arch=args.arch or "amd64")
        print(f"build context written to {args.dest}; build it with: docker build {args.dest}")
    elif args.action == "check":
        from images.inspect import find_secrets

        tag = args.tag or images.build(quiet=True, client=client).tag
        found = find_secrets(client, tag)
        for line in found:
            print(line)
        print(f"{tag}: {'no secrets found' if not found else f'{len(found)} possible secrets'}", file=sys.stderr)
        return EXIT_FAILED if found else 0
    return 0


def _up(args: argparse.Namespace) -> int:
    started = time.monotonic()
    with step(f"starting {args.mode}", quiet=args.json):
        cluster = launch(args.mode, reaper=False, timeout=args.timeout, quiet=args.json)
    if args.json:
        print(json.dumps(cluster.describe(), indent=2))
        return 0
    print(f"run {cluster.run_id}: {cluster.mode} ready in {time.monotonic() - started:.1f} s")
    print(f"  endpoints: {' '.join(cluster.endpoints)}")
    print(f"  CA:        {cluster.ca_file}")
    print(f"  admin:     admin / {cluster.admin.password}")
    for node in cluster.nodes:
        member = " +etcd" if node.db_member else ""
        print(f"  {node.name:10} {node.ip:15} {node.url:26} {','.join(node.services)}{member}")
    print(f"stop it with: modematrix down {cluster.run_id}")
    return 0


def _status(args: argparse.Namespace) -> int:
    client = images.docker_client()
    rows = []
    for run_id, containers in sorted(clusters.runs(client).items()):
        mode = containers[0].labels.get(clusters.LABEL_MODE, "?")
        running = sum(c.status == "running" for c in containers)
        rows.append({"run_id": run_id, "mode": mode, "containers": len(containers), "running": running})
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("no modematrix runs")
    for row in [] if args.json else rows:
        print(f"{row['run_id']}  {row['mode']:8} {row['running']}/{row['containers']} running")
    return 0


def _down(args: argparse.Namespace) -> int:
    if not args.all and not args.run_id:
        print("modematrix down: expected a RUN_ID or --all", file=sys.stderr)
        return EXIT_USAGE
    client = images.docker_client()
    targets = list(clusters.runs(client)) if args.all else [args.run_id]
    for run_id in targets:
        shutil.rmtree(images.cache_dir() / "runs" / run_id, ignore_errors=True)
    if args.all:
        removed = clusters.remove_run(client, None)  # also networks/volumes whose containers are gone
        print(f"removed {removed} from {len(targets)} run(s)")
        return 0
    removed = clusters.remove_run(client, args.run_id)
    if not any(removed.values()):
        print(f"modematrix down: no run {args.run_id!r}", file=sys.stderr)
        return EXIT_FAILED
    print(f"removed run {args.run_id}: {removed}")
    return 0


FAULTS: dict[str, Callable[[str], faults.Fault]] = {
    "kill": faults.Kill,
    "stop": faults.Stop,
    "restart": faults.Restart,
    "pause": faults.Pause,
}


def _fault(args: argparse.Namespace) -> int:
    cluster = attach(args.run_id)
    node = cluster.node(args.node)
    if args.action in FAULTS:
        FAULTS[args.action](node.name).apply(cluster)
    elif args.action in ("start", "unpause"):
        getattr(node, args.action)()
    elif args.action == "partition":
        faults.Partition.isolating(node.name, cluster).apply(cluster)
    elif args.action == "heal":
        faults.heal_all(cluster)
    print(f"{args.action} {node.name}: now {node.status}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modematrix", description="one image, every deployment mode")
    sub = parser.add_subparsers(dest="command", required=True)
    img = sub.add_parser("images", help="build and inspect the runtime image")
    img.add_argument("action", choices=["build", "base", "wheels", "context", "check"])
    img.add_argument("dest", nargs="?", help="directory for `context` / `wheels`")
    img.add_argument("--base", default=images.DEFAULT_BASE, help="base image (default %(default)s)")
    img.add_argument("--arch", help="target architecture for wheels (default: the Docker daemon's)")
    img.add_argument("--tag", help="image to check (default: build or reuse the current one)")
    img.add_argument("--quiet", action="store_true")
    img.set_defaults(run=_images)
    up = sub.add_parser("up", help="start a mode and leave it running")
    up.add_argument("mode", help=f"one of {', '.join(spec.available())}, or a path to a mode .yaml")
    up.add_argument("--json", action="store_true", help="print endpoints, CA file, admin and nodes as JSON")
    up.add_argument("--timeout", type=float, default=180.0)
    up.set_defaults(run=_up)
    status = sub.add_parser("status", help="list the runs Docker knows of")
    status.add_argument("--json", action="store_true")
    status.set_defaults(run=_status)
    down = sub.add_parser("down", help="remove a run (or --all)")
    down.add_argument("run_id", nargs="?")
    down.add_argument("--all", action="store_true")
    down.set_defaults(run=_down)
    fault = sub.add_parser("fault", help="inject or heal a fault by hand")
    fault.add_argument("run_id")
    fault.add_argument("node")
    fault.add_argument("action", choices=[*FAULTS, "start", "unpause", "partition", "heal"])
    fault.set_defaults(run=_fault)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "images" and args.action == "context" and not args.dest:
        print("modematrix images context: expected a destination directory", file=sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.run(args))
    except (TopologyError, images.ImageError) as exc:
        print(f"modematrix: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())

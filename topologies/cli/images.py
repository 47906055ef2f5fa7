"""``modematrix images``: build and inspect the runtime image, and refresh its locks."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import images
from topologies.cli.common import EXIT_FAILED, Sub, example
from topologies.exceptions import UsageError


def register(sub: Sub) -> None:
    group = sub.add_parser(
        "images", help="build and inspect the runtime image", epilog=example("modematrix images build")
    )
    verbs = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    build = verbs.add_parser(
        "build",
        help="build the runtime image and its envoy image (TAG-envoy), or reuse both; prints the tag",
    )
    base = verbs.add_parser("base", help="the base image: the configured one, or bootstrapped from Debian packages")
    for parser in (build, base):
        parser.add_argument("--base", default=images.DEFAULT_BASE, help="base image (default %(default)s)")
        parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    wheels = verbs.add_parser("wheels", help="fill a wheelhouse with every locked wheel (for air-gapped machines)")
    wheels.add_argument("dest", nargs="?", type=Path, help="the folder (default: the cache's wheelhouse)")
    context = verbs.add_parser("context", help="write a self-contained build context for a plain `docker build`")
    context.add_argument("dest", type=Path, help="the folder to write")
    for parser in (wheels, context):
        parser.add_argument("--arch", help="amd64 or arm64 (default: the Docker daemon's)")
    check = verbs.add_parser("check", help="look for keys and secrets in every layer; exit 1 if any")
    check.add_argument("tag", nargs="?", help="the image (default: build or reuse the current one)")
    lock = verbs.add_parser("lock", help="refresh images/requirements.lock and images/build.lock, on purpose")
    lock.add_argument("--upgrade", action="store_true", help="re-resolve every package to the newest allowed")
    lock.add_argument("--upgrade-package", action="append", metavar="NAME", help="re-resolve only NAME")
    for action, run in {
        build: _build,
        base: _base,
        wheels: _wheels,
        context: _context,
        check: _check,
        lock: _lock,
    }.items():
        action.set_defaults(run=run)


def _build(args: argparse.Namespace) -> int:
    built = images.build(args.base, quiet=args.quiet)
    print(built.tag)  # the runtime image; Envoy's nodes run the envoy image, named on stderr
    done = "reused: nothing changed" if built.reused else "built"
    print(f"{done} in {built.seconds:.1f} s; Envoy's nodes: {images.envoy_image(built.tag)}", file=sys.stderr)
    return 0


def _base(args: argparse.Namespace) -> int:
    print(images.ensure_base(images.docker_client(), args.base, quiet=args.quiet))
    return 0


def _wheels(args: argparse.Namespace) -> int:
    from images.build import platform_of
    from images.wheels import ensure_wheelhouse

    dest = args.dest or images.wheelhouse_dir()
    found = ensure_wheelhouse(dest, arch=args.arch or platform_of(images.docker_client()))
    print(f"{len(found)} wheels in {dest}")
    return 0


def _context(args: argparse.Namespace) -> int:
    images.assemble_context(args.dest, arch=args.arch or "amd64")
    dest = args.dest
    print(f"build context written to {dest}; build the runtime image with: docker build --target runtime {dest}")
    print(f"and its envoy image (Envoy's nodes) with: docker build --target envoy {dest}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from images.inspect import find_secrets

    client = images.docker_client()
    built = args.tag or images.build(quiet=True, client=client).tag
    failed = False
    for tag in dict.fromkeys([built, images.envoy_image(built)]):  # both images, when they are ours
        found = find_secrets(client, tag)
        for line in found:
            print(line)
        print(f"{tag}: {'no secrets found' if not found else f'{len(found)} possible secrets'}", file=sys.stderr)
        failed = failed or bool(found)
    return EXIT_FAILED if failed else 0


def _lock(args: argparse.Namespace) -> int:
    """Refresh images/requirements.lock and images/build.lock on purpose (see images.lock)."""
    from images import lock

    if not lock.PYPROJECT.exists():
        raise UsageError(f"images lock refreshes a checkout's locks; no pyproject.toml at {lock.PYPROJECT.parent}")
    upgrade: bool | list[str] = True if args.upgrade else list(args.upgrade_package or [])
    old_runtime, old_build = lock.read(lock.RUNTIME_LOCK), lock.read(lock.BUILD_LOCK)
    refreshed = lock.refresh(upgrade=upgrade)
    lock.write(refreshed)
    for line in refreshed.changes(old_runtime, old_build) or ["no version changed (hashes rewritten)"]:
        print(line)
    return 0

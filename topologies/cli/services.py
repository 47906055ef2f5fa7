"""``modematrix services [list | schema | check FILE]``: the service files shipped here, the
service file's JSON Schema, and a user's service file checked against it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from topologies import service
from topologies.cli.common import EXIT_OK, Sub, emit, example


def register(sub: Sub) -> None:
    services = sub.add_parser(
        "services",
        help="the service files, their JSON Schema, a service file checked",
        epilog=example(
            "modematrix services",
            "modematrix services check my-service.yaml",
            "modematrix matrix --service my-service.yaml",
        ),
    )
    verbs = services.add_subparsers(dest="action", metavar="ACTION")
    listed = verbs.add_parser("list", help="every shipped service file (the default)")
    listed.add_argument("--json", action="store_true")
    listed.set_defaults(run=_list)
    verbs.add_parser("schema", help="the service file's JSON Schema").set_defaults(run=_schema)
    check = verbs.add_parser("check", help="validate a service file: exit 0, or 2 with every problem")
    check.add_argument("file", type=Path, metavar="FILE")
    check.add_argument("--json", action="store_true")
    check.set_defaults(run=_check)
    services.add_argument("--json", action="store_true")
    services.set_defaults(run=_list)


def _list(args: argparse.Namespace) -> int:
    rows = [service.load(name).to_dict() for name in service.available()]
    text = "\n".join(
        f"{r['service']:15} {','.join(str(s) for s in r['sizes']):6} members  {r['workload']:6} {r['description']}"
        for r in rows
    )
    emit(args, rows, text)
    return EXIT_OK


def _schema(args: argparse.Namespace) -> int:
    print(json.dumps(service.schema(), indent=2))
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    spec = service.load(args.file)  # SpecError (exit 2) names every problem
    sizes = ", ".join(str(s) for s in spec.sizes)
    emit(args, spec.to_dict(), f"{args.file}: service {spec.name}, {sizes} members, workload {spec.workload}: valid")
    return EXIT_OK

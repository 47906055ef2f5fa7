"""``modematrix modes [list | schema | check FILE]``: the modes there are, the mode file's
JSON Schema, and a user's mode file checked against it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from topologies import spec, targets
from topologies.cli.common import EXIT_OK, Sub, emit, example


def register(sub: Sub) -> None:
    modes = sub.add_parser(
        "modes",
        help="the modes, the mode file's JSON Schema, a mode file checked",
        epilog=example(
            "modematrix modes", "modematrix modes schema > mode.schema.json", "modematrix modes check my.yaml"
        ),
    )
    verbs = modes.add_subparsers(dest="action", metavar="ACTION")
    listed = verbs.add_parser("list", help="every mode: its target and nodes (the default)")
    listed.add_argument("--json", action="store_true")
    listed.set_defaults(run=_list)
    verbs.add_parser("schema", help="the mode file's JSON Schema").set_defaults(run=_schema)
    check = verbs.add_parser("check", help="validate a mode file: exit 0, or 2 with every problem")
    check.add_argument("file", type=Path, metavar="FILE")
    check.add_argument("--json", action="store_true")
    check.set_defaults(run=_check)
    modes.add_argument("--json", action="store_true")
    modes.set_defaults(run=_list)


def _list(args: argparse.Namespace) -> int:
    rows = []
    for mode in targets.modes():
        layout = targets.spec_of(mode)
        rows.append(
            {
                "mode": mode,
                "target": targets.target_of(mode),
                "db": layout.db,
                "nodes": len(layout.nodes),
                "description": layout.description,
            }
        )
    text = "\n".join(
        f"{r['mode']:15} {r['target']:11} {r['db']:7} {r['nodes']:2} nodes  {r['description']}" for r in rows
    )
    emit(args, rows, text)
    return EXIT_OK


def _schema(args: argparse.Namespace) -> int:
    print(json.dumps(spec.schema(), indent=2))
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    layout = spec.load(args.file)  # SpecError (exit 2) names every problem
    summary = {"mode": layout.mode, "db": layout.db, "nodes": [n.name for n in layout.nodes]}
    emit(args, summary, f"{args.file}: mode {layout.mode}, {len(layout.nodes)} nodes, db {layout.db}: valid")
    return EXIT_OK

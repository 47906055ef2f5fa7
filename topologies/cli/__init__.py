"""The ``modematrix`` command: one module per group of verbs, errors raised there and
printed once here.

    modematrix up ha --json            modematrix status [RUN] [--json]
    modematrix matrix                  modematrix down RUN... | --all
    modematrix fault RUN ACTION NODE   modematrix scale RUN kv=4
    modematrix logs RUN [PART] -f      modematrix exec RUN PART -- CMD
    modematrix images build            modematrix k8s build

Every failure is one line on stderr: exit 2 for bad input (an unknown mode, run, node or
flag, an invalid mode file), 1 for a run that failed. ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
import time
import traceback
from collections.abc import Sequence

from topologies.cli.common import EXIT_FAILED, EXIT_USAGE, Sub
from topologies.exceptions import StartTimeout, TopologyError

PROGRAM = "modematrix"


def version() -> str:
    try:
        return importlib.metadata.version(PROGRAM)
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown (not installed)"


def parser() -> argparse.ArgumentParser:
    from topologies.cli import change, completion, images, k8s, modes, runs, services  # every verb's imports
    from topologies.engines import ENGINES

    made = argparse.ArgumentParser(
        prog=PROGRAM,
        description="one image, every deployment mode: start it, break it, prove it",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    made.add_argument("--version", action="version", version=f"{PROGRAM} {version()}")
    made.add_argument("--debug", action="store_true", help="show the traceback of a failure")
    made.add_argument("--engine", default="docker", choices=ENGINES, help="where containers run (default %(default)s)")
    sub = made.add_subparsers(dest="command", required=True, metavar="VERB")
    runs.register(sub)
    change.register(sub)
    images.register(sub)
    k8s.register(sub)
    modes.register(sub)
    services.register(sub)
    completion.register(sub, parser)
    _add_commands(sub)
    _raw(made)
    made.epilog = "one example of each verb (VERB --help has more):\n" + "\n".join(
        f"  {line}" for line in _first_examples(sub)
    )
    return made


def _raw(parser: argparse.ArgumentParser) -> None:
    """Every parser keeps its epilog's lines (the examples) as written."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _raw(child)


def _first_examples(sub: Sub) -> list[str]:
    found = []
    for name, verb in sub.choices.items():
        lines = (verb.epilog or "").splitlines()
        examples = [line.strip() for line in lines[1:] if line.strip()] if lines[:1] == ["examples:"] else []
        found.append(examples[0] if examples else f"modematrix {name} --help")
    return found


def _add_commands(sub: Sub) -> None:
    """Verbs that other packages register in the ``modematrix.commands`` entry point group
    (``bench`` from loadtests, ``matrix`` and ``report`` from scenarios): the CLI lives here,
    yet topologies imports none of them."""
    for entry in sorted(importlib.metadata.entry_points(group="modematrix.commands"), key=lambda e: e.name):
        entry.load()(sub)


def main(argv: Sequence[str] | None = None) -> int:
    if list(sys.argv[1:] if argv is None else argv) == ["--version"]:
        print(f"{PROGRAM} {version()}")  # at once: before the verbs' imports (Docker's and k8s' clients)
        return 0
    from images import ImageError

    args = parser().parse_args(argv)
    try:
        return int(args.run(args))
    except TopologyError as exc:
        return _fail(args, exc, exc.exit_code)
    except ImageError as exc:
        return _fail(args, exc, EXIT_FAILED)
    except KeyboardInterrupt:
        print(f"{PROGRAM}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `modematrix ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except Exception as exc:  # a bug of ours: still one line, with the way to see more
        return _fail(args, exc, EXIT_FAILED, unexpected=True)


def _fail(args: argparse.Namespace, exc: BaseException, code: int, *, unexpected: bool = False) -> int:
    if args.debug:
        traceback.print_exc()
    kind = f"unexpected {type(exc).__name__}: " if unexpected else ""
    hint = "" if args.debug else " (--debug shows the traceback)" if unexpected else ""
    if isinstance(exc, StartTimeout) and exc.logs:
        from images import cache_dir

        kept = cache_dir() / "logs" / f"{exc.node or 'node'}-{int(time.time())}.log"
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_text(exc.logs)
        hint += f"; its last log lines: {kept}"
    print(f"{PROGRAM}: {kind}{exc}{hint}", file=sys.stderr)
    return code


__all__ = ["EXIT_USAGE", "main", "parser", "version"]

"""What every group of verbs shares: exit codes, JSON output, examples in the help."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TypeAlias

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
Sub: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"  # private in argparse, not generic at run time


def example(*lines: str) -> str:
    """An epilog of examples, shown by ``--help``."""
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def emit(args: argparse.Namespace, document: dict[str, Any] | list[Any], text: str) -> None:
    """One report, as JSON (``--json``: docs/cli.md has each verb's schema) or as text."""
    if getattr(args, "json", False):
        print(json.dumps(document, indent=2))
    else:
        print(text)


def say(line: str) -> None:
    """Progress, on stderr (stdout is the report)."""
    print(line, file=sys.stderr)

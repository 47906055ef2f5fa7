"""Merge the results folders of several matrix runs (one per CI row) into one, so that one
report page shows every mode:

    python -m scenarios.report.combine downloaded/ combined/ && modematrix report combined/

Every ``matrix.json`` found below the source is taken; cells are concatenated and each run's
mode folders copied. Two runs of the same mode: the later folder wins, and says so.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from scenarios.report.results import MATRIX_FILE


def combine(source: Path, dest: Path) -> list[str]:
    """Returns the modes combined; raises ValueError when ``source`` holds no matrix run."""
    runs = sorted(source.rglob(MATRIX_FILE))
    if not runs:
        raise ValueError(f"{source}: no {MATRIX_FILE} below it; expected results folders of `modematrix matrix`")
    dest.mkdir(parents=True, exist_ok=True)
    cells: list[dict[str, object]] = []
    modes: list[str] = []
    quick = False
    for matrix_file in runs:
        matrix = json.loads(matrix_file.read_text())
        for mode in matrix.get("modes", []):
            if (matrix_file.parent / mode).is_dir():
                if (dest / mode).exists():
                    print(f"combine: {mode} appears twice; keeping {matrix_file.parent}", file=sys.stderr)
                    shutil.rmtree(dest / mode)
                shutil.copytree(matrix_file.parent / mode, dest / mode)
        cells += [c for c in matrix["cells"] if c["mode"] not in {x["mode"] for x in cells}]
        modes += [m for m in matrix.get("modes", []) if m not in modes]
        quick = quick or bool(matrix.get("quick"))
    summary = {"run_id": "combined", "started": "", "modes": modes, "quick": quick, "cells": cells}
    (dest / MATRIX_FILE).write_text(json.dumps(summary, indent=2))
    return modes


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m scenarios.report.combine SOURCE DEST", file=sys.stderr)
        return 2
    try:
        modes = combine(Path(argv[0]), Path(argv[1]))
    except ValueError as exc:
        print(f"combine: {exc}", file=sys.stderr)
        return 2
    print(f"combined {', '.join(modes)} into {argv[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

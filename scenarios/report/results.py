"""Read a matrix run's results folder into one value: what the report page and report.json show.

    results/<run-id>/
      matrix.json                          the cells: mode x check, status, seconds, log
      <mode>/functional/junit.xml
      <mode>/failover/<mode>-summary.json  and <mode>-<scenario>-history.json
      <mode>/load/load_stats.csv           and load_stats_history.csv (locust)
      <mode>/bench/bench-*.json

Only files are read; nothing here runs a mode. A folder without ``matrix.json`` is not ours.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scenarios.checkers.linearizable import OverBudget, check_key
from scenarios.history import OK, Op

MATRIX_FILE = "matrix.json"


class NotResults(ValueError):
    """The folder is missing, empty, or not a modematrix results folder."""


@dataclass
class Scenario:
    mode: str
    name: str
    summary: dict[str, Any]
    ops: list[Op] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)


@dataclass
class Results:
    folder: Path
    matrix: dict[str, Any]
    scenarios: list[Scenario]
    load: dict[str, dict[str, Any]]
    load_series: dict[str, list[dict[str, float]]]
    bench: list[dict[str, Any]]
    memory: list[dict[str, Any]] = field(default_factory=list)  # idle RSS per part (bench)

    @property
    def passed(self) -> bool:
        return all(c["status"] in ("pass", "n/a") for c in self.matrix["cells"])


def read(folder: Path) -> Results:
    matrix_file = folder / MATRIX_FILE
    if not folder.is_dir():
        raise NotResults(f"{folder}: no such folder; give a results/<run-id> folder of `modematrix matrix`")
    if not matrix_file.is_file():
        raise NotResults(f"{folder} has no {MATRIX_FILE}: not a results folder of `modematrix matrix`")
    try:
        matrix = json.loads(matrix_file.read_text())
        cells = matrix["cells"]
    except (ValueError, KeyError, TypeError) as exc:
        raise NotResults(f"{matrix_file} is not a matrix summary ({exc})") from exc
    if not cells:
        raise NotResults(f"{matrix_file} has no cells: the run was empty")
    return Results(
        folder,
        matrix,
        _scenarios(folder),
        {m: s for m, s in ((p.parts[-3], _load_stats(p)) for p in folder.glob("*/load/load_stats.csv")) if s},
        {p.parts[-3]: _load_series(p) for p in folder.glob("*/load/load_stats_history.csv")},
        [row for p in sorted(folder.glob("*/bench/bench-*.json")) for row in json.loads(p.read_text())],
        [row for p in sorted(folder.glob("*/bench/memory-*.json")) for row in json.loads(p.read_text())],
    )


def _scenarios(folder: Path) -> list[Scenario]:
    found = []
    for summary_file in sorted(folder.glob("*/failover/*-summary.json")):
        for entry in json.loads(summary_file.read_text())["scenarios"]:
            scenario = Scenario(entry["mode"], entry["scenario"], entry)
            history = summary_file.parent / f"{entry['mode']}-{entry['scenario']}-history.json"
            if history.is_file():
                raw = json.loads(history.read_text())
                scenario.ops = [Op(**op) for op in raw["ops"]]
                scenario.events = [(float(at), str(event)) for at, event in raw["events"]]
            found.append(scenario)
    return found


def _load_stats(path: Path) -> dict[str, Any]:
    rows = list(csv.DictReader(path.open()))
    total = next((r for r in rows if r.get("Name") == "Aggregated"), None)
    if total is None:
        return {}
    return {
        "requests": int(total["Request Count"]),
        "failures": int(total["Failure Count"]),
        "rps": round(float(total["Requests/s"]), 1),
        "p50_ms": float(total["50%"] or 0),
        "p95_ms": float(total["95%"] or 0),
        "p99_ms": float(total["99%"] or 0),
        "routes": [
            {"name": r["Name"], "requests": int(r["Request Count"]), "failures": int(r["Failure Count"])}
            for r in rows
            if r.get("Name") != "Aggregated"
        ],
    }


def _load_series(path: Path) -> list[dict[str, float]]:
    series = []
    for row in csv.DictReader(path.open()):
        if row.get("Name") != "Aggregated":
            continue
        series.append(
            {
                "t": float(row["Timestamp"]),
                "rps": float(row["Requests/s"] or 0),
                "fails": float(row["Failures/s"] or 0),
                "users": float(row["User Count"] or 0),
            }
        )
    return series


def smallest_failing_part(scenario: Scenario, check: str, detail: str, limit: int = 20) -> list[Op]:
    """The ops that show a violation: for linearizability, the shortest prefix (by call
    time) of the first failing key's ops that has no linearization, its last ``limit`` ops;
    for other checks, the ops on the keys the verdict names."""
    named = set(re.split(r"[\s,;()]+", detail))  # whole keys: "k1" is not named by "k10"
    keys = [k for k in {op.key for op in scenario.ops} if k and k in named]
    ops = sorted((op for op in scenario.ops if op.key in keys), key=lambda o: o.call)
    if check != "linearizable-kv" or not keys:
        return ops[-limit:]
    first = sorted(keys)[0]
    key_ops = [op for op in ops if op.key == first and _counts_for_linearizability(op)]
    low, high = 1, len(key_ops)
    while low < high:  # the shortest non-linearizable prefix
        middle = (low + high) // 2
        if _linearizable(key_ops[:middle]):
            low = middle + 1
        else:
            high = middle
    return key_ops[max(0, low - limit) : low]


def _counts_for_linearizability(op: Op) -> bool:
    if op.kind in ("read", "final-read"):
        return op.outcome == OK
    return op.kind in ("write", "cas", "delete") and (op.outcome != "fail" or op.result.get("status") == 412)


def _linearizable(ops: list[Op]) -> bool:
    try:
        return check_key(ops, deadline=float("inf"))
    except OverBudget:
        return True

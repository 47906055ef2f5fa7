"""What a failover run leaves behind: a JSON summary, a JUnit XML, and a table on screen."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from xml.etree import ElementTree as ET

from scenarios.runner import Result


def write_json(results: list[Result], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    totals = {
        "scenarios": len(results),
        "faults": sum(len(r.faults) for r in results),
        "ops": sum(r.counts["ops"] for r in results),
        "lost_writes": sum(_number(r, "no-lost-writes", "lost") for r in results),
        "linearizability_violations": sum(_number(r, "linearizable-kv", "violations") for r in results),
        "double_acks": sum(_number(r, "queue-safety", "double_acks") for r in results),
        "overlapping_leases": sum(_number(r, "queue-safety", "overlapping_leases") for r in results),
        "reads_not_served": sum(
            _number(r, "reads-served", "failed") + _number(r, "reads-served", "unknown") for r in results
        ),
        "passed": all(r.passed for r in results),
    }
    path.write_text(
        json.dumps(
            {"totals": totals, "unavailability": unavailability(results), "scenarios": [r.summary() for r in results]},
            indent=2,
        )
    )


def _number(result: Result, check: str, name: str) -> int:
    return int(next((v.numbers.get(name, 0) for v in result.verdicts if v.check == check), 0) or 0)


def unavailability(results: list[Result]) -> dict[str, dict[str, dict[str, float | None]]]:
    """Per mode and scenario: median and worst write gap, and heal -> first write."""
    grouped: dict[str, dict[str, dict[str, float | None]]] = defaultdict(dict)
    for r in results:
        numbers = next((v.numbers for v in r.verdicts if v.check == "availability"), {})
        recoveries = [x for x in numbers.get("heal_to_first_write_s", []) if x is not None]
        grouped[r.mode][r.scenario] = {
            "faults": len(r.faults),
            "write_unavailability_median_s": numbers.get("fault_unavailability_median_s"),
            "write_unavailability_worst_s": numbers.get("fault_unavailability_worst_s"),
            "longest_write_gap_s": numbers.get("longest_write_gap_s"),
            "longest_call_in_fault_s": numbers.get("longest_call_in_fault_s"),
            "heal_to_first_write_median_s": round(statistics.median(recoveries), 3) if recoveries else None,
            "heal_to_first_write_worst_s": max(recoveries) if recoveries else None,
        }
    return dict(grouped)


def write_junit(results: list[Result], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    suite = ET.Element(
        "testsuite",
        name="failover",
        tests=str(sum(len(r.verdicts) for r in results)),
        failures=str(sum(not v.passed for r in results for v in r.verdicts)),
    )
    for r in results:
        for verdict in r.verdicts:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"failover.{r.mode}.{r.scenario}",
                name=verdict.check,
                time=f"{r.seconds:.1f}",
            )
            if not verdict.passed:
                failure = ET.SubElement(case, "failure", message=f"{verdict.result}: {verdict.detail}")
                failure.text = json.dumps(verdict.numbers)
    ET.ElementTree(suite).write(path, encoding="unicode", xml_declaration=True)


def table(results: list[Result]) -> str:
    checks = ["no-lost-writes", "linearizable-kv", "queue-safety", "lease-exclusive", "availability", "reads-served"]
    header = (
        f"{'mode':7} {'scenario':18} {'faults':>6} {'ops':>6} {'ok':>6} {'unkn':>5} "
        + " ".join(f"{c[:14]:>14}" for c in checks)
        + f" {'unavail med/worst s':>20} {'longest call s':>14}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        results_by_check = {v.check: v.result for v in r.verdicts}
        numbers = next((v.numbers for v in r.verdicts if v.check == "availability"), {})
        gap = f"{numbers.get('fault_unavailability_median_s')}/{numbers.get('fault_unavailability_worst_s')}"
        lines.append(
            f"{r.mode:7} {r.scenario:18} {len(r.faults):>6} {r.counts['ops']:>6} {r.counts['ok']:>6} "
            f"{r.counts['unknown']:>5} "
            + " ".join(f"{results_by_check.get(c, '-'):>14}" for c in checks)
            + f" {gap:>20} {numbers.get('longest_call_in_fault_s')!s:>14}"
        )
    return "\n".join(lines)

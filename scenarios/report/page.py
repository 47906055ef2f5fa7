"""The report: ``report.json`` (the figures) and ``index.html`` (the same, to look at), built
from a results folder. The page is one file with its pictures inlined: it opens from disk,
with no server and no network.

    modematrix report results/<run-id>          # rebuild the page of a run
"""

from __future__ import annotations

import argparse
import html
import json
import shutil
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from scenarios.report.results import NotResults, Results, Scenario, read, smallest_failing_part
from topologies.cli.common import example

CHECK_ORDER = ("functional", "failover", "load", "bench")
STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:72rem;color:#222}
h1{font-size:1.5rem} h2{margin-top:2.2rem;border-bottom:1px solid #ddd} h3{font-size:1rem}
table{border-collapse:collapse;margin:.6rem 0} td,th{border:1px solid #ddd;padding:.25rem .6rem;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.pass{background:#e8f5e9}.fail{background:#ffebee}.skipped,.n\\/a{background:#f5f5f5;color:#777}
.verdict-pass{color:#2e7d32}.verdict-fail{color:#c62828;font-weight:600}.verdict-unknown{color:#ef6c00}
img{max-width:100%} code{background:#f5f5f5;padding:0 .2rem} .small{color:#666;font-size:12px}
"""


def build(folder: Path, *, also: Path | None = None) -> Path:
    """Write ``report.json`` and ``report/index.html`` into ``folder``; copy the page to
    ``also`` (``results/report``) when given. Returns the page's path."""
    results = read(folder)
    out = folder / "report"
    out.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(figures(results), indent=2))
    page = out / "index.html"
    page.write_text(render(results))
    if also is not None:
        also.mkdir(parents=True, exist_ok=True)
        shutil.copy(page, also / "index.html")
        shutil.copy(folder / "report.json", also / "report.json")
    return page


# -- the figures -------------------------------------------------------------------------------


def figures(results: Results) -> dict[str, Any]:
    return {
        "run_id": results.matrix.get("run_id"),
        "passed": results.passed,
        "cells": results.matrix["cells"],
        "unavailability": [
            {"mode": m, "fault": k, "median_s": med, "worst_s": worst} for m, k, med, worst in _unavailability(results)
        ],
        "failover": [_scenario_figures(s) for s in results.scenarios],
        "load": results.load,
        "bench": results.bench,
    }


def _scenario_figures(scenario: Scenario) -> dict[str, Any]:
    summary = scenario.summary
    return {
        "mode": scenario.mode,
        "scenario": scenario.name,
        "faults": summary.get("faults", []),
        "ops": summary.get("ops"),
        "passed": summary.get("passed"),
        "checks": summary.get("checks", []),
    }


def _unavailability(results: Results) -> list[tuple[str, str, float, float]]:
    rows = []
    for scenario in results.scenarios:
        numbers: dict[str, Any] = next(
            (c for c in scenario.summary.get("checks", []) if c["check"] == "availability"), {}
        )
        gaps = numbers.get("fault_unavailability_s") or []
        if gaps:
            rows.append((scenario.mode, scenario.name, round(statistics.median(gaps), 3), round(max(gaps), 3)))
    return rows


# -- the page ------------------------------------------------------------------------------------


def render(results: Results) -> str:
    verdict = "every cell passed" if results.passed else "some cells failed"
    parts = [
        f"<h1>modematrix run {_e(results.matrix.get('run_id', '?'))}: {verdict}</h1>",
        f"<p class=small>started {_e(results.matrix.get('started', '?'))}; "
        f"modes {_e(', '.join(results.matrix.get('modes', [])))}; quick: {results.matrix.get('quick')}</p>",
        _matrix(results),
        *_failover(results),
        *_load(results),
        _bench(results),
    ]
    body = "\n".join(p for p in parts if p)
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>modematrix report</title>"
        f"<style>{STYLE}</style></head><body>{body}</body></html>"
    )


def _e(value: object) -> str:
    return html.escape(str(value))


def _matrix(results: Results) -> str:
    cells = {(c["mode"], c["check"]): c for c in results.matrix["cells"]}
    modes = results.matrix.get("modes") or sorted({m for m, _ in cells})
    checks = [c for c in CHECK_ORDER if any(k == c for _, k in cells)]
    head = "".join(f"<th>{_e(c)}</th>" for c in checks)
    rows = []
    for mode in modes:
        tds = []
        for check in checks:
            cell = cells.get((mode, check))
            status = cell["status"] if cell else "n/a"
            seconds = f" <span class=small>{cell['seconds']:.0f} s</span>" if cell and cell.get("seconds") else ""
            link = f"<a href='#{_e(mode)}-{_e(check)}'>{_e(status)}</a>" if status not in ("n/a",) else status
            why = f" title='{_e(cell['reason'])}'" if cell and cell.get("reason") else ""
            tds.append(f"<td class='{_e(status)}'{why}>{link}{seconds}</td>")
        rows.append(f"<tr><th>{_e(mode)}</th>{''.join(tds)}</tr>")
    return f"<h2 id=matrix>Matrix</h2><table id=matrix-table><tr><th></th>{head}</tr>{''.join(rows)}</table>"


def _failover(results: Results) -> Iterable[str]:
    from scenarios.report import plots  # matplotlib: imported to draw, not when the CLI starts

    if not results.scenarios:
        return
    yield "<h2>Failover</h2>"
    rows = _unavailability(results)
    if rows:
        yield "<h3>Write unavailability per fault kind, every mode</h3>"
        yield f"<img class=plot alt='unavailability per fault kind' src='{plots.unavailability(rows)}'>"
    for mode in sorted({s.mode for s in results.scenarios}):
        yield f"<h3 id='{_e(mode)}-failover'>{_e(mode)}</h3>"
        for scenario in (s for s in results.scenarios if s.mode == mode):
            yield from _scenario(scenario)


def _scenario(scenario: Scenario) -> Iterable[str]:
    from scenarios.report import plots  # matplotlib: imported to draw, not when the CLI starts

    summary = scenario.summary
    yield (
        f"<h4>{_e(scenario.name)}: {'passed' if summary.get('passed') else 'FAILED'}</h4>"
        f"<p class=small>faults: {_e(', '.join(summary.get('faults', [])))}; {summary.get('ops')} ops, "
        f"{summary.get('ok')} ok, {summary.get('fail')} failed, {summary.get('unknown')} unknown</p>"
    )
    if scenario.ops:
        yield f"<img class=plot alt='timeline {_e(scenario.name)}' src='{plots.timeline(scenario)}'>"
    cells = "".join(
        f"<tr><td>{_e(c['check'])}</td><td class='verdict-{_e(c['result'])}'>{_e(c['result'])}</td>"
        f"<td>{_e(c.get('detail', ''))}</td></tr>"
        for c in summary.get("checks", [])
    )
    yield f"<table><tr><th>check</th><th>verdict</th><th>detail</th></tr>{cells}</table>"
    for check in summary.get("checks", []):
        if check["result"] == "fail" and scenario.ops:
            yield _violation(scenario, check["check"], check.get("detail", ""))


def _violation(scenario: Scenario, check: str, detail: str) -> str:
    ops = smallest_failing_part(scenario, check, detail)
    start = min(op.call for op in scenario.ops)
    rows = "".join(
        f"<tr><td class=num>{op.call - start:.3f}</td><td class=num>{op.ret - start:.3f}</td><td>{_e(op.client)}</td>"
        f"<td>{_e(op.kind)}</td><td>{_e(op.key)}</td><td>{_e(op.outcome)}</td>"
        f"<td><code>{_e(json.dumps(op.args))}</code></td><td><code>{_e(json.dumps(op.result)[:160])}</code></td></tr>"
        for op in ops
    )
    return (
        f"<p><b>{_e(check)}</b>: the smallest part of the history that shows it ({len(ops)} ops)</p>"
        "<table><tr><th>call s</th><th>return s</th><th>client</th><th>op</th><th>key</th><th>outcome</th>"
        f"<th>args</th><th>result</th></tr>{rows}</table>"
    )


def _load(results: Results) -> Iterable[str]:
    from scenarios.report import plots  # matplotlib: imported to draw, not when the CLI starts

    if not results.load:
        return
    yield "<h2>Load</h2>"
    for mode, stats in sorted(results.load.items()):
        numbers = ("requests", "failures", "rps", "p50_ms", "p95_ms", "p99_ms")
        yield (
            f"<h3 id='{_e(mode)}-load'>{_e(mode)}</h3><table><tr>"
            + "".join(f"<th>{name.replace('_ms', ' ms').replace('rps', 'req/s')}</th>" for name in numbers)
            + "</tr><tr>"
            + "".join(f"<td class=num>{stats[name]}</td>" for name in numbers)
            + "</tr></table>"
        )
        series = results.load_series.get(mode)
        if series:
            yield f"<img class=plot alt='load {_e(mode)}' src='{plots.load_throughput(mode, series)}'>"


def _bench(results: Results) -> str:
    if not results.bench:
        return ""
    rows = "".join(
        f"<tr><td>{_e(r['mode'])}</td><td>{_e(r['target'])}</td><td class=num>{r['rps']:,.0f}</td>"
        f"<td class=num>{r['p50_ms']:.1f}</td><td class=num>{r['p99_ms']:.1f}</td><td class=num>{r['errors']}</td>"
        f"<td class=num>{r['ratio'] or 1.0:.2f}x</td><td>{_e(r['baseline'] or '-')}</td></tr>"
        for r in results.bench
    )
    modes = sorted({r["mode"] for r in results.bench if r["mode"] != "-"})
    anchors = "".join(f"<a id='{_e(m)}-bench'></a>" for m in modes)
    return (
        f"<h2>Benchmark</h2>{anchors}<p class=small>wrk pinned to one core, every server to another; "
        "ratios against baselines measured in the same run</p><table><tr><th>mode</th><th>target</th><th>req/s</th>"
        f"<th>p50 ms</th><th>p99 ms</th><th>errors</th><th>ratio</th><th>to</th></tr>{rows}</table>" + _memory(results)
    )


def _memory(results: Results) -> str:
    if not results.memory:
        return ""
    rows = "".join(
        f"<tr><td>{_e(m['mode'])}</td><td>{_e(m['part'])}</td><td>{_e(m['role'])}</td>"
        f"<td class=num>{m['rss_mib']:.1f}</td><td class=num>{m['budget_mib'] if m['budget_mib'] else '-'}</td>"
        f"<td>{'-' if not m['budget_mib'] else 'yes' if m['rss_mib'] <= m['budget_mib'] else 'no'}</td></tr>"
        for m in results.memory
    )
    return (
        "<h3>Idle memory</h3><p class=small>each part's resident memory after the start, before any load "
        "(its cgroup's rss: no page cache)</p><table><tr><th>mode</th><th>part</th><th>role</th>"
        f"<th>RSS MiB</th><th>budget MiB</th><th>within</th></tr>{rows}</table>"
    )


# -- the `modematrix report` subcommand -----------------------------------------------------------


def command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Registered through the ``modematrix.commands`` entry point group."""
    parser = sub.add_parser(
        "report",
        help="rebuild the report page of a results/<run-id> folder",
        epilog=example("modematrix report results/20261206-101500-ab12"),
    )
    parser.add_argument("folder", type=Path)
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from topologies.exceptions import UsageError

    try:
        page = build(args.folder)
    except NotResults as exc:
        raise UsageError(str(exc)) from exc
    print(f"report: {page}  (open it in a browser; report.json beside the folder's matrix.json)")
    return 0

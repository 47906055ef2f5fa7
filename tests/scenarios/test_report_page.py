"""The report page, as a person sees it: built from a results folder, opened from disk in
headless Chromium (Debian's chromium, driven by Playwright), the matrix and the plots drawn,
no console errors, and a screenshot kept.

    pytest tests/scenarios/test_report_page.py                         # a page from a made-up run
    MODEMATRIX_REPORT_PAGE=results/report/index.html pytest ...        # the page of a real run
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from scenarios.history import History, Op
from scenarios.report import page
from scenarios.report.results import read, smallest_failing_part

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
SCREENSHOT = Path("results/report-screenshot.png")


def _op(client: str, kind: str, key: str, call: float, ret: float, outcome: str = "ok", **result: object) -> Op:
    args = {"value": result.pop("value")} if kind == "write" else {}
    return Op(client, kind, key, call, ret, outcome, args, dict(result))


def _history(stale: bool) -> History:
    """Two seconds of writes and reads, a kill from 0.8 to 1.4 s; with ``stale``, a read that
    returns an overwritten value after the newer write completed (not linearizable)."""
    history = History()
    t = 100.0
    for i in range(40):
        at = t + i * 0.05
        down = 0.8 <= i * 0.05 < 1.4
        history.add(_op("kv0", "write", "k1", at, at + (0.5 if down else 0.01), "unknown" if down else "ok",
                        value=f"v{i}", revision=i + 1))  # fmt: skip
    history.add(_op("kv1", "read", "k1", t + 2.1, t + 2.11, value="v39", revision=40))
    if stale:
        history.add(_op("kv1", "read", "k1", t + 2.2, t + 2.21, value="v3", revision=4))
    history.add(_op("kv1", "enqueue", "q", t + 0.1, t + 0.12, id="j1"))
    for at, event in ((t + 0.8, "apply kill(node-2)"), (t + 1.3, "heal kill(node-2)"), (t + 1.4, "healthy")):
        history.mark(at, event)
    return history


def _scenario_summary(mode: str, name: str, ops: int, linearizable: str) -> dict[str, object]:
    checks = [
        {"check": "no-lost-writes", "result": "pass", "detail": "every final read explained"},
        {"check": "linearizable-kv", "result": linearizable, "detail": "no linearization for key(s) k1"},
        {"check": "availability", "result": "pass", "detail": "", "fault_unavailability_s": [0.6, 0.9]},
    ]
    counts = {"ops": ops, "ok": ops - 12, "fail": 0, "unknown": 12}
    return {"scenario": name, "mode": mode, "faults": ["kill(node-2)"], **counts} | {
        "passed": linearizable == "pass",
        "checks": checks,
    }


def made_up_run(folder: Path) -> Path:
    """A results folder as `modematrix matrix` leaves it, with two modes and a violation."""
    cells = [
        {"mode": "single", "check": "functional", "status": "pass", "seconds": 12.0, "log": "", "reason": ""},
        {"mode": "single", "check": "failover", "status": "n/a", "seconds": 0.0, "log": "", "reason": "one node"},
        {"mode": "ha", "check": "functional", "status": "pass", "seconds": 20.0, "log": "", "reason": ""},
        {"mode": "ha", "check": "failover", "status": "fail", "seconds": 80.0, "log": "", "reason": ""},
    ]
    matrix = {"run_id": "made-up", "started": "2026-11-27T01:00:00", "modes": ["single", "ha"], "quick": True}
    (folder / "matrix.json").write_text(json.dumps({**matrix, "cells": cells}))
    failover = folder / "ha" / "failover"
    failover.mkdir(parents=True)
    scenarios = []
    for name, stale in (("kill-leader", False), ("stale-read", True)):
        history = _history(stale)
        (failover / f"ha-{name}-history.json").write_text(history.dump())
        scenarios.append(_scenario_summary("ha", name, len(history.ops), "fail" if stale else "pass"))
    (failover / "ha-summary.json").write_text(json.dumps({"scenarios": scenarios}))
    return folder


@pytest.fixture(scope="module")
def page_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("MODEMATRIX_REPORT_PAGE")
    if given:
        return Path(given).resolve()
    return page.build(made_up_run(tmp_path_factory.mktemp("run"))).resolve()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        launched.close()


def test_the_page_opens_from_disk_with_the_matrix_and_plots_and_no_console_errors(
    browser: object, page_file: Path
) -> None:
    tab = browser.new_page(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    problems: list[str] = []
    tab.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    tab.on("pageerror", lambda error: problems.append(str(error)))
    local = ("file:", "data:")
    tab.on("request", lambda request: None if request.url.startswith(local) else problems.append(request.url))
    tab.goto(page_file.as_uri())
    assert tab.locator("#matrix-table tr").count() >= 2, "the mode x check matrix is drawn"
    loaded = "images => images.filter(i => i.complete && i.naturalWidth > 0).length"
    drawn = tab.eval_on_selector_all("img.plot", loaded)
    shown = tab.locator("img.plot").count()
    assert shown >= 1 and drawn == shown, f"{drawn} of {shown} plots rendered"  # every plot the page has
    assert not problems, f"console errors or network requests: {problems}"
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(SCREENSHOT), full_page=False)


def test_a_violation_shows_the_smallest_failing_part_of_the_history(tmp_path: Path) -> None:
    results = read(made_up_run(tmp_path))
    stale = next(s for s in results.scenarios if s.name == "stale-read")
    part = smallest_failing_part(stale, "linearizable-kv", "no linearization for key(s) k1")
    assert part[-1].kind == "read" and part[-1].result["value"] == "v3", "the part ends at the impossible read"
    html_text = page.render(results)
    assert "the smallest part of the history that shows it" in html_text and "FAILED" in html_text
    figures = page.figures(results)
    assert figures["passed"] is False
    assert {u["fault"] for u in figures["unavailability"]} == {"kill-leader", "stale-read"}


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda p: p / "missing", "no such folder"),
        (lambda p: p, "has no matrix.json"),
        (lambda p: (p / "matrix.json").write_text("[1, 2]") and p, "is not a matrix summary"),
        (lambda p: (p / "matrix.json").write_text('{"cells": []}') and p, "has no cells"),
    ],
)
def test_report_of_a_missing_empty_or_foreign_folder_exits_2_with_one_line(
    tmp_path: Path, make: object, says: str
) -> None:
    folder = make(tmp_path)  # type: ignore[operator]
    done = subprocess.run(
        [sys.executable, "-m", "topologies.cli", "report", str(folder)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and says in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_runs_of_several_ci_rows_combine_into_one_page(tmp_path: Path) -> None:
    from scenarios.report.combine import combine

    for row in ("single", "ha"):
        folder = tmp_path / "downloaded" / f"report-{row}" / f"2026-{row}"
        folder.mkdir(parents=True)
        made_up_run(folder)
        matrix = json.loads((folder / "matrix.json").read_text())
        matrix["modes"] = [row]
        matrix["cells"] = [c for c in matrix["cells"] if c["mode"] == row]
        (folder / "matrix.json").write_text(json.dumps(matrix))
    assert combine(tmp_path / "downloaded", tmp_path / "combined") == ["ha", "single"]
    results = read(tmp_path / "combined")
    assert {c["mode"] for c in results.matrix["cells"]} == {"single", "ha"}
    assert {s.name for s in results.scenarios} == {"kill-leader", "stale-read"}
    with pytest.raises(ValueError, match=r"no matrix\.json"):
        combine(tmp_path / "nothing-here", tmp_path / "x")


def test_every_cell_writes_into_its_own_absolute_folder(tmp_path: Path) -> None:
    """A cell runs with its folder as cwd: a relative artifact path would land nested twice."""
    from scenarios.report.matrix import Cell, argv

    folder = (tmp_path / "run" / "ha" / "load").resolve()
    for check in ("functional", "failover", "load", "bench"):
        command = argv(Cell("ha", check), folder, quick=True)
        paths = [arg for arg in command if arg.startswith(str(tmp_path))]
        assert paths and all(Path(arg).is_absolute() for arg in paths), command
    assert "--cycles" in argv(Cell("ha", "failover"), folder, quick=True)
    full = argv(Cell("ha", "failover"), folder, quick=False)
    assert "--cycles" not in full
    # a full failover cell also runs the scenarios that need a run of their own
    assert [Path(a).name for a in full if a.endswith(".py")] == [
        "test_failover.py",
        "test_full_disk.py",
        "test_lazy_fs.py",
    ]
    quick = argv(Cell("ha", "failover"), folder, quick=True)
    assert [Path(a).name for a in quick if a.endswith(".py")] == ["test_failover.py"]


def test_the_failing_part_follows_the_named_key_not_keys_that_contain_its_name(tmp_path: Path) -> None:
    """A verdict about "...-k10" must not pull in "...-k1" (the first version matched by substring)."""
    results = read(made_up_run(tmp_path))
    stale = next(s for s in results.scenarios if s.name == "stale-read")
    stale.ops.append(_op("kv9", "write", "k", 100.0, 100.01, value="other", revision=999))
    part = smallest_failing_part(stale, "linearizable-kv", "no linearization for key(s) k1")
    assert {op.key for op in part} == {"k1"}


def test_the_bench_section_shows_idle_memory_against_each_budget(tmp_path: Path) -> None:
    folder = made_up_run(tmp_path)
    bench = folder / "ha" / "bench"
    bench.mkdir(parents=True, exist_ok=True)
    row = {"mode": "ha", "target": "kv PUT", "rps": 900.0, "p50_ms": 9.0, "p99_ms": 30.0, "errors": 0}
    (bench / "bench-1.json").write_text(json.dumps([{**row, "baseline": "", "ratio": None}]))
    memory = [
        {"mode": "ha", "part": "node-1", "role": "runtime + etcd member", "rss_mib": 56.0, "budget_mib": 96},
        {"mode": "ha", "part": "lb", "role": "haproxy", "rss_mib": 11.0, "budget_mib": None},
        {"mode": "ha", "part": "node-2", "role": "runtime", "rss_mib": 70.5, "budget_mib": 64},
    ]
    (bench / "memory-1.json").write_text(json.dumps(memory))
    html_text = page.render(read(folder))
    assert "<h3>Idle memory</h3>" in html_text
    assert (
        "<td>node-1</td><td>runtime + etcd member</td><td class=num>56.0</td><td class=num>96</td><td>yes</td>"
        in html_text
    )
    assert "<td class=num>11.0</td><td class=num>-</td><td>-</td>" in html_text
    assert "<td class=num>70.5</td><td class=num>64</td><td>no</td>" in html_text

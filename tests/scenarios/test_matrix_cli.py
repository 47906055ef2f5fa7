"""``modematrix matrix`` as a script sees it: --json prints one document that keeps its
schema, with the results folder and the report page in it; a check a mode cannot take is
n/a with the reason, and bad --modes or --checks exit 2 before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from topologies.cli import main, schemas


def test_json_is_the_run_and_keeps_its_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["matrix", "--modes", "single", "--checks", "failover", "--json", "--results", str(tmp_path)])
    document = json.loads(capsys.readouterr().out)
    assert code == 0 and document["passed"] is True
    assert not schemas.problems("matrix", document), schemas.problems("matrix", document)
    (cell,) = document["cells"]
    assert (cell["mode"], cell["status"]) == ("single", "n/a") and "nothing to fail over to" in cell["reason"]
    assert Path(document["report"]).is_file() and Path(document["results"]).is_dir()


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [("--modes", "single,nope", "--modes: expected some of"), ("--checks", "speed", "--checks: expected some of")],
)
def test_bad_modes_or_checks_exit_2(
    flag: str, value: str, says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["matrix", flag, value, "--results", str(tmp_path)]) == 2
    assert says in capsys.readouterr().err and not list(tmp_path.iterdir())


def test_the_first_eta_is_what_the_last_matrix_of_the_same_kind_took(tmp_path: Path) -> None:
    from scenarios.report.matrix import GUESS, QUICK_GUESS, Cell, Progress
    from scenarios.report.results import MATRIX_FILE

    def matrix(run_id: str, quick: bool, cells: list[dict[str, object]]) -> None:
        (tmp_path / run_id).mkdir()
        (tmp_path / run_id / MATRIX_FILE).write_text(json.dumps({"quick": quick, "cells": cells}))

    matrix("20261201-0900-aaaa", False, [{"mode": "ha", "check": "failover", "status": "pass", "seconds": 100.0}])
    matrix("20261202-0900-bbbb", False, [{"mode": "ha", "check": "failover", "status": "pass", "seconds": 200.0}])
    failed = {"mode": "single", "check": "load", "status": "fail", "seconds": 3.0}
    matrix("20261203-0900-cccc", False, [failed])  # a failed cell says little of a passing one's time
    matrix("20261204-0900-dddd", True, [{"mode": "ha", "check": "failover", "status": "pass", "seconds": 50.0}])
    (tmp_path / "20261205-0900-eeee").mkdir()
    (tmp_path / "20261205-0900-eeee" / MATRIX_FILE).write_text("{not json")  # passed over
    cells = [Cell("ha", "failover"), Cell("single", "load")]
    assert Progress(cells, quick=False, results=tmp_path).eta() == 200.0 + GUESS["load"]
    assert Progress(cells, quick=True, results=tmp_path).eta() == 50.0 + QUICK_GUESS["load"]
    assert Progress(cells, quick=False).eta() == GUESS["failover"] + GUESS["load"]

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

"""The mode file's JSON Schema comes from the model the loader validates with, is shipped
beside the mode files (which name it, so editors check them), and agrees with the loader."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from topologies import spec
from topologies.exceptions import SpecError

SHIPPED = spec.MODES_DIR / spec.SCHEMA_FILE


def test_the_shipped_schema_is_the_models() -> None:
    assert json.loads(SHIPPED.read_text()) == spec.schema(), "regenerate: modematrix modes schema > " + str(SHIPPED)


@pytest.mark.parametrize("mode", spec.available())
def test_every_shipped_mode_names_the_schema_and_passes_it(mode: str) -> None:
    path = spec.MODES_DIR / f"{mode}.yaml"
    assert path.read_text().splitlines()[0] == f"# yaml-language-server: $schema={spec.SCHEMA_FILE}"
    jsonschema.validate(yaml.safe_load(path.read_text()), spec.schema())


def test_what_the_schema_refuses_the_loader_refuses_too() -> None:
    typo = {"mode": "mine", "db": "etcd", "nodes": [{"name": "a", "servics": ["kv"]}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(typo, spec.schema())
    with pytest.raises(SpecError, match=r"nodes\[0\]\.services: required; nodes\[0\]\.servics: unknown key"):
        spec.parse(typo)


def test_a_mode_file_with_a_typo_is_refused_by_the_cli_with_exit_2(tmp_path: Path) -> None:
    mine = tmp_path / "mine.yaml"
    mine.write_text("mode: mine\ndb: sqlite\nnodes:\n  - {name: a, services: [all], db_membr: true}\n")
    done = subprocess.run(
        [sys.executable, "-m", "topologies.cli", "modes", "check", str(mine)], capture_output=True, text=True
    )
    assert done.returncode == 2 and "nodes[0].db_membr: unknown key" in done.stderr, done.stderr
    mine.write_text("mode: mine\ndb: sqlite\nnodes:\n  - {name: a, services: [all]}\n")
    fine = subprocess.run(
        [sys.executable, "-m", "topologies.cli", "modes", "check", str(mine), "--json"], capture_output=True, text=True
    )
    assert fine.returncode == 0 and json.loads(fine.stdout) == {"mode": "mine", "db": "sqlite", "nodes": ["a"]}


def test_modes_lists_every_mode_with_its_target(capsys: pytest.CaptureFixture[str]) -> None:
    from topologies import targets
    from topologies.cli import main, schemas

    assert main(["modes", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert not schemas.problems("modes", listed), schemas.problems("modes", listed)
    assert [row["mode"] for row in listed] == targets.modes()
    assert {row["target"] for row in listed} == set(targets.targets())

"""The import arrows of the house stay true: scenarios -> topologies -> images; runtime alone."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("runtime", "images", "topologies", "scenarios", "loadtests")
# package -> the project packages it must never import
FORBIDDEN = {
    "runtime": {"images", "topologies", "scenarios", "loadtests", "tests"},
    "images": {"topologies", "scenarios", "loadtests", "tests"},
    "topologies": {"scenarios", "loadtests", "tests"},
    "scenarios": {"loadtests", "tests"},
    "loadtests": {"scenarios", "tests"},
}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_only_what_the_layout_allows(package: str) -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {sorted(imports_of(path) & FORBIDDEN[package])}"
        for path in sorted((ROOT / package).rglob("*.py"))
        if imports_of(path) & FORBIDDEN[package]
    ]
    assert not offenders, "\n".join(offenders)


def test_the_check_can_fail(tmp_path: Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text("from topologies.wait import wait_until\nimport scenarios.x\n")
    assert imports_of(sample) & FORBIDDEN["runtime"] == {"topologies", "scenarios"}

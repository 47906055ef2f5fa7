"""The import arrows of the house stay true (../shared/STYLE.md):

- scenarios -> topologies -> images, loadtests -> topologies; runtime imports none of them;
- scenarios and loadtests never import docker, testcontainers or a platform implementation;
- in topologies, only the Docker platform module imports docker or testcontainers
  (images/ builds the image and may talk to Docker; the runtime never does).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("runtime", "images", "topologies", "scenarios", "loadtests")
DOCKER = {"docker", "testcontainers"}
PLATFORM_IMPLEMENTATIONS = {"topologies.platforms.docker", "topologies.platforms.fake"}
DOCKER_PLATFORM = ROOT / "topologies" / "platforms" / "docker.py"
# package -> the top-level modules it must never import
FORBIDDEN = {
    "runtime": {"images", "topologies", "scenarios", "loadtests", "tests", *DOCKER},
    "images": {"topologies", "scenarios", "loadtests", "tests"},
    "topologies": {"scenarios", "loadtests", "tests"},
    "scenarios": {"loadtests", "tests", *DOCKER},
    "loadtests": {"scenarios", "tests", *DOCKER},
}


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, by full dotted name."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def tops(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_only_what_the_layout_allows(package: str) -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {sorted(tops(imports_of(path)) & FORBIDDEN[package])}"
        for path in sources(package)
        if tops(imports_of(path)) & FORBIDDEN[package]
    ]
    assert not offenders, "\n".join(offenders)


def test_only_the_docker_platform_imports_docker_in_topologies() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in sources("topologies")
        if path != DOCKER_PLATFORM and tops(imports_of(path)) & DOCKER
    ]
    assert not offenders, f"import docker/testcontainers only in {DOCKER_PLATFORM.relative_to(ROOT)}: {offenders}"


@pytest.mark.parametrize("package", ["scenarios", "loadtests"])
def test_scenarios_and_loadtests_see_only_the_platform_protocol(package: str) -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {sorted(imports_of(path) & PLATFORM_IMPLEMENTATIONS)}"
        for path in sources(package)
        if imports_of(path) & PLATFORM_IMPLEMENTATIONS
    ]
    assert not offenders, "\n".join(offenders)


def test_the_checks_can_fail(tmp_path: Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text("from topologies.wait import wait_until\nimport scenarios.x\nfrom docker import errors\n")
    assert tops(imports_of(sample)) & FORBIDDEN["runtime"] == {"topologies", "scenarios", "docker"}
    sample.write_text("from topologies.platforms.docker import DockerPlatform\n")
    assert imports_of(sample) & PLATFORM_IMPLEMENTATIONS == {"topologies.platforms.docker"}

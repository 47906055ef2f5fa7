"""The import arrows of the house stay true (../shared/STYLE.md):

- scenarios -> topologies -> images, loadtests -> topologies; runtime imports none of them;
- scenarios and loadtests see runs and engines through their protocols, never an engine;
- in topologies, only the Docker engine imports docker or testcontainers (images/ builds the
  image and may talk to Docker; the runtime never does), and only the Kubernetes target
  imports lightkube;
- only ``topologies/targets.py`` names a mode's target: no other module of topologies
  dispatches on the name of a mode (``"k8s"``);
- no module imports itself back through others, counting imports inside functions;
- every package that ships is checked by ``mypy --strict``.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("runtime", "images", "topologies", "scenarios", "loadtests")
DOCKER = {"docker", "testcontainers"}
ENGINE_IMPLEMENTATIONS = {"topologies.engines.docker", "topologies.engines.fake"}
DOCKER_ENGINE = ROOT / "topologies" / "engines" / "docker.py"
KUBERNETES_TARGET = ROOT / "topologies" / "kubernetes"
TARGETS = ROOT / "topologies" / "targets.py"
KUBERNETES_MODE_NAMES = {"k8s"}
# package -> the top-level modules it must never import
FORBIDDEN = {
    "runtime": {"images", "topologies", "scenarios", "loadtests", "tests", *DOCKER},
    "images": {"topologies", "scenarios", "loadtests", "tests"},
    "topologies": {"scenarios", "loadtests", "tests"},
    "scenarios": {"loadtests", "tests", *DOCKER},
    "loadtests": {"scenarios", "tests", *DOCKER},
}


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in it, by full dotted name (``from a import
    b`` counts as both ``a`` and ``a.b``: b may be a module)."""
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


def module_of(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def graph(paths: Iterable[Path], root: Path = ROOT) -> dict[str, set[str]]:
    """module -> the project's modules it imports. ``from a import b`` is an arrow to ``a.b``
    when that is a module, else to ``a``; a package's ``__init__`` run on the way to one of
    its modules is not an arrow (as import-linter and pydeps count)."""
    modules = {module_of(p, root): p for p in paths}
    arrows: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported in imports_of(path):
            if imported in modules:
                targets.add(imported)
        # ``from a import b`` named both a and a.b: keep a only when b is not a module of a
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in modules and node.level == 0:
                if all(f"{node.module}.{a.name}" in modules for a in node.names):
                    targets.discard(node.module)
        targets.discard(name)
        arrows[name] = targets
    return arrows


def cycles(arrows: dict[str, set[str]]) -> list[list[str]]:
    """Each strongly connected group of more than one module (Tarjan), as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in arrows.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(arrows):
        if node not in index:
            visit(node)
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_only_what_the_layout_allows(package: str) -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {sorted(tops(imports_of(path)) & FORBIDDEN[package])}"
        for path in sources(package)
        if tops(imports_of(path)) & FORBIDDEN[package]
    ]
    assert not offenders, "\n".join(offenders)


def test_only_the_docker_engine_imports_docker_in_topologies() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in sources("topologies")
        if path != DOCKER_ENGINE and tops(imports_of(path)) & DOCKER
    ]
    assert not offenders, f"import docker/testcontainers only in {DOCKER_ENGINE.relative_to(ROOT)}: {offenders}"


def test_only_the_kubernetes_target_imports_lightkube_in_topologies() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in sources("topologies")
        if not path.is_relative_to(KUBERNETES_TARGET) and "lightkube" in tops(imports_of(path))
    ]
    assert not offenders, f"import lightkube only under {KUBERNETES_TARGET.relative_to(ROOT)}: {offenders}"


@pytest.mark.parametrize("package", ["scenarios", "loadtests"])
def test_scenarios_and_loadtests_see_only_the_engine_protocol(package: str) -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {sorted(imports_of(path) & ENGINE_IMPLEMENTATIONS)}"
        for path in sources(package)
        if imports_of(path) & ENGINE_IMPLEMENTATIONS
    ]
    assert not offenders, "\n".join(offenders)


def mode_names_in(path: Path) -> list[int]:
    """Lines where ``path`` spells a Kubernetes mode's name as a string of its own (the CLI's
    verb group ``modematrix k8s``, an ``add_parser`` name, is a word of the CLI, not a mode)."""
    tree = ast.parse(path.read_text())
    verbs = {
        id(node.args[0])
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_parser"
        if node.args
    }
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in KUBERNETES_MODE_NAMES
        if id(node) not in verbs
    ]


def test_only_the_targets_table_names_a_kubernetes_mode_in_topologies() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in sources("topologies")
        if path != TARGETS
        for line in mode_names_in(path)
    ]
    assert not offenders, f"ask topologies.targets (target_of, pinnable, ...) instead: {offenders}"


def test_no_module_imports_itself_back() -> None:
    found = cycles(graph(p for package in PACKAGES for p in sources(package)))
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(group) for group in found)


def test_every_shipped_package_is_under_mypy_strict() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    mypy = config["tool"]["mypy"]
    shipped = {pattern.rstrip("*") for pattern in config["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert mypy["strict"] is True and shipped <= set(mypy["packages"]), mypy["packages"]
    skipped = [
        module
        for override in mypy.get("overrides", [])
        if override.get("ignore_errors")
        for module in override["module"]
        if not module.startswith("runtime.rpc.modematrix_pb2")  # protoc's output
    ]
    assert not skipped, f"mypy skips errors in {skipped}"


def test_the_checks_can_fail(tmp_path: Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text("from topologies.wait import wait_until\nimport scenarios.x\nfrom docker import errors\n")
    assert tops(imports_of(sample)) & FORBIDDEN["runtime"] == {"topologies", "scenarios", "docker"}
    sample.write_text("from topologies.engines.docker import DockerEngine\n")
    assert imports_of(sample) & ENGINE_IMPLEMENTATIONS == {"topologies.engines.docker"}
    sample.write_text("def f(mode, sub):\n    sub.add_parser('k8s')\n    return mode == 'k8s'\n")
    assert mode_names_in(sample) == [3]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "one.py").write_text("def later():\n    from pkg import two\n")
    (package / "two.py").write_text("from pkg.one import later\n")
    assert cycles(graph(package.glob("*.py"), root=tmp_path)) == [["pkg.one", "pkg.two"]]

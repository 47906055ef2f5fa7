"""pytest plugin: ``--mode``, ``--platform``, a session-scoped ``cluster`` fixture per mode,
mode markers.

    pytest scenarios --mode single,ha --platform docker

Every test that takes ``cluster`` runs once per selected mode. A test marked with mode
markers (``@pytest.mark.ha``) runs only in those modes. Each mode's cluster starts once per
session and is removed when the session ends (or by the reaper, if the session dies). A
cluster that fails to start is a fixture error naming the node, with its last log lines.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from topologies.constants import MODES, PLATFORMS
from topologies.exceptions import StartTimeout, TopologyError


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("modematrix")
    group.addoption(
        "--mode",
        default="single",
        help=f"comma-separated modes to run scenarios against ({', '.join(MODES)}); default single",
    )
    group.addoption(
        "--platform", default="docker", choices=PLATFORMS, help="where the modes' nodes run; default docker"
    )


def pytest_configure(config: pytest.Config) -> None:
    for mode in MODES:
        config.addinivalue_line("markers", f"{mode}: run only against the {mode} mode")
    config.addinivalue_line("markers", "failover: injects faults into a running cluster")


def selected_modes(config: pytest.Config) -> list[str]:
    modes = [m.strip() for m in str(config.getoption("--mode")).split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise pytest.UsageError(f"--mode: unknown mode {unknown[0]!r}; expected some of {', '.join(MODES)}")
    return modes


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "cluster" not in metafunc.fixturenames:
        return
    marked = {m.name for m in metafunc.definition.iter_markers() if m.name in MODES}
    modes = [m for m in selected_modes(metafunc.config) if not marked or m in marked]
    metafunc.parametrize("cluster", modes, indirect=True, scope="session")


def start_failure(exc: TopologyError) -> str:
    """What a fixture error says: the error, and for a node that did not start, its logs."""
    if isinstance(exc, StartTimeout) and exc.logs:
        tail = "\n".join(exc.logs.splitlines()[-30:])
        return f"{exc}\n--- last 30 log lines of {exc.node} ---\n{tail}"
    return str(exc)


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[object]:
    import topologies

    mode = request.param
    started: object
    try:
        if mode == "k8s":  # a cluster built here: node containers, the mode deployed on them
            from topologies import kuberun

            started = kuberun.start()
        else:
            started = topologies.launch(mode, platform=request.config.getoption("--platform"))
    except TopologyError as exc:
        pytest.fail(f"the {mode} cluster did not start: {start_failure(exc)}", pytrace=False)
    try:
        yield started
    finally:
        started.stop()

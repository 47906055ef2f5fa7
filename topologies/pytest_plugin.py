"""pytest plugin: ``--mode``, a session-scoped ``cluster`` fixture per mode, mode markers.

    pytest scenarios --mode single,ha

Every test that takes ``cluster`` runs once per selected mode. A test marked with mode
markers (``@pytest.mark.ha``) runs only in those modes. Each mode's cluster starts once per
session and is removed when the session ends (or by the reaper, if the session dies).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

MODES = ("single", "ha", "scaled", "k3d")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--mode",
        default="single",
        help="comma-separated modes to run scenarios against (single, ha, scaled, k3d); default single",
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


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[object]:
    import topologies

    mode = request.param
    if mode == "k3d":
        pytest.skip("the k3d mode is not implemented yet (it needs a k3s image; see the README)")
    with topologies.start(mode) as started:
        yield started

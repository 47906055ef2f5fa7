"""Scenario-suite wiring: collect failover results, write the reports, print the table.

The ``cluster`` fixture and ``--mode`` come from the modematrix pytest plugin
(``topologies.pytest_plugin``), registered by the package's entry point.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from scenarios.report import summary as report
from scenarios.runner import Result
from scenarios.workload import WORKLOADS

RESULTS: list[Result] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--results", default="results/failover", help="where failover reports go (JSON, JUnit XML)")
    parser.addoption("--cycles", type=int, default=0, help="fault cycles per scenario (default: the scenario's own)")
    parser.addoption(
        "--workload",
        default="http",
        choices=sorted(WORKLOADS),
        help="the register's clients in the failover traffic: the runtime's HTTP or gRPC API, or etcd's own KV "
        "API straight to the members (ha, scaled; the queue's checks then n/a) (default http)",
    )


@pytest.fixture(scope="session")
def cycles(request: pytest.FixtureRequest) -> int:
    """0: each scenario's own number of fault cycles; N: N cycles each (a quick run)."""
    value = int(request.config.getoption("--cycles"))
    if value < 0:
        raise pytest.UsageError(f"--cycles: expected 0 (the scenario's own) or more, got {value}")
    return value


@pytest.fixture(scope="session")
def traffic_workload(request: pytest.FixtureRequest) -> str:
    """``--workload``: which clients the failover traffic's register ops go through."""
    return str(request.config.getoption("--workload"))


@pytest.fixture(scope="session")
def failover_results() -> list[Result]:
    return RESULTS


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not RESULTS:
        return
    folder = Path(session.config.getoption("--results"))
    modes = "-".join(sorted({r.mode for r in RESULTS}))
    report.write_json(RESULTS, folder / f"{modes}-summary.json")
    report.write_junit(RESULTS, folder / f"{modes}-junit.xml")
    for result in RESULTS:  # the evidence behind every verdict, and the report's timelines
        if result.history is not None:
            (folder / f"{result.mode}-{result.scenario}-history.json").write_text(result.history.dump())


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if RESULTS:
        terminalreporter.section("failover results")
        terminalreporter.write_line(report.table(RESULTS))
        folder = terminalreporter.config.getoption("--results")
        terminalreporter.write_line(f"reports: {folder}/")

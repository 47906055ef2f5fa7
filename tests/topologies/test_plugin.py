"""The pytest plugin's side of errors: a cluster that does not start is a fixture error that
names the node and shows its last 30 log lines."""

from __future__ import annotations

from topologies.exceptions import PortInUse, StartTimeout
from topologies.pytest_plugin import start_failure


def test_a_node_that_did_not_start_is_named_with_its_last_30_log_lines() -> None:
    logs = "\n".join(f"line {i}" for i in range(1, 51))
    text = start_failure(StartTimeout("node kv-1 (mm-x-kv-1) not ready after 5 s", node="kv-1", logs=logs))
    assert text.startswith("node kv-1 (mm-x-kv-1) not ready after 5 s")
    assert "--- last 30 log lines of kv-1 ---" in text
    shown = text.split("---\n", 1)[1].splitlines()
    assert shown == [f"line {i}" for i in range(21, 51)]


def test_other_topology_errors_are_their_one_line() -> None:
    assert start_failure(PortInUse("starting mm-x-lb: a host port is already in use")) == (
        "starting mm-x-lb: a host port is already in use"
    )

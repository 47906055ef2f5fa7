"""Scaling plans (pure) and the CLI's refusals: bad input exits 2 with one line and changes nothing."""

from __future__ import annotations

import pytest

from topologies import spec
from topologies.cli import main
from topologies.containers.scale import decide, parse_counts
from topologies.exceptions import UsageError


def test_scaling_up_names_new_nodes_and_down_drains_the_newest_non_members() -> None:
    scaled = spec.load("scaled")
    up = decide(scaled, {"kv": 4})
    assert [n.name for n in up.add] == ["kv-3", "kv-4"] and all(n.services == ("kv",) for n in up.add)
    assert not any(n.db_member for n in up.add) and up.remove == ()
    down = decide(scaled, {"kv": 1, "auth": 1})
    assert set(down.remove) == {"kv-2", "auth-2"} and down.add == ()
    assert decide(scaled, {"queue": 2}) == decide(scaled, {})


@pytest.mark.parametrize(
    ("mode", "counts", "problem"),
    [
        ("scaled", {"nope": 2}, "unknown service 'nope'"),
        ("scaled", {"ingress": 2}, "unknown service 'ingress'"),
        ("scaled", {"kv": 0}, "expected a count from 1 to 20"),
        ("scaled", {"kv": 21}, "expected a count from 1 to 20"),
        ("ha", {"kv": 2}, "mode ha cannot scale"),
        ("scaled-haproxy", {"kv": 3}, "cannot scale"),
    ],
)
def test_a_plan_the_mode_cannot_hold_is_refused(mode: str, counts: dict[str, int], problem: str) -> None:
    with pytest.raises(UsageError, match=problem):
        decide(spec.load(mode), counts)


@pytest.mark.parametrize("words", [["kv"], ["kv=two"], ["kv=²"], ["=3"], []])
def test_counts_must_be_service_equals_number(words: list[str]) -> None:
    with pytest.raises(UsageError):
        parse_counts(words) if words != ["=3"] else decide(spec.load("scaled"), parse_counts(words))


def test_the_cli_refuses_bad_counts_and_unknown_runs_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scale", "nosuchrun", "kv=two"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["scale", "nosuchrun", "kv=3"]) == 2
    assert "no run 'nosuchrun'" in capsys.readouterr().err

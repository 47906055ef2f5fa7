from __future__ import annotations

import logging
from pathlib import Path

import pytest

from runtime.clock import MAX_SKEW_S, WallClock


class Ticks:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_file_steps_the_wall_clock_once_read_and_not_the_monotonic_one(tmp_path: Path) -> None:
    file, ticks = tmp_path / "clock", Ticks()
    clock = WallClock(file, base=lambda: 1_000.0, monotonic=ticks)
    assert clock() == 1_000.0  # no file: no skew
    file.write_text("+300\n")
    assert clock() == 1_000.0  # read at most once a second
    ticks.now += 1
    assert clock() == 1_300.0 and clock.skew == 300.0
    file.write_text("-120")
    ticks.now += 1
    assert clock() == 880.0
    file.write_text("0")
    ticks.now += 1
    assert clock() == 1_000.0


@pytest.mark.parametrize("text", ["soon", "nan", str(MAX_SKEW_S + 1), ""])
def test_a_file_that_says_something_else_keeps_the_last_skew_and_says_so_once(
    tmp_path: Path, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    file, ticks = tmp_path / "clock", Ticks()
    clock = WallClock(file, base=lambda: 0.0, monotonic=ticks)
    file.write_text("+60")
    assert clock() == 60.0
    file.write_text(text)
    with caplog.at_level(logging.ERROR, logger="runtime.clock"):
        for _ in range(3):
            ticks.now += 1
            assert clock() == 60.0
    assert len([r for r in caplog.records if r.msg == "clock skew file ignored"]) == 1

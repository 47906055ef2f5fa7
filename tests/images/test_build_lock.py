"""Two processes asking for the same image build it once, one after the other: the second
waits on the machine's build lock, then finds the first one's image (images.build.build_lock).
On a fresh machine pytest-xdist's two workers used to build side by side and fail on each
other's log file."""

from __future__ import annotations

import fcntl
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from images.build import build_lock

HOLD = textwrap.dedent(
    """
    import sys
    from images.build import build_lock
    with build_lock("test-image"):
        print("holding", flush=True)
        sys.stdin.readline()
    """
)


def test_the_build_lock_is_held_across_processes_until_released(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODEMATRIX_CACHE", str(tmp_path))
    holder = subprocess.Popen([sys.executable, "-c", HOLD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        with (tmp_path / "locks" / "test-image.lock").open("a") as other:
            with pytest.raises(BlockingIOError):  # another process would wait here
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            holder.communicate("\n", timeout=30)
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released: taken at once
            fcntl.flock(other, fcntl.LOCK_UN)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.communicate()
    with build_lock("test-image"):
        pass

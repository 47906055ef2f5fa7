"""The runc wrapper (images/k8s/host/runc-wrap), which runs as root on the host: it drops the
one capability this kind of host cannot grant, and writes nothing through a path another user
could have prepared (its rewrite once went to a fixed "<file>.mm" beside an exec's process
file, in /tmp)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

WRAP = Path(__file__).resolve().parents[2] / "images" / "k8s" / "host" / "runc-wrap"
CAP_SYS_RESOURCE = 24

pytestmark = pytest.mark.skipif(shutil.which("jq") is None, reason="the wrapper needs jq (.ci/run installs it)")


def host_lacks_sys_resource() -> bool:
    bounding = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("CapBnd"))
    return not int(bounding.split()[1], 16) >> CAP_SYS_RESOURCE & 1


def run_wrapper(process_file: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    real = tmp_path / "real-runc"
    real.write_text('#!/bin/sh\necho "real runc: $*"\n')
    real.chmod(0o755)
    env = {**os.environ, "MODEMATRIX_RUNC": str(real)}
    return subprocess.run(
        ["sh", str(WRAP), "exec", "--process", str(process_file), "container-id"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_wrapper_writes_through_no_planted_symlink(tmp_path: Path) -> None:
    spec = {"capabilities": {"bounding": ["CAP_CHOWN", "CAP_SYS_RESOURCE"], "effective": ["CAP_SYS_RESOURCE"]}}
    process_file = tmp_path / "runc-process123"
    process_file.write_text(json.dumps(spec))
    process_file.chmod(0o600)
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    (tmp_path / "runc-process123.mm").symlink_to(victim)  # what a local user could plant in /tmp
    done = run_wrapper(process_file, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "real runc: exec --process" in done.stdout
    assert victim.read_text() == "untouched\n", "the wrapper wrote through a planted symlink"
    assert oct(process_file.stat().st_mode & 0o777) == "0o600", "the spec's mode is kept, never world-readable"
    rewritten = json.loads(process_file.read_text())["capabilities"]
    if host_lacks_sys_resource():
        assert rewritten == {"bounding": ["CAP_CHOWN"], "effective": []}
    else:
        assert rewritten == spec["capabilities"]
    assert not list(tmp_path.glob(".runc-wrap.*")), "no temporary file left behind"

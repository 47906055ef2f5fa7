"""Every failure a user can cause or meet is one line, with exit 2 for bad input and 1 for a
failed run, and no traceback unless --debug. Run as the user runs it: a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import docker.errors
import pytest
import requests

from topologies.engines.docker import translated
from topologies.exceptions import EngineError, EngineUnavailable, NotFound, PortInUse

NO_DAEMON = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}


def modematrix(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "topologies.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The failure: one line, after any progress lines (``> starting ha``)."""
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("> ")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["up", "nosuchmode"], 2, "no mode 'nosuchmode'; expected one of ha, scaled, scaled-haproxy, single"),
        (["up", "k8s"], 1, "no Docker daemon answers"),
        (["up", "k8s", "--workers", "1"], 2, "--workers: expected 2 or more, got 1"),
        (["up", "ha"], 1, "no Docker daemon answers"),
        (["status"], 1, "no Docker daemon answers"),
        (["down", "abc"], 1, "no Docker daemon answers"),  # containers of no record may be left: it must ask
        (["fault", "abc", "kill", "node-1"], 2, "no run 'abc' on this machine"),
        (["up", "ha", "--workers", "4"], 2, "--workers apply to the Kubernetes modes only"),
        (["up", "k8s", "--control-planes", "2"], 2, "--control-planes: expected 1 or 3 (an etcd quorum), got 2"),
        (["up", "ha", "--control-planes", "3"], 2, "--control-planes apply to the Kubernetes modes only"),
        (["up", "k8s", "--evict-after", "-1"], 2, "--evict-after: expected 0 to 3600 seconds, got -1"),
        (["up", "single", "--evict-after", "30"], 2, "--evict-after apply to the Kubernetes modes only"),
        (["up", "ha", "--timeout", "0"], 2, "--timeout: expected seconds above 0, got 0"),
        (["up", "single", "--data-size", "lots"], 2, "expected a size such as 64MiB, 512m or 1GiB, got 'lots'"),
        (["up", "single", "--data-size", "1MiB"], 2, "--data-size: expected 16 MiB to 64 GiB, got 1048576 bytes"),
        (["up", "k8s", "--data-size", "64MiB"], 2, "--data-size applies to the container modes"),
    ],
)
def test_without_a_daemon_or_with_bad_input_the_cli_says_one_line(args: list[str], code: int, says: str) -> None:
    result = modematrix(*args, env=NO_DAEMON)
    assert result.returncode == code, result.stderr
    assert says in one_line(result)


def test_an_invalid_mode_file_exits_2_naming_every_offender(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text("mode: Mine\ndb: mysql\nnodes: []\n")
    line = one_line(result := modematrix("up", str(tmp_path / "mine.yaml"), env=NO_DAEMON))
    assert result.returncode == 2
    assert "mode: expected a lower-case name" in line and "db: unknown db 'mysql'; expected one of sqlite, etcd" in line


def test_debug_shows_the_traceback() -> None:
    result = modematrix("--debug", "status", env=NO_DAEMON)
    assert result.returncode == 1 and "Traceback" in result.stderr and "EngineUnavailable" in result.stderr


class _Reply:
    status_code, reason, url = 409, "Conflict", "http://docker/x"

    def json(self) -> dict[str, str]:
        return {"message": "x"}


@pytest.mark.parametrize(
    ("raised", "expected", "says"),
    [
        (docker.errors.NotFound("No such container: abc"), NotFound, "No such container"),
        (
            docker.errors.APIError("500", explanation="Bind for 127.0.0.1:8443 failed: port is already allocated"),
            PortInUse,
            "a host port is already in use",
        ),
        (docker.errors.APIError("409", explanation="conflict: name in use"), EngineError, "Docker refused"),
        (requests.exceptions.ConnectionError("Connection refused"), EngineUnavailable, "no Docker daemon"),
        (docker.errors.DockerException("Error while fetching server API version"), EngineUnavailable, "DOCKER_HOST"),
    ],
)
def test_docker_errors_are_translated_at_the_boundary(raised: Exception, expected: type, says: str) -> None:
    with pytest.raises(expected, match=says) as caught:
        with translated("starting mm-x-node-1"):
            raise raised
    assert caught.value.__cause__ is raised and "starting mm-x-node-1" in str(caught.value)


def test_version_answers_before_any_verb_is_imported_and_as_argparse_does() -> None:
    """``modematrix --version`` prints at once, without the Docker and Kubernetes clients every
    verb imports (1.5 s here before), and the same line argparse's --version prints."""
    probe = (
        "import sys; from topologies.cli import main; code = main(['--version']); "
        "print(code, sorted(m for m in ('docker', 'lightkube', 'images', 'topologies.containers') if m in sys.modules))"
    )
    fast = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    line, imported = fast.stdout.splitlines()
    assert imported == "0 []", fast.stdout
    parsed = modematrix("--debug", "--version")  # not the fast path: argparse's version action
    assert parsed.returncode == 0 and parsed.stdout.strip() == line
    assert line.startswith("modematrix ") and line != "modematrix "

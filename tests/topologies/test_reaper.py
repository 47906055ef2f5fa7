"""The Ryuk-compatible reaper, run as a local process against the real Docker daemon."""

from __future__ import annotations

import socket
import subprocess
import sys
import uuid
from pathlib import Path

import docker
import pytest

import images
from tests.conftest import free_port

REAPER = Path(__file__).resolve().parents[2] / "images" / "reaper" / "reaper.py"
pytestmark = pytest.mark.docker


def test_filters_parse_like_ryuk() -> None:
    sys.path.insert(0, str(REAPER.parent))
    try:
        import reaper
    finally:
        sys.path.pop(0)
    assert reaper.parse_filters("label=a=b&label=c\r\n") == {"label": ["a=b", "c"]}
    assert reaper.seconds("10s", 1) == 10 and reaper.seconds("500ms", 1) == 0.5 and reaper.seconds("", 7) == 7


def test_reaper_acks_and_removes_labelled_things_after_the_client_leaves() -> None:
    client = images.docker_client()
    image = images.build(quiet=True, client=client).tag
    session = uuid.uuid4().hex
    label = {"reaper-test": session}
    network = client.networks.create(f"reaper-{session[:8]}", labels=label)
    victim = client.containers.run(image, ["600"], entrypoint=["sleep"], detach=True, labels=label)
    bystander = client.containers.run(
        image, ["600"], entrypoint=["sleep"], detach=True, labels={"reaper-test": "other"}
    )
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(REAPER)],
        env={"REAPER_PORT": str(port), "RYUK_RECONNECTION_TIMEOUT": "1s", "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert "Started!" in (proc.stdout.readline() if proc.stdout else "")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(f"label=reaper-test={session}\r\n".encode())
            assert conn.recv(16) == b"ACK\n"
            victim.reload()
            assert victim.status == "running", "nothing is removed while a client is connected"
        assert proc.wait(30) == 0
        with pytest.raises(docker.errors.NotFound):
            client.containers.get(victim.id)
        with pytest.raises(docker.errors.NotFound):
            client.networks.get(network.id)
        bystander.reload()
        assert bystander.status == "running"
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()
        bystander.remove(force=True)
        for container in client.containers.list(all=True, filters={"label": f"reaper-test={session}"}):
            container.remove(force=True)
        for net in client.networks.list(filters={"label": f"reaper-test={session}"}):
            net.remove()

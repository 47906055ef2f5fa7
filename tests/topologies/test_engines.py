"""Engines plug in from outside: a package that names a class in the ``modematrix.engines``
entry point group is offered by ``--engine`` and used by every verb, with no line of
topologies changed. Shown with a package installed the way pip installs one (a dist-info
folder on the path), whose engine is the recording fake."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tarfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from topologies import engines
from topologies.constants import API_PORT, LABEL_MODE, LABEL_ROLE, LABEL_RUN
from topologies.engines import Engine, Launch
from topologies.engines import docker as docker_engine
from topologies.exceptions import EngineError, NotFound
from topologies.wait import wait_until

PLUGIN = """
from topologies.engines.fake import FakeEngine


class RecordingEngine(FakeEngine):
    name = "recording"

    def __init__(self, *, reaper: bool = True) -> None:
        super().__init__()
        print("recording engine in use", flush=True)
"""


@pytest.fixture
def plugin_path(tmp_path: Path) -> Path:
    (tmp_path / "mm_recording.py").write_text(PLUGIN)
    info = tmp_path / "mm_recording-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mm-recording\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[modematrix.engines]\nrecording = mm_recording:RecordingEngine\n")
    return tmp_path


def run(plugin_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    code = f"import sys; sys.path.insert(0, {str(plugin_path)!r}); from topologies.cli import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)


def test_an_installed_engine_is_offered_and_used(plugin_path: Path) -> None:
    assert "{docker,recording}" in run(plugin_path, "--help").stdout
    started = run(plugin_path, "--engine", "recording", "up", "single", "--timeout", "1")
    assert "recording engine in use" in started.stdout
    assert started.returncode == 1 and "not ready after" in started.stderr, started.stderr


def test_an_unknown_engine_is_refused_with_the_known_ones() -> None:
    with pytest.raises(NotFound, match="no engine 'podman'; expected one of docker"):
        engines.get("podman")


def test_docker_says_its_cgroup_version_and_gives_a_container_its_own_cgroup_namespace() -> None:
    """What the nodes of a cluster built here rely on, against the real Docker: the host's
    cgroup version as the kernel shows it, and ``cgroupns="private"`` making the container's
    own cgroup the root it sees (kind's nodes on cgroup v2; on this v1 machine the default is
    the host's namespace, where the container sees its full path)."""
    engine = engines.get("docker", reaper=False)
    unified = Path("/sys/fs/cgroup/cgroup.controllers").exists()
    assert engine.cgroup_version() == (2 if unified else 1)
    run_id = f"r-cgroupns-{os.getpid()}"
    seen = {}
    try:
        for mode in (None, "private"):
            launch = _probe(engine, run_id, mode or "host", cgroupns=mode)
            code, out = engine.exec(engine.launch(launch), ["cat", "/proc/self/cgroup"])
            assert code == 0, out
            seen[mode] = out.split()
    finally:
        engine.remove_run(run_id)
    assert all(line.endswith(":/") for line in seen["private"]), seen["private"]
    if not unified:
        assert any(not line.endswith(":/") for line in seen[None]), "v1's default: the host's namespace"


def test_a_host_port_taken_between_lookup_and_bind_is_replaced_by_another(monkeypatch: pytest.MonkeyPatch) -> None:
    """A node's host port is a free port looked up before Docker binds it; another process may
    take it in between (pytest-xdist's workers did). The real Docker refuses the bind, and the
    engine starts the container again on another free port."""

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    looked_up: list[int] = []
    real = docker_engine._free_port

    def racing() -> int:  # the first lookup returns the port another process just took
        looked_up.append(taken.getsockname()[1] if not looked_up else real())
        return looked_up[-1]

    monkeypatch.setattr(docker_engine, "_free_port", racing)
    engine = engines.get("docker", reaper=False)
    run_id = f"r-ports-{os.getpid()}"
    try:
        handle = engine.launch(_probe(engine, run_id, "probe", publish=(API_PORT,)))
        assert len(looked_up) == 2, "started again, on a second port"
        assert handle.ports[API_PORT] == looked_up[1] != looked_up[0]
        assert engine.state(handle) == "running"
    finally:
        engine.remove_run(run_id)
        taken.close()


def test_an_image_neither_here_nor_pullable_is_named_with_how_to_make_it() -> None:
    """A runtime image's envoy image missing (an image built before the envoy image was split
    off): the error names the image and the command that makes it, not the registry's DNS."""
    engine = engines.get("docker", reaper=False)
    run_id = f"r-absent-{os.getpid()}"
    absent = "modematrix/runtime:0000000000000000absent-envoy"
    try:
        with pytest.raises(NotFound) as raised:
            engine.launch(replace(_probe(engine, run_id, "probe"), image=absent))
        message = str(raised.value)
        assert f"image {absent} is not on this machine and could not be pulled" in message, message
        assert message.endswith("a runtime image's envoy image is built beside it (`modematrix images build`)")
    finally:
        engine.remove_run(run_id)


def test_a_containers_cpu_time_grows_with_the_work_it_does_and_agrees_with_dockers_stats() -> None:
    """What the bench's CPU table reads: the container's cgroup (a file here, where the daemon
    is this machine's), the same figure as Docker's own stats, growing by the CPU a command in
    it burns."""
    engine = engines.get("docker", reaper=False)
    run_id = f"r-cpu-{os.getpid()}"
    try:
        handle = engine.launch(_probe(engine, run_id, "probe"))
        before = engine.cpu_seconds(handle)
        code, out = engine.exec(
            handle,
            ["python3", "-c", "import time\nend = time.process_time() + 0.5\nwhile time.process_time() < end: pass"],
        )
        assert code == 0, out
        after = engine.cpu_seconds(handle)
        assert after - before >= 0.5, (before, after)
        stats = engine._get(handle).stats(stream=False, one_shot=True)  # type: ignore[attr-defined]
        assert abs(stats["cpu_stats"]["cpu_usage"]["total_usage"] / 1e9 - engine.cpu_seconds(handle)) < 0.1
    finally:
        engine.remove_run(run_id)


def _probe(engine: Engine, run_id: str, suffix: str, **options: Any) -> Launch:
    """A container of the runtime's image that sleeps, labelled as ``run_id``'s probe."""
    return Launch(
        name=f"mm-{run_id}-{suffix}",
        image=engine.image(),
        labels={LABEL_RUN: run_id, LABEL_MODE: "test", LABEL_ROLE: "probe"},
        entrypoint=("sleep",),
        command=("120",),
        **options,
    )


def test_a_push_leaves_no_name_of_the_registry_behind() -> None:
    """``push`` tags the image with the registry's address only to push it; the registry is a
    run's, on a port of that run's, and each ``tox -e k8s`` left one more such name on the
    machine. Against the real Docker and a real registry (Debian's docker-registry)."""
    engine = docker_engine.DockerEngine(reaper=False)
    run_id = f"r-push-{os.getpid()}"
    base = engine.client.images.get(engine.image()).tags[0]  # any image here; the runtime's is
    try:
        launch = Launch(
            name=f"mm-{run_id}-registry",
            image=engine.registry_image(),
            labels={LABEL_RUN: run_id, LABEL_MODE: "test", LABEL_ROLE: "registry"},
            publish=(5000,),
        )
        local = f"127.0.0.1:{engine.launch(launch).ports[5000]}"
        pushed = wait_until(
            lambda: engine.push(base, local), timeout=60, interval=0.5, message="pushed", ignore=(EngineError,)
        )
        assert pushed == f"{local}/{base}"
        assert not [t for i in engine.client.images.list() for t in i.tags if t.startswith(local)]
        assert base in engine.client.images.get(engine.image()).tags, "the image itself stays"
    finally:
        engine.remove_run(run_id)


def test_saved_archives_of_other_image_sets_stay_but_the_oldest_go(tmp_path: Path) -> None:
    """A cluster of another process may be importing its archive, or heal a worker from it:
    saving one image set keeps the archives used last (they were all deleted), and removes
    the oldest and a save that died; two saves of one set never share a partial file."""
    engine = docker_engine.DockerEngine(reaper=False)
    image = engine.registry_image()
    others = [tmp_path / f"{name}.tar" for name in ("newer", "new", "old", "older")]
    for age, other in enumerate(others):
        other.write_bytes(b"not an image")
        os.utime(other, (time.time() - 86400 * (age + 1),) * 2)
    dead = tmp_path / ".abc.1234-5.partial"
    dead.write_bytes(b"half")
    os.utime(dead, (time.time() - 7200,) * 2)
    archive = engine.save_images([image], tmp_path)
    with tarfile.open(archive) as saved:
        assert "manifest.json" in saved.getnames()
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == sorted([archive.name, "new.tar", "newer.tar"]), kept
    stamp = archive.stat().st_mtime
    os.utime(archive, (stamp - 60, stamp - 60))
    assert engine.save_images([image], tmp_path) == archive and archive.stat().st_mtime > stamp - 60  # reused, touched

"""The image's pins: every tool and package that makes image content is pinned in one place,
and every place the host uses a pin agrees with it (issue: a host's newer grpcio-tools once
made stubs that the image's grpcio refused)."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from images import golang, lock
from images.exceptions import LockError
from images.lock import Pin
from images.wheels import ensure_wheelhouse, pins_of

ROOT = Path(__file__).resolve().parents[2]
RUNTIME, BUILD = lock.read(lock.RUNTIME_LOCK), lock.read(lock.BUILD_LOCK)
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_pin_has_a_hash_for_each_architecture_it_was_resolved_for() -> None:
    unhashed = [p.name for p in [*RUNTIME, *BUILD] if not p.hashes]
    assert not unhashed, f"pins without a hash (pip --require-hashes refuses them): {unhashed}"
    assert any(len(p.hashes) >= 2 for p in RUNTIME), "compiled packages carry one hash per architecture"


def test_the_two_locks_agree_on_every_package_both_pin() -> None:
    shared = set(lock.by_key(RUNTIME)) & set(lock.by_key(BUILD))
    assert {"grpcio", "protobuf"} <= shared
    assert lock.disagreements(RUNTIME, BUILD) == []


def test_the_stubs_are_made_by_a_grpcio_tools_the_images_grpcio_accepts() -> None:
    """Generated code needs grpcio >= the grpcio-tools that generated it."""
    grpcio, tools = lock.by_key(RUNTIME)["grpcio"], lock.by_key(BUILD)["grpcio-tools"]
    assert golang.version_tuple(tools.version) <= golang.version_tuple(grpcio.version)
    assert tools.version.split(".")[:2] == grpcio.version.split(".")[:2]
    assert Requirement(lock.tools_requirement(grpcio)).specifier.contains(tools.version)


def test_pyproject_allows_every_locked_version() -> None:
    """`pip install .` on the host accepts the image's versions: the ranges and the locks say
    the same thing, and the host's own grpcio-tools (the tools extra) includes the locked one."""
    pinned = {**lock.by_key(BUILD), **lock.by_key(RUNTIME)}
    wanted = [*PYPROJECT["project"]["dependencies"], *PYPROJECT["project"]["optional-dependencies"]["tools"]]
    checked = 0
    for text in wanted:
        requirement = Requirement(text)
        pin = pinned.get(Pin(requirement.name, "").key)
        if pin is None:
            continue  # a host-only tool (docker, testcontainers, rich, httpx): nothing of it enters the image
        checked += 1
        assert requirement.specifier.contains(pin.version), f"{text} excludes the locked {pin.name}=={pin.version}"
    assert checked >= len(PYPROJECT["project"]["dependencies"]) + 1  # every runtime dependency and grpcio-tools


def test_every_runtime_dependency_is_locked() -> None:
    pinned = lock.by_key(RUNTIME)
    missing = [r for r in PYPROJECT["project"]["dependencies"] if Pin(Requirement(r).name, "").key not in pinned]
    assert not missing, f"runtime dependencies without a pin in images/requirements.lock: {missing}"


def test_every_pip_install_in_the_dockerfile_is_hash_checked_from_a_lock() -> None:
    dockerfile = (ROOT / "images" / "Dockerfile").read_text().replace("\\\n", " ")
    installs = re.findall(r"pip install[^&]*", dockerfile)
    assert len(installs) == 2, installs  # the image's venv, and the stubs stage's protoc
    for install in installs:
        assert "--no-index" in install and "--require-hashes" in install and ".lock" in install, install
    assert "grpc_tools.protoc" in dockerfile and "runtime.rpc.stubs check" in dockerfile


def test_every_go_module_builds_with_the_pinned_toolchain() -> None:
    modules = sorted(ROOT.glob("images/**/go.mod")) + sorted(ROOT.glob("loadtests/**/go.mod"))
    assert len(modules) >= 4
    for module in modules:
        assert golang.go_directive(module) <= golang.version_tuple(golang.TOOLCHAIN), module
        assert "toolchain" not in module.read_text(), f"{module}: the toolchain is pinned in images/golang.py only"
    assert golang.env({})["GOTOOLCHAIN"] == golang.TOOLCHAIN
    assert "-mod=readonly" in golang.env({})["GOFLAGS"]


def test_the_bench_builds_its_generators_with_the_pinned_toolchain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from loadtests import bench

    seen: dict[str, str] = {}

    def fake_run(command: list[str], *, env: dict[str, str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        seen.update(env)
        Path(command[command.index("-o") + 1]).write_text("")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setenv("MODEMATRIX_CACHE", str(tmp_path))
    monkeypatch.setattr(subprocess, "run", fake_run)
    bench.go_binary(bench.GRPCLOAD)
    assert seen["GOTOOLCHAIN"] == golang.TOOLCHAIN


def test_the_wheelhouse_gives_the_image_only_the_locked_wheels(tmp_path: Path) -> None:
    pins = pins_of()
    for pin in pins:
        (tmp_path / f"{pin.wheel_prefix}py3-none-any.whl").write_bytes(b"")
    (tmp_path / "grpcio_tools-1.99.0-cp311-cp311-manylinux2014_x86_64.whl").write_bytes(b"")  # a newer one
    given = ensure_wheelhouse(tmp_path, arch="amd64")
    assert len(given) == len(pins)
    assert not [w for w in given if "1.99.0" in w.name]


def test_a_bad_lock_line_is_named() -> None:
    with pytest.raises(LockError, match=r"x.lock:2: expected NAME==VERSION"):
        lock.parse("ok==1.0\nstarlette>=1\n", source="x.lock")


def test_architectures_that_disagree_on_a_version_are_refused() -> None:
    amd = {"a": Pin("a", "1.0", ("sha256:1",))}
    arm = {"a": Pin("a", "1.1", ("sha256:2",))}
    with pytest.raises(LockError, match=r"a resolves to 1\.0 on one architecture, 1\.1 on arm64"):
        lock.merge({"amd64": amd, "arm64": arm})
    merged = lock.merge({"amd64": amd, "arm64": {"a": Pin("a", "1.0", ("sha256:2",))}})
    assert merged == [Pin("a", "1.0")] and merged[0].hashes == ("sha256:1", "sha256:2")


def test_a_refresh_keeps_every_pin_unless_told_to_upgrade() -> None:
    current = [Pin("grpcio", "1.85.3"), Pin("protobuf", "7.36.2")]
    assert lock.keep(current, False) == ["grpcio==1.85.3", "protobuf==7.36.2"]
    assert lock.keep(current, True) == []
    assert lock.keep(current, ["GRPCIO"]) == ["protobuf==7.36.2"]


def test_the_locks_are_written_as_they_are_read(tmp_path: Path) -> None:
    refreshed = lock.Refreshed(RUNTIME, BUILD)
    lock.write(refreshed, runtime_lock=tmp_path / "r.lock", build_lock=tmp_path / "b.lock")
    assert lock.read(tmp_path / "r.lock") == RUNTIME
    assert [p.hashes for p in lock.read(tmp_path / "b.lock")] == [p.hashes for p in BUILD]
    grpcio = lock.by_key(RUNTIME)["grpcio"].version
    with pytest.raises(LockError, match=f"grpcio: {grpcio} in one lock, 9.9.9 in another"):
        lock.write(lock.Refreshed(RUNTIME, [Pin("grpcio", "9.9.9")]), runtime_lock=tmp_path / "r", build_lock=tmp_path)

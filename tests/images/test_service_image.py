"""A service's image from a folder: the shared apt preamble (``images/apt-install``) is in
every context, a folder's own file of that name wins, and a real build with it installs a
Debian package and leaves no apt lists or caches in the layer."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from images import base, service
from images.exceptions import BuildFailed, ImageError


def folder(tmp_path: Path, dockerfile: str) -> Path:
    (tmp_path / "Dockerfile").write_text(dockerfile)
    return tmp_path


def test_every_context_gets_the_shared_apt_install_and_a_folders_own_wins(tmp_path: Path) -> None:
    given = folder(tmp_path, "FROM ${BASE}\n")
    assert service.context_files(given)["apt-install"] == service.APT_INSTALL.read_bytes()
    (given / "apt-install").write_text("#!/bin/sh\necho mine\n")
    assert service.context_files(given)["apt-install"] == b"#!/bin/sh\necho mine\n"


def test_a_folder_without_a_dockerfile_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="no Dockerfile"):
        service.context_files(tmp_path)


@pytest.mark.docker
def test_a_build_with_apt_install_has_the_package_and_no_apt_lists(tmp_path: Path) -> None:
    dockerfile = (
        "ARG BASE=debian:bookworm-slim\nFROM ${BASE}\nUSER root\n"
        "COPY apt-install /usr/local/sbin/apt-install\nRUN /usr/local/sbin/apt-install hello\n"
    )
    tag = service.build(folder(tmp_path, dockerfile), "modematrix/test-apt-install")
    try:
        said = subprocess.run(
            [
                "docker",
                "run",
                "--rm",
                "--entrypoint",
                "/bin/sh",
                tag,
                "-c",
                "hello; ls /var/lib/apt/lists /var/cache/apt",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert said.returncode == 0, said.stderr
        lines = said.stdout.split()
        assert lines[:2] == ["Hello,", "world!"]
        assert [name for name in lines[2:] if name.endswith((".bin", "_Packages", "InRelease"))] == []
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, check=False)


@pytest.mark.parametrize("given", ["mirror.example/debian", "ftp://mirror.example/debian", "http://"])
def test_a_mirror_that_is_not_a_url_is_refused_naming_it(given: str) -> None:
    with pytest.raises(ImageError, match=f"MODEMATRIX_DEBIAN_MIRROR={given!r}: expected an http:// or https:// URL"):
        base.debian_mirror({"MODEMATRIX_DEBIAN_MIRROR": given})


@pytest.mark.docker
def test_the_mirror_of_the_environment_is_the_one_a_build_uses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEMATRIX_DEBIAN_MIRROR", "http://127.0.0.1:9/nowhere")  # refused at once
    dockerfile = (
        "ARG BASE=debian:bookworm-slim\nFROM ${BASE}\nUSER root\nARG DEBIAN_MIRROR\n"
        "COPY apt-install /usr/local/sbin/apt-install\nRUN /usr/local/sbin/apt-install hello\n"
    )
    with pytest.raises(BuildFailed) as failed:
        service.build(folder(tmp_path, dockerfile), "modematrix/test-apt-mirror")
    assert "127.0.0.1:9/nowhere" in failed.value.log_path.read_text()

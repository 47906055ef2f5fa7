"""What changes the image tag, and what does not."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from images.lock import Pin
from images.tag import content_tag, image_inputs
from images.wheels import missing

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for part in ("images/Dockerfile", "images/requirements.lock", "images/build.lock", "images/.dockerignore"):
        (tmp_path / part).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / part, tmp_path / part)
    shutil.copytree(ROOT / "runtime", tmp_path / "runtime", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def tag(tree: Path, base: str = "sha256:base", platform: str = "amd64") -> str:
    return content_tag(image_inputs(tree), base_id=base, platform=platform)


def test_same_inputs_same_tag(tree: Path) -> None:
    assert tag(tree) == tag(tree)


@pytest.mark.parametrize(
    "changed",
    [
        "runtime/routing.py",
        "images/Dockerfile",
        "images/requirements.lock",
        "images/build.lock",
        "runtime/services/kv.py",
        "runtime/rpc/modematrix.proto",
    ],
)
def test_a_change_to_an_input_changes_the_tag(tree: Path, changed: str) -> None:
    before = tag(tree)
    with (tree / changed).open("a") as f:
        f.write("\n# one more line\n")
    assert tag(tree) != before


def test_a_new_runtime_file_changes_the_tag(tree: Path) -> None:
    before = tag(tree)
    (tree / "runtime" / "extra.py").write_text("X = 1\n")
    assert tag(tree) != before


def test_base_and_platform_change_the_tag(tree: Path) -> None:
    assert tag(tree, base="sha256:other") != tag(tree)
    assert tag(tree, platform="arm64") != tag(tree)


def test_times_caches_tests_and_docs_do_not_change_the_tag(tree: Path) -> None:
    before = tag(tree)
    (tree / "runtime" / "__pycache__").mkdir(exist_ok=True)
    (tree / "runtime" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    (tree / "README.md").write_text("docs")
    (tree / "tests").mkdir()
    (tree / "tests" / "test_x.py").write_text("def test(): pass\n")
    (tree / "runtime" / "app.py").touch()
    assert tag(tree) == before


def test_renaming_a_file_changes_the_tag(tree: Path) -> None:
    before = tag(tree)
    (tree / "runtime" / "files.py").rename(tree / "runtime" / "files2.py")
    assert tag(tree) != before


def test_the_tag_needs_no_tool_of_the_host(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The image makes its own stubs: hashing its inputs must not run the host's protoc (a
    newer grpcio-tools on the host once changed what went into the image)."""
    import sys

    monkeypatch.setitem(sys.modules, "grpc_tools", None)  # import grpc_tools now raises ImportError
    assert tag(tree) == tag(tree)


def test_a_checkouts_own_stubs_do_not_change_the_tag(tree: Path) -> None:
    before = tag(tree)
    (tree / "runtime" / "rpc" / "modematrix_pb2_grpc.py").write_text("GRPC_GENERATED_VERSION = '99.0.0'\n")
    assert tag(tree) == before


def test_wheelhouse_knows_what_it_lacks(tmp_path: Path) -> None:
    pins = [Pin("PyJWT", "2.15.1"), Pin("typing_extensions", "4.16.0")]
    (tmp_path / "pyjwt-2.15.1-py3-none-any.whl").write_bytes(b"")
    assert missing(pins, tmp_path) == [Pin("typing_extensions", "4.16.0")]

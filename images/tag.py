"""The image tag is a hash of everything that goes into the image, and nothing else.

Pure: callers pass the files' bytes. What counts: the Dockerfile, both locks, every runtime
source file (path and bytes; the .proto among them: the image generates its stubs from it,
with the locked grpcio-tools), the base image's id and the platform. What does not: file
times, caches (``__pycache__``), a checkout's own generated stubs, whatever tools the host
has installed, tests, docs, and anything outside ``runtime/``.

>>> a = content_tag({"Dockerfile": b"FROM x"}, base_id="sha256:1", platform="amd64")
>>> a == content_tag({"Dockerfile": b"FROM x"}, base_id="sha256:1", platform="amd64")
True
>>> a == content_tag({"Dockerfile": b"FROM y"}, base_id="sha256:1", platform="amd64")
False
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from pathlib import Path

SKIP_PARTS = {"__pycache__", ".pytest_cache", ".mypy_cache"}
SOURCE_SUFFIXES = {".py", ".json", ".yaml", ".txt", ".proto"}
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def content_tag(files: Mapping[str, bytes], *, base_id: str, platform: str) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        data = files[name]
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    digest.update(f"base\0{base_id}\0platform\0{platform}".encode())
    return digest.hexdigest()[:20]


def runtime_sources(root: Path) -> Iterator[Path]:
    """The files of the runtime package that belong in the image, in a stable order."""
    for path in sorted((root / "runtime").rglob("*")):
        if path.name.endswith(GENERATED_SUFFIXES):
            continue  # a checkout's own stubs: the image generates its own
        if path.is_file() and not SKIP_PARTS & set(path.parts) and path.suffix in SOURCE_SUFFIXES:
            yield path


def image_inputs(root: Path) -> dict[str, bytes]:
    """Context-relative name -> bytes, for every input of the image."""
    images = root / "images"
    files = {
        "Dockerfile": (images / "Dockerfile").read_bytes(),
        "requirements.lock": (images / "requirements.lock").read_bytes(),
        "build.lock": (images / "build.lock").read_bytes(),
        ".dockerignore": (images / ".dockerignore").read_bytes(),
    }
    for path in runtime_sources(root):
        files[path.relative_to(root).as_posix()] = path.read_bytes()
    return files

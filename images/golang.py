"""The Go toolchain every Go build of the project uses, pinned here and nowhere else.

The Kubernetes components, CoreDNS and pause (the k8s node image) and the bench's load
generators are built by whatever ``go`` the machine has, told to use exactly
:data:`TOOLCHAIN` (``GOTOOLCHAIN``, Go 1.21 and newer): the machine's own when it is that
version, else the same release fetched once through the module proxy
(``golang.org/toolchain``). So a newer Go on the host changes no binary until this line is
changed on purpose. Modules (go.mod, go.sum) pin everything else; ``-mod=readonly`` refuses
any change to them during a build.

>>> env({"PATH": "/bin"})["GOTOOLCHAIN"] == TOOLCHAIN
True
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from images.build import cache_dir
from images.exceptions import ImageError

LAZYFS = Path(__file__).with_name("lazyfs")  # the fault layer under a node's data dir (up --lazy-fs)
TOOLCHAIN = "go1.26.8"  # change on purpose; the components' cache folder and image tag follow it
_GO_DIRECTIVE = re.compile(r"^go (\d+)\.(\d+)(?:\.(\d+))?\s*$", re.MULTILINE)


def go() -> str:
    """The machine's ``go`` (PATH, or the usual /usr/local/go)."""
    local = Path("/usr/local/go/bin/go")
    found = shutil.which("go") or (str(local) if local.exists() else None)
    if found is None:
        raise ImageError(f"building needs Go 1.21 or newer (it fetches {TOOLCHAIN} itself): install Go")
    return found


def env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a Go build: the pinned toolchain, static binaries, modules read-only."""
    return {
        **(os.environ if base is None else base),
        "GOTOOLCHAIN": TOOLCHAIN,
        "CGO_ENABLED": "0",
        "GOFLAGS": "-mod=readonly -trimpath",
    }


def version_tuple(text: str) -> tuple[int, ...]:
    """``go1.26.8`` or ``1.24.0`` -> (1, 26, 8).

    >>> version_tuple("go1.26.8") > version_tuple("1.24.0")
    True
    """
    return tuple(int(part) for part in text.removeprefix("go").split("."))


def go_directive(go_mod: Path) -> tuple[int, ...]:
    """The minimum Go a module declares (its ``go`` line)."""
    found = _GO_DIRECTIVE.search(go_mod.read_text())
    if found is None:
        raise ImageError(f"{go_mod}: no `go` line")
    return tuple(int(part) for part in found.groups() if part is not None)


def binary(folder: Path) -> Path:
    """The static binary of the Go module in ``folder`` (the bench's load generators,
    images/lazyfs), built once per source version and toolchain into the cache; Go keeps its
    module and build caches between runs on the same machine."""
    sources = sorted(p for p in folder.iterdir() if p.suffix == ".go" or p.name in ("go.mod", "go.sum"))
    digest = hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in sources) + TOOLCHAIN.encode())
    built_binary = cache_dir() / "bin" / f"{folder.name}-{digest.hexdigest()[:16]}"
    if built_binary.exists():
        return built_binary
    built_binary.parent.mkdir(parents=True, exist_ok=True)
    partial = built_binary.with_name(f"{built_binary.name}.{os.getpid()}")  # two builders never share a file
    command = [go(), "build", "-o", str(partial), "."]
    built = subprocess.run(command, cwd=folder, env=env(), capture_output=True, text=True, timeout=900)
    if built.returncode != 0:
        raise ImageError(f"building {folder.name} (Go) failed: {built.stderr.strip()[-500:]}")
    partial.replace(built_binary)
    return built_binary

"""The wheelhouse: a wheel for every pin of the image's locks, for its Python and platform.

Wheels are fetched on the host (which can reach PyPI, or a mirror pip is configured for),
checked against the locks' hashes as they arrive, and installed in the image with
``pip install --no-index --require-hashes``: no step inside the Dockerfile needs the network
for Python, and a wheel that is not the locked one is refused there too. For air-gapped
machines, fill a wheelhouse where PyPI is reachable (``modematrix images wheels DIR``), carry
it over, and point ``MODEMATRIX_WHEELHOUSE`` at it: a complete wheelhouse is used as is,
without any download.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from images.exceptions import WheelsUnavailable
from images.lock import BUILD_LOCK, IMAGE_PYTHON, RUNTIME_LOCK, Pin, by_key, manylinux_platforms, read

LOCKS = (RUNTIME_LOCK, BUILD_LOCK)


def pins_of(locks: Sequence[Path] = LOCKS) -> list[Pin]:
    """Every pin of the locks, once (the locks agree where they overlap: images.lock checks)."""
    return list(by_key(pin for lock in locks for pin in read(lock)).values())


def missing(pins: list[Pin], wheelhouse: Path) -> list[Pin]:
    have = [p.name.lower() for p in wheelhouse.glob("*.whl")] if wheelhouse.is_dir() else []
    return [pin for pin in pins if not any(name.startswith(pin.wheel_prefix) for name in have)]


def _download(absent: list[Pin], wheelhouse: Path, arch: str) -> subprocess.CompletedProcess[str]:
    wheelhouse.mkdir(parents=True, exist_ok=True)
    platforms = [arg for p in manylinux_platforms(arch) for arg in ("--platform", p)]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", prefix="modematrix-wheels-") as wanted:
        wanted.write("\n".join(p.line() for p in absent) + "\n")
        wanted.flush()
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--disable-pip-version-check",
            "--no-deps",
            "--require-hashes",
            "--only-binary=:all:",
            "--implementation",
            "cp",
            "--python-version",
            IMAGE_PYTHON,
            *platforms,
            "--dest",
            str(wheelhouse),
            "-r",
            wanted.name,
        ]
        return subprocess.run(command, capture_output=True, text=True, check=False)


def ensure_wheelhouse(wheelhouse: Path, *, arch: str, locks: Sequence[Path] = LOCKS) -> list[Path]:
    """Make sure ``wheelhouse`` holds a wheel for every pin; download only what is missing.
    Returns the wheels of the pins (a shared wheelhouse may hold others: they stay out)."""
    pins = pins_of(locks)
    absent = missing(pins, wheelhouse)
    if absent:
        result = _download(absent, wheelhouse, arch)
        still = missing(pins, wheelhouse)
        if result.returncode != 0 or still:
            tail = "\n".join(result.stderr.strip().splitlines()[-5:])
            raise WheelsUnavailable(
                f"the wheelhouse {wheelhouse} lacks {', '.join(f'{p.name}=={p.version}' for p in still or absent)} "
                f"and pip could not download them:\n{tail}\n"
                "On a machine that reaches PyPI run `modematrix images wheels DIR`, copy DIR here, and set "
                "MODEMATRIX_WHEELHOUSE=DIR."
            )
    names = [p.wheel_prefix for p in pins]
    return sorted(w for w in wheelhouse.glob("*.whl") if any(w.name.lower().startswith(n) for n in names))

"""The wheelhouse: every pinned dependency as a wheel for the image's Python and platform.

Wheels are fetched on the host (which can reach PyPI, or a mirror pip is configured for)
and installed in the image with ``pip install --no-index``: no step inside the Dockerfile
needs the network for Python. For air-gapped machines, fill a wheelhouse where PyPI is
reachable (``modematrix images wheels --dest DIR``), carry it over, and point
``MODEMATRIX_WHEELHOUSE`` at it: a complete wheelhouse is used as is, without any download.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from images.exceptions import WheelsUnavailable

IMAGE_PYTHON = "311"  # Debian bookworm's python3
_PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.+\-]+)")


@dataclass(frozen=True)
class Pin:
    name: str
    version: str

    @property
    def wheel_prefix(self) -> str:
        """Wheel file names normalise the project name: ``PyJWT`` -> ``pyjwt``, ``a-b`` -> ``a_b``."""
        return f"{re.sub(r'[-_.]+', '_', self.name).lower()}-{self.version}-"


def read_lock(lock: Path) -> list[Pin]:
    pins = []
    for number, line in enumerate(lock.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        found = _PIN.match(line)
        if not found:
            raise WheelsUnavailable(f"{lock}:{number}: expected NAME==VERSION, got {line!r}")
        pins.append(Pin(found[1], found[2]))
    return pins


def missing(pins: list[Pin], wheelhouse: Path) -> list[Pin]:
    have = [p.name.lower() for p in wheelhouse.glob("*.whl")] if wheelhouse.is_dir() else []
    return [pin for pin in pins if not any(name.startswith(pin.wheel_prefix) for name in have)]


def manylinux_platforms(arch: str) -> list[str]:
    machine = {"amd64": "x86_64", "x86_64": "x86_64", "arm64": "aarch64", "aarch64": "aarch64"}.get(arch, arch)
    return [f"manylinux_2_{minor}_{machine}" for minor in range(36, 16, -1)] + [f"manylinux2014_{machine}"]


def ensure_wheelhouse(lock: Path, wheelhouse: Path, *, arch: str) -> list[Path]:
    """Make sure ``wheelhouse`` holds a wheel for every pin; download only what is missing."""
    pins = read_lock(lock)
    absent = missing(pins, wheelhouse)
    if absent:
        wheelhouse.mkdir(parents=True, exist_ok=True)
        platforms = [arg for p in manylinux_platforms(arch) for arg in ("--platform", p)]
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--disable-pip-version-check",
            "--no-deps",
            "--only-binary=:all:",
            "--implementation",
            "cp",
            "--python-version",
            IMAGE_PYTHON,
            *platforms,
            "--dest",
            str(wheelhouse),
            *(f"{p.name}=={p.version}" for p in absent),
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        still = missing(pins, wheelhouse)
        if result.returncode != 0 or still:
            tail = "\n".join(result.stderr.strip().splitlines()[-5:])
            raise WheelsUnavailable(
                f"the wheelhouse {wheelhouse} lacks {', '.join(f'{p.name}=={p.version}' for p in still or absent)} "
                f"and pip could not download them:\n{tail}\n"
                "On a machine that reaches PyPI run `modematrix images wheels --dest DIR`, copy DIR here, and set "
                "MODEMATRIX_WHEELHOUSE=DIR."
            )
    names = [p.wheel_prefix for p in pins]
    return sorted(w for w in wheelhouse.glob("*.whl") if any(w.name.lower().startswith(n) for n in names))

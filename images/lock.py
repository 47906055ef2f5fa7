"""The image's locks: every Python package that goes into the image or makes part of it,
pinned by version and by the SHA-256 of its wheels, in one place each.

    images/requirements.lock   what the image's venv installs (the runtime's dependencies)
    images/build.lock          what a build stage installs to *make* image content: grpcio-tools,
                               whose protoc turns runtime/rpc/modematrix.proto into the stubs

Both are installed inside ``docker build`` with ``pip --no-index --require-hashes`` from the
wheelhouse the host fills (:mod:`images.wheels`), so nothing the host happens to have installed
reaches the image: a newer grpcio-tools on PyPI or on the host changes nothing until someone
refreshes the locks on purpose::

    modematrix images lock                       # add what pyproject gained; keep every other pin
    modematrix images lock --upgrade             # re-resolve everything to the newest allowed
    modematrix images lock --upgrade-package grpcio --upgrade-package grpcio-tools

Resolution asks pip what it would install for the image's Python (CPython 3.11, Debian
bookworm) on each architecture (``pip install --dry-run --report``, binary wheels only) and
keeps the hashes of every architecture's wheel. grpcio-tools is chosen to match the image's
grpcio: the newest release of the same minor version that is not newer than it (the stubs it
generates need ``grpcio>=`` its own version).

>>> pins = parse("a==1.0 --hash=sha256:aa\\n# comment\\nB_c==2.0  # why\\n", source="x.lock")
>>> [(p.name, p.version, p.hashes) for p in pins]
[('a', '1.0', ('sha256:aa',)), ('B_c', '2.0', ())]
>>> pins[1].key
'b-c'
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from images.exceptions import LockError

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_LOCK = ROOT / "images" / "requirements.lock"
BUILD_LOCK = ROOT / "images" / "build.lock"
PYPROJECT = ROOT / "pyproject.toml"
IMAGE_PYTHON = "311"  # Debian bookworm's python3
ARCHES = ("amd64", "arm64")
BUILD_TOOLS = ("grpcio-tools",)  # what the stubs stage runs; its dependencies come along
_PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.+!\-]+)((?:\s+--hash=sha256:[0-9a-f]+)*)\s*$")


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    hashes: tuple[str, ...] = field(default=(), compare=False)

    @property
    def key(self) -> str:
        """The name as PyPI compares it (PEP 503): ``PyJWT`` -> ``pyjwt``, ``a_b`` -> ``a-b``."""
        return re.sub(r"[-_.]+", "-", self.name).lower()

    @property
    def wheel_prefix(self) -> str:
        """Wheel file names normalise the project name: ``PyJWT`` -> ``pyjwt``, ``a-b`` -> ``a_b``."""
        return f"{self.key.replace('-', '_')}-{self.version}-"

    def line(self) -> str:
        return " ".join([f"{self.name}=={self.version}", *(f"--hash={h}" for h in self.hashes)])


def parse(text: str, *, source: str) -> list[Pin]:
    """``NAME==VERSION [--hash=sha256:HEX ...]`` per line; comments and blank lines ignored."""
    pins = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        found = _PIN.match(line)
        if not found:
            raise LockError(f"{source}:{number}: expected NAME==VERSION [--hash=sha256:HEX ...], got {line!r}")
        hashes = tuple(h.removeprefix("--hash=") for h in found[3].split())
        pins.append(Pin(found[1], found[2], hashes))
    return pins


def read(path: Path) -> list[Pin]:
    try:
        return parse(path.read_text(), source=path.name)
    except OSError as exc:
        raise LockError(f"cannot read {path}: {exc.strerror}") from None


def by_key(pins: Iterable[Pin]) -> dict[str, Pin]:
    return {p.key: p for p in pins}


def render(pins: Iterable[Pin], header: str) -> str:
    body = "\n".join(p.line() for p in sorted(pins, key=lambda p: p.key))
    return header.rstrip() + "\n" + body + "\n"


def disagreements(*locks: Sequence[Pin]) -> list[str]:
    """Packages pinned in more than one lock to different versions (they share one venv's
    worth of truth: the stubs stage's grpcio must be the image's grpcio)."""
    seen: dict[str, Pin] = {}
    found = []
    for lock in locks:
        for pin in lock:
            other = seen.setdefault(pin.key, pin)
            if other.version != pin.version:
                found.append(f"{pin.name}: {other.version} in one lock, {pin.version} in another")
    return found


# -- refreshing ----------------------------------------------------------------------------


def declared(pyproject: Path = PYPROJECT) -> list[str]:
    """The runtime's dependencies as pyproject.toml declares them (what the image needs)."""
    return list(tomllib.loads(pyproject.read_text())["project"]["dependencies"])


def machine(arch: str) -> str:
    return {"amd64": "x86_64", "x86_64": "x86_64", "arm64": "aarch64", "aarch64": "aarch64"}.get(arch, arch)


def manylinux_platforms(arch: str) -> list[str]:
    """The wheel platforms Debian bookworm (glibc 2.36) runs, newest first."""
    name = machine(arch)
    return [f"manylinux_2_{minor}_{name}" for minor in range(36, 16, -1)] + [f"manylinux2014_{name}"]


def resolve(requirements: Sequence[str], constraints: Sequence[str], *, arch: str) -> dict[str, Pin]:
    """What pip would install for the image's Python on ``arch``: key -> Pin with that
    wheel's hash. Raises LockError with pip's own last lines when it cannot resolve."""
    with tempfile.TemporaryDirectory(prefix="modematrix-lock-") as tmp:
        folder = Path(tmp)
        (folder / "requirements.txt").write_text("\n".join(requirements) + "\n")
        (folder / "constraints.txt").write_text("\n".join(constraints) + "\n")
        platforms = [arg for p in manylinux_platforms(arch) for arg in ("--platform", p)]
        command = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--disable-pip-version-check",
            "--target",
            str(folder / "never-written"),  # pip asks for one with --platform; --dry-run writes nothing
            "--report",
            str(folder / "report.json"),
            "--only-binary=:all:",
            "--implementation",
            "cp",
            "--python-version",
            IMAGE_PYTHON,
            *platforms,
            "-r",
            str(folder / "requirements.txt"),
            "-c",
            str(folder / "constraints.txt"),
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = "\n".join(done.stderr.strip().splitlines()[-6:])
            raise LockError(f"pip could not resolve {', '.join(requirements)} for {arch}:\n{tail}")
        report = json.loads((folder / "report.json").read_text())
    pins = {}
    for item in report["install"]:
        meta, info = item["metadata"], item["download_info"]
        digest = info.get("archive_info", {}).get("hashes", {}).get("sha256")
        if not digest:
            raise LockError(f"pip reported no sha256 for {meta['name']} {meta['version']} ({info.get('url')})")
        pin = Pin(meta["name"], meta["version"], (f"sha256:{digest}",))
        pins[pin.key] = pin
    return pins


def merge(per_arch: Mapping[str, Mapping[str, Pin]]) -> list[Pin]:
    """One pin per package with every architecture's hash; the versions must agree."""
    merged: dict[str, Pin] = {}
    for arch, pins in per_arch.items():
        for key, pin in pins.items():
            known = merged.get(key)
            if known is not None and known.version != pin.version:
                raise LockError(f"{pin.name} resolves to {known.version} on one architecture, {pin.version} on {arch}")
            hashes = tuple(sorted({*(known.hashes if known else ()), *pin.hashes}))
            merged[key] = Pin(known.name if known else pin.name, pin.version, hashes)
    return list(merged.values())


def keep(current: Iterable[Pin], upgrade: bool | Sequence[str]) -> list[str]:
    """The current pins that a refresh keeps, as constraints: all of them, none (``upgrade``
    True), or all but the named packages."""
    if upgrade is True:
        return []
    named = {Pin(n, "").key for n in (upgrade or ())}
    return [f"{p.name}=={p.version}" for p in current if p.key not in named]


def tools_requirement(grpcio: Pin) -> str:
    """grpcio-tools for the image's grpcio: same minor version, not newer (its stubs need
    ``grpcio>=`` the tools' version).

    >>> tools_requirement(Pin("grpcio", "1.85.3"))
    'grpcio-tools>=1.85.0,<=1.85.3'
    """
    major, minor = grpcio.version.split(".")[:2]
    return f"grpcio-tools>={major}.{minor}.0,<={grpcio.version}"


RUNTIME_HEADER = """# The runtime image's Python packages: pinned by version and by the SHA-256 of each
# architecture's wheel. Installed in the image with pip --no-index --require-hashes from the
# wheelhouse modematrix fills on the host (images/wheels.py). Generated: refresh it on purpose
# with `modematrix images lock` (see images/lock.py); do not edit by hand.
"""
BUILD_HEADER = """# Packages a build stage of the runtime image installs to make image content (grpcio-tools:
# protoc for the gRPC stubs), pinned like requirements.lock and agreeing with it on every
# package both pin. Generated by `modematrix images lock`; do not edit by hand.
"""


@dataclass(frozen=True)
class Refreshed:
    runtime: list[Pin]
    build: list[Pin]

    def changes(self, old_runtime: Sequence[Pin], old_build: Sequence[Pin]) -> list[str]:
        before = {**by_key(old_build), **by_key(old_runtime)}
        after = {**by_key(self.build), **by_key(self.runtime)}
        lines = [f"+ {p.name}=={p.version}" for k, p in sorted(after.items()) if k not in before]
        lines += [f"- {p.name}=={p.version}" for k, p in sorted(before.items()) if k not in after]
        lines += [
            f"~ {p.name} {before[k].version} -> {p.version}"
            for k, p in sorted(after.items())
            if k in before and before[k].version != p.version
        ]
        return lines


def refresh(
    *,
    upgrade: bool | Sequence[str] = False,
    arches: Sequence[str] = ARCHES,
    runtime_lock: Path = RUNTIME_LOCK,
    build_lock: Path = BUILD_LOCK,
    pyproject: Path = PYPROJECT,
) -> Refreshed:
    """Resolve both locks again (nothing is written: :func:`write` does that)."""
    old_runtime = read(runtime_lock) if runtime_lock.exists() else []
    old_build = read(build_lock) if build_lock.exists() else []
    wanted = declared(pyproject)
    runtime = merge({a: resolve(wanted, keep(old_runtime, upgrade), arch=a) for a in arches})
    pinned = by_key(runtime)
    if "grpcio" not in pinned:
        raise LockError("the runtime's dependencies no longer include grpcio: the gRPC stubs need it")
    shared = [f"{p.name}=={p.version}" for p in runtime]
    tools = [tools_requirement(pinned["grpcio"])]
    if by_key(old_runtime).get("grpcio") == pinned["grpcio"]:  # same grpcio: keep the tools that match it
        tools_keys = {Pin(t, "").key for t in BUILD_TOOLS}
        shared += [c for c in keep(old_build, upgrade) if Pin(c.split("==")[0], "").key in tools_keys]
    build = merge({a: resolve(tools, shared, arch=a) for a in arches})
    return Refreshed(runtime, build)


def write(refreshed: Refreshed, *, runtime_lock: Path = RUNTIME_LOCK, build_lock: Path = BUILD_LOCK) -> None:
    problems = disagreements(refreshed.runtime, refreshed.build)
    if problems:
        raise LockError("the locks would disagree: " + "; ".join(problems))
    runtime_lock.write_text(render(refreshed.runtime, RUNTIME_HEADER))
    build_lock.write_text(render(refreshed.build, BUILD_HEADER))

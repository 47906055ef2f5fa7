"""The Kubernetes components of the k8s mode, built from source through the Go module proxy.

    modematrix k8s build        # kube-apiserver, kube-controller-manager, kube-scheduler,
                                # kubelet, kubectl: upstream v1.34.4, into the cache

No image can be pulled here and k3s cannot be built (the module proxy refuses
github.com/k3s-io/k3s at every version, including an exact commit: README, "Kubernetes"), so
the components are upstream Kubernetes. ``images/k8s/go.mod`` requires k8s.io/kubernetes and
pins each of its staging modules (replace lines in Kubernetes' own go.mod) to the same
release; ``go.sum`` pins every dependency.

The result is content-addressed like the runtime image: a digest of go.mod, go.sum, the
component list and Go's version names a folder of the cache; a repeat finds it and builds
nothing. Go's module and build caches (GOMODCACHE, GOCACHE) stay between runs on the machine.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from images.build import cache_dir
from images.exceptions import BuildFailed, ImageError
from images.progress import step

SOURCE = Path(__file__).with_name("k8s")
VERSION = "v1.34.4"  # the require line of images/k8s/go.mod
COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kubectl")


@dataclass(frozen=True)
class Components:
    directory: Path
    version: str
    reused: bool
    seconds: dict[str, float]

    def path(self, name: str) -> Path:
        return self.directory / name


def go() -> str:
    found = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if found is None:
        raise ImageError("building Kubernetes needs Go 1.24 or newer (the machine's Go, or apt install golang-go)")
    return found


def digest(go_version: str, components: tuple[str, ...] = COMPONENTS) -> str:
    """What the binaries depend on: the module files, the component list, Go's version."""
    h = hashlib.sha256()
    for name in ("go.mod", "go.sum"):
        h.update(name.encode() + b"\0" + (SOURCE / name).read_bytes())
    h.update(("\0".join(sorted(components)) + "\0" + go_version).encode())
    return h.hexdigest()[:16]


def build(components: tuple[str, ...] = COMPONENTS, *, jobs: int | None = None, quiet: bool = False) -> Components:
    """Build (or find in the cache) ``components``; returns where they are."""
    unknown = sorted(set(components) - set(COMPONENTS))
    if unknown:
        raise ImageError(f"unknown component(s) {', '.join(unknown)}; expected some of {', '.join(COMPONENTS)}")
    go_bin = go()
    go_version = subprocess.run([go_bin, "env", "GOVERSION"], capture_output=True, text=True, check=True).stdout.strip()
    target = cache_dir() / "k8s" / f"{VERSION}-{digest(go_version, components)}"
    if all((target / c).exists() for c in components):
        return Components(target, VERSION, True, {})
    staging = target.with_name(target.name + ".partial")
    staging.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly -trimpath"}
    if jobs:
        env["GOMAXPROCS"] = str(jobs)
    ldflags = (
        f"-s -w -X k8s.io/component-base/version.gitVersion={VERSION} "
        f"-X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=34 "
        "-X k8s.io/component-base/version.gitTreeState=clean"
    )
    seconds: dict[str, float] = {}
    for component in components:
        if (staging / component).exists():
            continue  # built by an interrupted earlier run
        started = time.monotonic()
        with step(f"go build {component} {VERSION}", quiet=quiet):
            done = subprocess.run(
                [
                    go_bin,
                    "build",
                    "-ldflags",
                    ldflags,
                    "-o",
                    str(staging / component),
                    f"k8s.io/kubernetes/cmd/{component}",
                ],
                cwd=SOURCE,
                env=env,
                capture_output=True,
                text=True,
                timeout=3600,
            )
        if done.returncode != 0:
            log = staging / f"{component}.log"
            log.write_text(done.stdout + done.stderr)
            raise BuildFailed(f"go build {component} failed: {done.stderr.strip()[-800:]}", log)
        seconds[component] = round(time.monotonic() - started, 1)
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    return Components(target, VERSION, False, seconds)

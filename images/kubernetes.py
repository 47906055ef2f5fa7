"""The Kubernetes components of the k8s mode, built from source through the Go module proxy.

    modematrix k8s build        # kube-apiserver, kube-controller-manager, kube-scheduler,
                                # kubelet, kube-proxy, kubectl: upstream v1.34.4; CoreDNS
                                # and the pod sandbox's pause: into the cache, then the node image

No image can be pulled here and k3s cannot be built (the module proxy refuses
github.com/k3s-io/k3s at every version, including an exact commit: docs/kubernetes.md), so
the components are upstream Kubernetes. ``images/k8s/go.mod`` requires k8s.io/kubernetes and
pins each of its staging modules (replace lines in Kubernetes' own go.mod) to the same
release; ``go.sum`` pins every dependency. Two small programs come with them, because their
images cannot be pulled either: ``images/k8s/pause`` (the pod sandbox's process, in the same
module) and ``images/k8s/coredns`` (the cluster DNS: CoreDNS v1.12.4 with only the plugins used,
its own module, so its dependencies do not move Kubernetes'), and ``images/k8s/kube-router``
(kube-router v2.1.0's firewall: the NetworkPolicy controller, its own module too).

The result is content-addressed like the runtime image: a digest of go.mod, go.sum, the
component list and the pinned Go toolchain (:mod:`images.golang`) names a folder of the cache;
a repeat finds it and builds nothing. Go's module and build caches (GOMODCACHE, GOCACHE) stay
between runs on the machine.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from images import golang
from images.base import ensure_base, host_args, local_id
from images.build import cache_dir, docker_client, platform_of
from images.exceptions import BuildFailed, ImageError
from images.progress import step
from images.tag import content_tag

SOURCE = Path(__file__).with_name("k8s")
VERSION = "v1.34.4"  # the require line of images/k8s/go.mod
KUBERNETES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl")
# component -> (module folder under images/k8s, package): what `go build` is given
PACKAGES = {
    **{name: (".", f"k8s.io/kubernetes/cmd/{name}") for name in KUBERNETES},
    "pause": (".", "./pause"),
    "coredns": ("coredns", "."),
    "kube-router": ("kube-router", "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"),
}
COMPONENTS = tuple(PACKAGES)


@dataclass(frozen=True)
class Components:
    directory: Path
    version: str
    reused: bool
    seconds: dict[str, float]

    def path(self, name: str) -> Path:
        return self.directory / name


def digest(go_version: str, components: tuple[str, ...] = COMPONENTS) -> str:
    """What the binaries depend on: the module files, the component list, Go's version."""
    h = hashlib.sha256()
    for path in sorted(p for p in SOURCE.rglob("*") if p.is_file() and p.suffix in (".mod", ".sum", ".go")):
        h.update(path.relative_to(SOURCE).as_posix().encode() + b"\0" + path.read_bytes())
    h.update(("\0".join(sorted(components)) + "\0" + go_version).encode())
    return h.hexdigest()[:16]


def folder(components: tuple[str, ...] = COMPONENTS) -> Path:
    """Where the components built from these sources with the pinned toolchain are cached."""
    return cache_dir() / "k8s" / f"{VERSION}-{digest(golang.TOOLCHAIN, components)}"


def _by_module(components: Iterable[str]) -> dict[str, list[str]]:
    """Components grouped by the module folder they are built in, in the table's order.

    >>> _by_module(["kubectl", "coredns", "pause"])
    {'.': ['kubectl', 'pause'], 'coredns': ['coredns']}
    """
    groups: dict[str, list[str]] = {}
    for component in components:
        groups.setdefault(PACKAGES[component][0], []).append(component)
    return groups


def build(components: tuple[str, ...] = COMPONENTS, *, jobs: int | None = None, quiet: bool = False) -> Components:
    """Build (or find in the cache) ``components``; returns where they are."""
    unknown = sorted(set(components) - set(COMPONENTS))
    if unknown:
        raise ImageError(f"unknown component(s) {', '.join(unknown)}; expected some of {', '.join(COMPONENTS)}")
    go_bin = golang.go()
    target = folder(components)
    if all((target / c).exists() for c in components):
        return Components(target, VERSION, True, {})
    staging = target.with_name(target.name + ".partial")
    staging.mkdir(parents=True, exist_ok=True)
    env = golang.env()
    if jobs:
        env["GOMAXPROCS"] = str(jobs)
    ldflags = (
        f"-s -w -X k8s.io/component-base/version.gitVersion={VERSION} "
        f"-X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=34 "
        "-X k8s.io/component-base/version.gitTreeState=clean"
    )
    seconds: dict[str, float] = {}
    for module, group in _by_module(c for c in components if not (staging / c).exists()).items():
        # one `go build` per module: its packages share one build graph, and their links run
        # in parallel (a component built by an interrupted earlier run is not built again)
        names = " ".join(group)
        started = time.monotonic()
        with step(f"go build {names}" + (f" {VERSION}" if set(group) & set(KUBERNETES) else ""), quiet=quiet):
            done = subprocess.run(
                [go_bin, "build", "-ldflags", ldflags, "-o", f"{staging}/", *(PACKAGES[c][1] for c in group)],
                cwd=SOURCE / module,
                env=env,
                capture_output=True,
                text=True,
                timeout=3600,
            )
        missing = [c for c in group if not (staging / c).exists()]
        if done.returncode != 0 or missing:
            log = staging / f"{group[0]}.log"
            log.write_text(done.stdout + done.stderr)
            why = done.stderr.strip()[-800:] if done.returncode != 0 else f"it wrote no {', '.join(missing)}"
            raise BuildFailed(f"go build {names} failed: {why}", log)
        seconds[names] = round(time.monotonic() - started, 1)
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    return Components(target, VERSION, False, seconds)


NODE_SOURCE = SOURCE / "node"
NODE_REPOSITORY = "modematrix/k8s-node"
PAUSE_REPOSITORY = "modematrix/pause"


@dataclass(frozen=True)
class NodeImage:
    tag: str
    pause: str  # the pod sandbox image, inside the node image (containerd's sandbox_image)
    components: Components
    reused: bool


def node_image(*, client: docker.DockerClient | None = None, jobs: int | None = None, quiet: bool = False) -> NodeImage:
    """The node image: Debian's containerd, runc, CNI plugins and etcd on the runtime's base,
    the components of :func:`build`, and the pause image. Its tag is a digest of the
    Dockerfile, node.sh and the components' own digest: a repeat builds nothing."""
    client = client or docker_client()
    built = build(jobs=jobs, quiet=quiet)
    base_ref = ensure_base(client, quiet=quiet)
    arch = platform_of(client)
    pause = _pause_image(client, built, arch)
    files = {name: (NODE_SOURCE / name).read_bytes() for name in ("Dockerfile", "node.sh")}
    files["components"] = built.directory.name.encode()  # content-addressed already
    files["pause"] = pause.encode()
    tag = f"{NODE_REPOSITORY}:{content_tag(files, base_id=local_id(client, base_ref) or base_ref, platform=arch)}"
    if local_id(client, tag):
        return NodeImage(tag, pause, built, True)
    with tempfile.TemporaryDirectory(prefix="modematrix-node-") as tmp, step(f"building {tag}", quiet=quiet):
        context = Path(tmp)
        for name, data in files.items():
            if name in ("Dockerfile", "node.sh"):
                (context / name).write_bytes(data)
        (context / "node.sh").chmod(0o755)
        (context / "bin").mkdir()
        for component in COMPONENTS:
            if component != "pause":
                os.link(built.path(component), context / "bin" / component)
        with (context / "pause.tar").open("wb") as out:
            for chunk in client.images.get(pause).save(named=True):
                out.write(chunk)
        try:
            arguments = host_args() | {"BASE": base_ref, "PAUSE_IMAGE": "docker.io/" + pause}
            client.images.build(path=str(context), tag=tag, buildargs=arguments, rm=True)
        except (docker.errors.BuildError, docker.errors.APIError) as exc:
            log = cache_dir() / "logs" / f"build-node-{tag.split(':')[1]}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text("".join(str(c.get("stream", c)) for c in getattr(exc, "build_log", [])) or str(exc))
            raise BuildFailed(f"building {tag} failed: {exc}", log) from exc
    return NodeImage(tag, pause, built, False)


def _pause_image(client: docker.DockerClient, built: Components, arch: str) -> str:
    """``FROM scratch`` with the pause binary: no base image, nothing to pull."""
    dockerfile = b'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n'
    binary = built.path("pause").read_bytes()
    digest = content_tag({"Dockerfile": dockerfile, "pause": binary}, base_id="scratch", platform=arch)
    tag = f"{PAUSE_REPOSITORY}:{digest}"
    if local_id(client, tag) is None:
        with tempfile.TemporaryDirectory(prefix="modematrix-pause-") as tmp:
            (Path(tmp) / "Dockerfile").write_bytes(dockerfile)
            (Path(tmp) / "pause").write_bytes(binary)
            (Path(tmp) / "pause").chmod(0o755)
            client.images.build(path=tmp, tag=tag, rm=True)
    return tag

"""Build the runtime image: the only code that runs ``docker build``.

    base (local / pulled / bootstrapped) -> wheelhouse (host) -> content tag -> build or reuse

Two images from one Dockerfile and one content tag: ``modematrix/runtime:TAG``, and
``TAG-envoy``, the same image with Envoy's binary on top (:func:`envoy_image`), for the nodes
that run Envoy; the rest do not carry its 107 MB.

A build whose content tag already exists is a no-op that returns the tag. A change to runtime
code changes the tag, and Docker's layer cache rebuilds only the layers after the dependencies.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import docker
import docker.errors

from images.base import DEFAULT_BASE, ensure_base, host_args, local_id
from images.exceptions import BuildFailed
from images.progress import step
from images.tag import content_tag, image_inputs
from images.wheels import ensure_wheelhouse

REPOSITORY = "modematrix/runtime"
ENVOY_SUFFIX = "-envoy"
REAPER_REPOSITORY = "modematrix/reaper"
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Built:
    tag: str
    reused: bool
    seconds: float


IMAGE_PYTHON = "/opt/venv/bin/python"  # the image's interpreter, with the runtime's dependencies (Dockerfile)


def envoy_image(image: str) -> str:
    """The image a node that runs Envoy starts from: for a runtime image built here (or pushed
    from here to a registry), its envoy image; any other image is taken to carry what it needs.

    >>> envoy_image("modematrix/runtime:ab12"), envoy_image("10.0.0.5:5000/modematrix/runtime:ab12")
    ('modematrix/runtime:ab12-envoy', '10.0.0.5:5000/modematrix/runtime:ab12-envoy')
    >>> envoy_image("modematrix/runtime:ab12-envoy"), envoy_image("registry.example/team/app:1.2")
    ('modematrix/runtime:ab12-envoy', 'registry.example/team/app:1.2')
    """
    repository, colon, version = image.rpartition(":")
    ours = colon and "/" not in version and repository.endswith(REPOSITORY) and "@" not in image
    if not ours or version.endswith(ENVOY_SUFFIX):
        return image
    return f"{image}{ENVOY_SUFFIX}"


def cache_dir() -> Path:
    return Path(os.environ.get("MODEMATRIX_CACHE", Path.home() / ".cache" / "modematrix"))


def wheelhouse_dir() -> Path:
    return Path(os.environ.get("MODEMATRIX_WHEELHOUSE", cache_dir() / "wheels"))


@contextmanager
def build_lock(name: str) -> Iterator[None]:
    """One build of ``name`` at a time on this machine: pytest-xdist's workers, or two CLIs,
    asking for an image that is not built yet. The second waits for the first, then finds the
    image built (each build checks for its tag inside the lock). Two at once on a fresh machine
    built the same tag side by side and shared one log file, which the first removed under the
    second (CI, 2026-12-07)."""
    path = cache_dir() / "locks" / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def docker_client() -> docker.DockerClient:
    return docker.from_env(timeout=600)


def platform_of(client: docker.DockerClient) -> str:
    return str(client.version().get("Arch", "amd64"))


def assemble_context(directory: Path, *, arch: str, root: Path = ROOT) -> None:
    """Write a self-contained build context: Dockerfile, lock, wheels/, runtime/."""
    directory.mkdir(parents=True, exist_ok=True)
    wheels = ensure_wheelhouse(wheelhouse_dir(), arch=arch)
    for name, data in image_inputs(root).items():
        target = directory / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    (directory / "wheels").mkdir(exist_ok=True)
    for wheel in wheels:
        shutil.copy2(wheel, directory / "wheels" / wheel.name)  # keeps mtimes: stable layer cache


def image_ref(client: docker.DockerClient, base: str = DEFAULT_BASE, *, quiet: bool = False) -> tuple[str, str]:
    """(base reference to build from, the content-derived image tag)."""
    base_ref = ensure_base(client, base, quiet=quiet)
    base_id = local_id(client, base_ref) or base_ref
    return base_ref, f"{REPOSITORY}:{content_tag(image_inputs(ROOT), base_id=base_id, platform=platform_of(client))}"


def build(base: str = DEFAULT_BASE, *, quiet: bool = False, client: docker.DockerClient | None = None) -> Built:
    started = time.monotonic()
    client = client or docker_client()
    with build_lock("runtime-image"):
        base_ref, tag = image_ref(client, base, quiet=quiet)
        if local_id(client, tag) and local_id(client, envoy_image(tag)):
            return Built(tag, True, time.monotonic() - started)
        with tempfile.TemporaryDirectory(prefix="modematrix-context-") as tmp:
            context = Path(tmp)
            with step("collecting wheels on the host", quiet=quiet):
                assemble_context(context, arch=platform_of(client))
            # one set of arguments for both: the envoy build then finds every runtime layer cached
            arguments = _build_args(base_ref)
            _docker_build(client, context, tag, arguments, quiet=quiet, target="runtime")
            _docker_build(client, context, envoy_image(tag), arguments, quiet=quiet, target="envoy")
        client.images.get(tag).tag(REPOSITORY, "latest")
        client.images.get(envoy_image(tag)).tag(REPOSITORY, f"latest{ENVOY_SUFFIX}")
    return Built(tag, False, time.monotonic() - started)


def _build_args(base_ref: str) -> dict[str, str]:
    revision = (
        subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
        or "unknown"
    )
    from importlib.metadata import PackageNotFoundError, version

    try:
        release = version("modematrix")
    except PackageNotFoundError:
        release = "0.0.0"
    return host_args() | {
        "BASE": base_ref,
        "REVISION": revision,
        "VERSION": release,
        "CREATED": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _docker_build(
    client: docker.DockerClient, context: Path, tag: str, arguments: dict[str, str], *, quiet: bool, target: str
) -> None:
    log_path = cache_dir() / "logs" / f"build-{tag.split(':')[1]}-{os.getpid()}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with step(f"building {tag}", quiet=quiet) as progress, log_path.open("w") as log:
        try:
            for chunk in client.api.build(
                path=str(context),
                tag=tag,
                target=target,
                buildargs=arguments,
                rm=True,
                forcerm=True,
                decode=True,
            ):
                line = chunk.get("stream") or chunk.get("status") or ""
                if line:
                    log.write(line if line.endswith("\n") else line + "\n")
                    progress.update(line.strip())
                if "error" in chunk:
                    log.write(json.dumps(chunk) + "\n")
                    raise BuildFailed(f"docker build of {tag} failed: {chunk['error'].strip()}", log_path)
        except docker.errors.APIError as exc:
            raise BuildFailed(f"docker build of {tag} failed: {exc}", log_path) from exc
    log_path.unlink(missing_ok=True)  # kept only on failure


def build_reaper(runtime_tag: str, *, quiet: bool = False, client: docker.DockerClient | None = None) -> str:
    """The reaper image, FROM the runtime image; its tag follows the runtime's and its own script."""
    client = client or docker_client()
    source = ROOT / "images" / "reaper"
    files = {name: (source / name).read_bytes() for name in ("Dockerfile", "reaper.py")}
    runtime_id = local_id(client, runtime_tag) or runtime_tag
    tag = f"{REAPER_REPOSITORY}:{content_tag(files, base_id=runtime_id, platform=platform_of(client))}"
    with build_lock("reaper-image"):
        if local_id(client, tag):
            return tag
        with tempfile.TemporaryDirectory(prefix="modematrix-reaper-") as tmp:
            for name, data in files.items():
                (Path(tmp) / name).write_bytes(data)
            log_path = cache_dir() / "logs" / f"build-reaper-{tag.split(':')[1]}.log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            try:
                client.images.build(path=tmp, tag=tag, buildargs={"BASE": runtime_tag}, rm=True)
            except docker.errors.BuildError as exc:
                log_path.write_text("".join(str(c.get("stream", c)) for c in exc.build_log))
                raise BuildFailed(f"building {tag} failed: {exc.msg}", log_path) from exc
    return tag

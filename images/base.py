"""The base image: the configured one if Docker has it or can pull it, else bootstrapped.

Bootstrapping builds a Debian bookworm minbase root file system from Debian packages
(mmdebstrap, or debootstrap) and imports it with ``docker import``, tagged
:data:`BOOTSTRAPPED`, so the next build reuses it. The Dockerfile installs the same package
list on top of either base, so the image does not depend on where its base came from.

The tag names the recipe (:data:`RECIPE`): a changed recipe is a new base, and every image
built on it a new tag (their tags hash the base's id), never a stale base reused.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

import docker
import docker.errors

from images.exceptions import BaseUnavailable, ImageError
from images.progress import step

DEFAULT_BASE = "debian:bookworm-slim"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
MIRROR_VARIABLE = "MODEMATRIX_DEBIAN_MIRROR"
# Docker predefines these as build arguments and keeps them out of an image's history
PROXY_VARIABLES = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")


def debian_mirror(environ: Mapping[str, str] = os.environ) -> str:
    """The Debian mirror every image's packages come from: ``MODEMATRIX_DEBIAN_MIRROR``, or
    Debian's own. Not an http(s) URL: an :class:`ImageError` naming it, before any build.

    >>> debian_mirror({"MODEMATRIX_DEBIAN_MIRROR": "http://mirror.example/debian/"})
    'http://mirror.example/debian'
    """
    given = environ.get(MIRROR_VARIABLE, "").strip()
    if not given:
        return MIRROR
    if not given.startswith(("http://", "https://")) or len(given.split("/", 3)[2]) == 0:
        raise ImageError(
            f"{MIRROR_VARIABLE}={given!r}: expected an http:// or https:// URL of a Debian mirror, e.g. {MIRROR}"
        )
    return given.rstrip("/")


def host_args(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The build arguments every image build here takes from this machine: ``DEBIAN_MIRROR``
    (:func:`debian_mirror`) and the proxy variables that are set, so that a build behind a
    proxy or with a mirror of one's own reaches Debian's packages as the host does.

    >>> host_args({"https_proxy": "http://proxy:3128", "HOME": "/root"})
    {'DEBIAN_MIRROR': 'http://deb.debian.org/debian', 'https_proxy': 'http://proxy:3128'}
    """
    return {"DEBIAN_MIRROR": debian_mirror(environ)} | {k: environ[k] for k in PROXY_VARIABLES if environ.get(k)}


def local_id(client: docker.DockerClient, ref: str) -> str | None:
    try:
        return str(client.images.get(ref).id)
    except docker.errors.ImageNotFound:
        return None


def ensure_base(client: docker.DockerClient, configured: str = DEFAULT_BASE, *, quiet: bool = False) -> str:
    """Return an image reference that Docker has locally, bootstrapping one if need be."""
    mirror = debian_mirror()  # a wrong one said now, even when nothing is built
    for ref in (configured, BOOTSTRAPPED if configured == DEFAULT_BASE else None):
        if ref and local_id(client, ref):
            return ref
    try:
        client.images.pull(configured)
        return configured
    except docker.errors.APIError:
        pass  # no registry: air-gapped, or a registry that does not resolve
    if configured != DEFAULT_BASE:
        raise BaseUnavailable(
            f"base image {configured!r} is not present and could not be pulled; "
            f"load it with `docker load`, or use the default ({DEFAULT_BASE}), "
            "which modematrix can bootstrap from Debian packages"
        )
    bootstrap(client, mirror=mirror, quiet=quiet)
    return BOOTSTRAPPED


def bootstrap(client: docker.DockerClient, *, mirror: str = MIRROR, quiet: bool = False) -> str:
    """Build a bookworm minbase root fs from Debian packages and ``docker import`` it."""
    with (
        tempfile.TemporaryDirectory(prefix="modematrix-base-") as tmp,
        step(f"bootstrapping {BOOTSTRAPPED} from Debian packages", quiet=quiet) as progress,
    ):
        tarball = Path(tmp) / "rootfs.tar"
        _run(_rootfs_command(tarball, Path(tmp) / "root", mirror), progress.update)
        if not tarball.exists():  # debootstrap writes a directory: pack it
            _run(["tar", "-C", str(Path(tmp) / "root"), "-cf", str(tarball), "."], progress.update)
        progress.update("docker import")
        repository, tag = BOOTSTRAPPED.split(":")
        client.api.import_image_from_file(
            str(tarball),
            repository=repository,
            tag=tag,
            changes=["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", 'CMD ["bash"]'],
        )
    image_id = local_id(client, BOOTSTRAPPED)
    if image_id is None:
        raise BaseUnavailable(f"docker import did not produce {BOOTSTRAPPED}")
    return image_id


# What debian:bookworm-slim leaves out (its /etc/dpkg/dpkg.cfg.d/docker): the same rules make
# the bootstrapped base equivalent, and stay in force for packages the Dockerfile installs.
SLIM_DPKG_RULES = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/lintian/*",
)


# merged /usr the way debootstrap and Debian's own images make it (directory symlinks and the
# usr-is-merged package), not with the usrmerge package: that one pulls in perl (46 MB),
# which nothing in a node runs
MERGED_USR_HOOK = "/usr/share/mmdebstrap/hooks/merged-usr"
RECIPE = (
    "--variant=minbase",
    "--include=ca-certificates",
    f"--hook-dir={MERGED_USR_HOOK}",
    *(f"--dpkgopt={rule}" for rule in SLIM_DPKG_RULES),
)
BOOTSTRAPPED = f"modematrix/base:{SUITE}-slim-{hashlib.sha256(chr(0).join(RECIPE).encode()).hexdigest()[:8]}"


def _rootfs_command(tarball: Path, directory: Path, mirror: str) -> list[str]:
    if shutil.which("mmdebstrap"):
        if not Path(MERGED_USR_HOOK).is_dir():
            raise BaseUnavailable(f"mmdebstrap has no {MERGED_USR_HOOK} (mmdebstrap 1.0 or later has it)")
        return ["mmdebstrap", *RECIPE, SUITE, str(tarball), mirror]
    if shutil.which("debootstrap"):
        return ["debootstrap", "--variant=minbase", "--include=ca-certificates", SUITE, str(directory), mirror]
    raise BaseUnavailable(
        f"base image {DEFAULT_BASE} is not present, cannot be pulled, and neither mmdebstrap nor debootstrap is "
        "installed to bootstrap it; on Debian or Ubuntu: sudo apt-get install mmdebstrap"
    )


def _run(command: list[str], report: object) -> None:
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        tail: list[str] = []
        for line in proc.stdout or []:
            tail = [*tail[-19:], line.rstrip()]
            report(line.strip())  # type: ignore[operator]
    if proc.returncode != 0:
        raise BaseUnavailable(f"{command[0]} failed with exit code {proc.returncode}:\n" + "\n".join(tail))

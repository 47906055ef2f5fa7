"""Build a service's image from a folder (a Dockerfile, FROM ${BASE}, and what it copies) on the
project's Debian base, content-addressed like every image here: the tag hashes the folder's
files, the base's id and the platform, so a repeat builds nothing and a change is a new tag.

    tag = service.build(Path("images/services/etcd"), "etcd")    # modematrix/svc-etcd:<digest>
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import docker
import docker.errors

from images.base import ensure_base, host_args, local_id
from images.build import build_lock, cache_dir, docker_client, platform_of
from images.exceptions import BuildFailed, ImageError
from images.progress import step
from images.tag import content_tag

APT_INSTALL = Path(__file__).with_name("apt-install")


def context_files(folder: Path) -> dict[str, bytes]:
    """Every file of a build context by its path in it (sorted: the tag must not depend on
    order), and ``apt-install`` (:data:`APT_INSTALL`: Debian's packages from ``DEBIAN_MIRROR``,
    one preamble for every Dockerfile) unless the folder has a file of that name.

    >>> sorted(context_files(Path(__file__).parent / "registry"))
    ['Dockerfile', 'apt-install', 'config.yml']
    """
    if not (folder / "Dockerfile").is_file():
        raise ImageError(f"no Dockerfile in {folder}")
    files = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    return dict(sorted(({APT_INSTALL.name: APT_INSTALL.read_bytes()} | files).items()))


def build(folder: Path, repository: str, *, quiet: bool = True, client: docker.DockerClient | None = None) -> str:
    """``repository:<content tag>`` built from ``folder`` (or found), FROM the project's base."""
    client = client or docker_client()
    base = ensure_base(client, quiet=quiet)
    files = context_files(folder)
    tag = f"{repository}:{content_tag(files, base_id=local_id(client, base) or base, platform=platform_of(client))}"
    with build_lock(repository.replace("/", "-")):
        if local_id(client, tag):
            return tag
        with tempfile.TemporaryDirectory(prefix="modematrix-service-") as tmp, step(f"building {tag}", quiet=quiet):
            for name, data in files.items():
                (Path(tmp) / name).parent.mkdir(parents=True, exist_ok=True)
                (Path(tmp) / name).write_bytes(data)
            (Path(tmp) / APT_INSTALL.name).chmod(0o755)  # COPY keeps the mode (no --chmod without BuildKit)
            try:
                client.images.build(path=tmp, tag=tag, buildargs=host_args() | {"BASE": base}, rm=True, forcerm=True)
            except (docker.errors.BuildError, docker.errors.APIError) as exc:
                log = cache_dir() / "logs" / f"build-{repository.replace('/', '-')}-{tag.split(':')[1]}.log"
                log.parent.mkdir(parents=True, exist_ok=True)
                log.write_text("".join(str(c.get("stream", c)) for c in getattr(exc, "build_log", [])) or str(exc))
                raise BuildFailed(f"building {tag} failed: {exc}", log) from exc
    return tag

"""The registry image: Debian's docker-registry (the distribution v2 server) on the runtime's
base, for the test that a cluster pulls the runtime image from a registry (``up k8s
--image-registry``). Content-addressed like every image here: a repeat builds nothing.

    tag = registry.build()          # modematrix/registry:<digest>
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import docker
import docker.errors

from images.base import ensure_base, local_id
from images.build import cache_dir, docker_client, platform_of
from images.exceptions import BuildFailed
from images.progress import step
from images.tag import content_tag

SOURCE = Path(__file__).with_name("registry")
REPOSITORY = "modematrix/registry"
PORT = 5000


def build(*, quiet: bool = True, client: docker.DockerClient | None = None) -> str:
    client = client or docker_client()
    base = ensure_base(client, quiet=quiet)
    files = {name: (SOURCE / name).read_bytes() for name in ("Dockerfile", "config.yml")}
    tag = f"{REPOSITORY}:{content_tag(files, base_id=local_id(client, base) or base, platform=platform_of(client))}"
    if local_id(client, tag):
        return tag
    with tempfile.TemporaryDirectory(prefix="modematrix-registry-") as tmp, step(f"building {tag}", quiet=quiet):
        for name, data in files.items():
            (Path(tmp) / name).write_bytes(data)
        try:
            client.images.build(path=tmp, tag=tag, buildargs={"BASE": base}, rm=True)
        except (docker.errors.BuildError, docker.errors.APIError) as exc:
            log = cache_dir() / "logs" / f"build-registry-{tag.split(':')[1]}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text("".join(str(c.get("stream", c)) for c in getattr(exc, "build_log", [])) or str(exc))
            raise BuildFailed(f"building {tag} failed: {exc}", log) from exc
    return tag

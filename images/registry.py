"""The registry image: Debian's docker-registry (the distribution v2 server) on the runtime's
base, for the test that a cluster pulls the runtime image from a registry (``up k8s
--image-registry``). Content-addressed like every image here: a repeat builds nothing.

    tag = registry.build()          # modematrix/registry:<digest>
"""

from __future__ import annotations

from pathlib import Path

import docker

from images import service

SOURCE = Path(__file__).with_name("registry")
REPOSITORY = "modematrix/registry"
PORT = 5000


def build(*, quiet: bool = True, client: docker.DockerClient | None = None) -> str:
    return service.build(SOURCE, REPOSITORY, quiet=quiet, client=client)

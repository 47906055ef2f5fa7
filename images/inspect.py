"""Look inside a built image for secrets: key files, generated passwords, secret settings.

Reads ``docker save`` output layer by layer, so a secret added in one layer and deleted in a
later one is still found (it ships in the image all the same).
"""

from __future__ import annotations

import fnmatch
import io
import json
import re
import tarfile
import tempfile

import docker

SECRET_NAMES = ("*.key", "*-key.pem", "id_rsa*", "id_ed25519*", "admin-password", "cluster-secret", ".env", "*.p12")
# A PEM private key: the marker followed by a base64 body (a bare marker string in a library,
# such as cryptography's ssh.py or libgnutls, is not a key).
SECRET_CONTENT = re.compile(rb"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----\r?\n(?:[A-Za-z0-9+/=]{40,}\r?\n){2}")
SECRET_ENV = re.compile(r"^(RUNTIME_(CLUSTER_SECRET|ADMIN_PASSWORD)|.*(PASSWORD|SECRET|TOKEN))=.+", re.IGNORECASE)
MAX_SCANNED = 4 * 1024 * 1024
# Files from Debian packages that carry keys which are public by design, each with its reason.
KNOWN_PUBLIC = {
    "usr/lib/*/libgnutls.so.*": "GnuTLS self-test keys, published in its source",
}


def find_secrets(client: docker.DockerClient, ref: str) -> list[str]:
    """Every place in the image that looks like a secret, as ``layer:path: why``."""
    image = client.images.get(ref)
    found = [
        f"config: environment {e.split('=')[0]} is set"
        for e in image.attrs["Config"].get("Env") or []
        if SECRET_ENV.match(e)
    ]
    with tempfile.TemporaryFile() as saved:
        for chunk in image.save(named=False):
            saved.write(chunk)
        saved.seek(0)
        with tarfile.open(fileobj=saved) as outer:
            manifest = json.load(outer.extractfile("manifest.json"))  # type: ignore[arg-type]
            for layer in manifest[0]["Layers"]:
                found += _scan_layer(layer, outer.extractfile(layer))  # type: ignore[arg-type]
    return found


def _scan_layer(name: str, data: io.BufferedReader) -> list[str]:
    found = []
    with tarfile.open(fileobj=data, mode="r|") as layer:
        for member in layer:
            if not member.isfile():
                continue
            base = member.name.rsplit("/", 1)[-1]
            path = member.name.removeprefix("./")
            if any(fnmatch.fnmatch(path, pattern) for pattern in KNOWN_PUBLIC):
                continue
            if any(fnmatch.fnmatch(base, pattern) for pattern in SECRET_NAMES):
                found.append(f"{name[:12]}:{member.name}: file name looks like a secret")
            elif member.size <= MAX_SCANNED:
                handle = layer.extractfile(member)
                if handle is not None and SECRET_CONTENT.search(handle.read()):
                    found.append(f"{name[:12]}:{member.name}: holds a private key")
    return found

"""Encrypt key material at rest with the cluster secret (HKDF-SHA256 -> AES-256-GCM).

The record name is bound as associated data, so a ciphertext moved to another record does
not decrypt. The secret itself is never stored or logged.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from runtime.exceptions import SecurityError


class SecretBox:
    def __init__(self, cluster_secret: str) -> None:
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"modematrix/v1", info=b"key-material-at-rest")
        self._aead = AESGCM(hkdf.derive(cluster_secret.encode()))

    def seal(self, record: str, plaintext: bytes) -> str:
        nonce = os.urandom(12)
        return base64.b64encode(nonce + self._aead.encrypt(nonce, plaintext, record.encode())).decode()

    def open(self, record: str, sealed: str) -> bytes:
        try:
            raw = base64.b64decode(sealed)
            return self._aead.decrypt(raw[:12], raw[12:], record.encode())
        except (InvalidTag, ValueError) as exc:
            raise SecurityError(
                f"{record}: does not decrypt with this node's cluster_secret; every node of a cluster "
                "must be given the same secret"
            ) from exc

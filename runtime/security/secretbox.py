"""Encrypt key material at rest with the cluster secret: scrypt -> AES-256-GCM.

A cluster secret may be chosen by a person, so it is stretched with scrypt (n = 2**15,
r = 8, p = 1: about 0.1 s and 32 MiB per guess) over a random salt kept with each sealed
record: a stolen DB does not make guessing the secret cheap, and no two clusters share a
dictionary. Derived keys are cached per salt, so a node pays the cost once per record.

    v2$<n>$<r>$<p>$<salt b64>$<nonce + ciphertext b64>

The record name is bound as associated data, so a ciphertext moved to another record does
not decrypt. Records sealed before (HKDF only, no prefix) still open, and are re-sealed in
the new form the next time they are written. The secret itself is never stored or logged.
"""

from __future__ import annotations

import base64
import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from runtime.exceptions import SecurityError

N, R, P = 2**15, 8, 1


class SecretBox:
    def __init__(self, cluster_secret: str) -> None:
        self._secret = cluster_secret.encode()
        self._keys: dict[tuple[bytes, int, int, int], AESGCM] = {}

    def seal(self, record: str, plaintext: bytes) -> str:
        salt, nonce = os.urandom(16), os.urandom(12)
        sealed = self._aead(salt, N, R, P).encrypt(nonce, plaintext, record.encode())
        return f"v2${N}${R}${P}${_b64(salt)}${_b64(nonce + sealed)}"

    def open(self, record: str, sealed: str) -> bytes:
        try:
            if sealed.startswith("v2$"):
                _, n, r, p, salt, body = sealed.split("$")
                aead, raw = self._aead(base64.b64decode(salt), int(n), int(r), int(p)), base64.b64decode(body)
            else:  # sealed by an earlier version: HKDF only
                aead, raw = self._legacy(), base64.b64decode(sealed)
            return aead.decrypt(raw[:12], raw[12:], record.encode())
        except (InvalidTag, ValueError) as exc:
            raise SecurityError(
                f"{record}: does not decrypt with this node's cluster_secret; every node of a cluster "
                "must be given the same secret"
            ) from exc

    def _aead(self, salt: bytes, n: int, r: int, p: int) -> AESGCM:
        if not (2**14 <= n <= 2**20 and 1 <= r <= 16 and 1 <= p <= 4):
            raise ValueError(f"scrypt parameters out of range: n={n} r={r} p={p}")
        key = (salt, n, r, p)
        if key not in self._keys:
            derived = hashlib.scrypt(self._secret, salt=salt, n=n, r=r, p=p, maxmem=2 * 128 * n * r, dklen=32)
            self._keys[key] = AESGCM(derived)
        return self._keys[key]

    def _legacy(self) -> AESGCM:
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"modematrix/v1", info=b"key-material-at-rest")
        return AESGCM(hkdf.derive(self._secret))


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()

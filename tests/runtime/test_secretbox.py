"""Key material at rest: a person-chosen cluster secret is stretched with scrypt, per record."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from runtime.exceptions import SecurityError
from runtime.security.secretbox import SecretBox


def test_a_sealed_record_carries_scrypt_with_a_work_factor_and_its_own_salt() -> None:
    box = SecretBox("correct horse battery staple")
    first, second = box.seal("ca", b"key"), box.seal("ca", b"key")
    scheme, n, r, p, salt, _ = first.split("$")
    assert (scheme, int(n), int(r), int(p)) == ("v2", 2**15, 8, 1)
    assert salt != second.split("$")[4], "every record gets its own salt"
    assert box.open("ca", first) == b"key" and SecretBox("correct horse battery staple").open("ca", second) == b"key"


def test_a_wrong_secret_or_a_moved_record_does_not_open() -> None:
    sealed = SecretBox("the right secret, 16+").seal("ca", b"key")
    with pytest.raises(SecurityError, match="same secret"):
        SecretBox("the wrong secret, 16+").open("ca", sealed)
    with pytest.raises(SecurityError):
        SecretBox("the right secret, 16+").open("signing-keys/x", sealed)


def test_scrypt_parameters_of_a_tampered_record_are_refused_not_computed() -> None:
    sealed = SecretBox("the right secret, 16+").seal("ca", b"key").split("$")
    sealed[1] = str(2**30)  # a memory bomb if it were honoured
    with pytest.raises(SecurityError):
        SecretBox("the right secret, 16+").open("ca", "$".join(sealed))


def test_a_record_sealed_by_the_earlier_hkdf_version_still_opens() -> None:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"modematrix/v1", info=b"key-material-at-rest")
    old = AESGCM(hkdf.derive(b"an older cluster secret"))
    nonce = b"\0" * 12
    legacy = base64.b64encode(nonce + old.encrypt(nonce, b"old key", b"ca")).decode()
    assert SecretBox("an older cluster secret").open("ca", legacy) == b"old key"


@pytest.mark.anyio
async def test_only_a_node_that_issues_tokens_unseals_the_signing_keys() -> None:
    """A node without ``auth`` verifies tokens with the public halves and never opens a
    private one (every node used to unseal every signing key)."""
    from runtime.security.keystore import KeyStore
    from runtime.storage import MemoryBackend, Namespace

    class CountingBox(SecretBox):
        opened: list[str] = []

        def open(self, record: str, sealed: str) -> bytes:
            self.opened.append(record)
            return super().open(record, sealed)

    backend = MemoryBackend()
    issuer = KeyStore(
        Namespace(backend, "_cluster"), SecretBox("s" * 32), token_ttl=60, rotation=3600, ca_lifetime=86400
    )
    await issuer.ensure_signing_keys()
    token, _ = issuer.sign("ann", ("reader",))
    box = CountingBox("s" * 32)
    verifier = KeyStore(
        Namespace(backend, "_cluster"), box, token_ttl=60, rotation=3600, ca_lifetime=86400, signer=False
    )
    await verifier.reload()
    assert verifier.verify(token).username == "ann"
    assert not [r for r in box.opened if r.startswith("signing-keys")], box.opened
    with pytest.raises(Exception, match="no private part"):
        verifier.sign("ann", ("reader",))

"""Salted scrypt password hashes: ``scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>``."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

N, R, P = 2**14, 8, 1
_DUMMY = "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P, dklen=32)
    return f"scrypt${N}${R}${P}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, stored: str | None) -> bool:
    """Constant work whether or not the user exists (``stored=None`` hashes a dummy)."""
    scheme, n, r, p, salt, digest = (stored or _DUMMY).split("$")
    if scheme != "scrypt":
        return False
    found = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=32)
    return stored is not None and hmac.compare_digest(found, base64.b64decode(digest))

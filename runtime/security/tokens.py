"""Bearer tokens: JWTs signed with ES256, the signing key named by ``kid``.

Pure: keys and ``now`` are passed in. Only ES256 is accepted, whatever the token's header
claims, so ``alg: none`` and HMAC-with-the-public-key tricks fail before any signature check.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from runtime.exceptions import InvalidToken
from runtime.security.authz import Principal

ALGORITHM = "ES256"
ISSUER = "modematrix"


@dataclass(frozen=True)
class SigningKey:
    kid: str
    public_key: ec.EllipticCurvePublicKey
    private_key: ec.EllipticCurvePrivateKey | None
    created_at: float
    retire_at: float | None = None


def new_kid() -> str:
    return secrets.token_hex(8)


def sign(key: SigningKey, username: str, roles: tuple[str, ...], now: float, ttl: float) -> tuple[str, float]:
    if key.private_key is None:
        raise InvalidToken(f"signing key {key.kid} has no private part on this node")
    expires_at = int(now + ttl)
    claims = {
        "iss": ISSUER,
        "sub": username,
        "roles": list(roles),
        "iat": round(now, 3),  # fractional: a revocation at t must not catch a token issued just after t
        "exp": expires_at,
        "jti": secrets.token_hex(8),
    }
    token = jwt.encode(claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid})
    return token, float(expires_at)


def verify(token: str, keys: Mapping[str, SigningKey], now: float) -> Principal:
    return verify_with_kid(token, keys, now)[0]


def verify_with_kid(token: str, keys: Mapping[str, SigningKey], now: float) -> tuple[Principal, str]:
    """The token's principal, and the ``kid`` of the key that signed it."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise InvalidToken("token is not a well-formed JWT") from exc
    if header.get("alg") != ALGORITHM:
        raise InvalidToken(f"token algorithm {str(header.get('alg'))[:16]!r} is not accepted; expected {ALGORITHM}")
    kid = str(header.get("kid"))
    key = keys.get(kid)
    if key is None:
        raise InvalidToken("token is signed by a key this cluster does not know")
    try:
        claims = jwt.decode(
            token,
            key.public_key,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub"], "verify_exp": False},
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(f"token rejected: {type(exc).__name__}") from exc
    if not all(isinstance(claims[c], int | float) and not isinstance(claims[c], bool) for c in ("exp", "iat")):
        raise InvalidToken("token exp and iat claims are not numbers")
    if float(claims["exp"]) <= now:
        raise InvalidToken("token has expired")
    roles = claims.get("roles")
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise InvalidToken("token roles claim is not a list of names")
    principal = Principal(
        str(claims["sub"]), tuple(roles), float(claims["exp"]), float(claims["iat"]), str(claims.get("jti", ""))
    )
    return principal, kid


def jwk(key: SigningKey) -> dict[str, str]:
    """The public half as a JWK (RFC 7517), for /v1/auth/jwks and for proxies."""
    numbers = key.public_key.public_numbers()

    def b64(n: int) -> str:
        return base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode()

    return {
        "kty": "EC",
        "crv": "P-256",
        "alg": ALGORITHM,
        "use": "sig",
        "kid": key.kid,
        "x": b64(numbers.x),
        "y": b64(numbers.y),
    }

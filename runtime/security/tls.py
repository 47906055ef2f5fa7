"""Certificate math, pure: make a CA, issue node certificates, say when to renew.

Keys are ECDSA P-256. Nothing here reads a clock or a file: callers pass ``now``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

RENEW_AT = 2 / 3


@dataclass(frozen=True)
class KeyPair:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _backdate(lifetime: timedelta) -> timedelta:
    """Tolerate small clock skew without eating a short lifetime: min(60 s, 10 %)."""
    return min(timedelta(seconds=60), lifetime / 10)


def make_ca(common_name: str, now: datetime, lifetime: timedelta) -> KeyPair:
    key = new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _backdate(lifetime))
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(key, cert)


def _san(names: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def subject(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "modematrix cluster"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def issue_node_cert(
    ca: KeyPair, node_name: str, names: list[str], now: datetime, lifetime: timedelta, *, common_name: str = ""
) -> KeyPair:
    """A serving + client certificate for one node, valid for every name in ``names``.
    ``common_name`` (default: the node's name) is the identity the DB sees: etcd takes a
    client certificate's CN as its user."""
    key = new_key()
    cert = certify(ca, key.public_key(), subject(common_name or node_name), [node_name, *names], now, lifetime)
    return KeyPair(key, cert)


def certify(
    ca: KeyPair,
    public_key: ec.EllipticCurvePublicKey,
    name: x509.Name,
    names: list[str],
    now: datetime,
    lifetime: timedelta,
) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _backdate(lifetime))
        .not_valid_after(now + lifetime)
        .add_extension(_san(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
        .sign(ca.key, hashes.SHA256())
    )


def renew(ca: KeyPair, current: x509.Certificate, request_pem: bytes, now: datetime, lifetime: timedelta) -> bytes:
    """Certify the key in a signing request with the identity of ``current``: the same
    subject and names, a new validity. The request only proves the caller holds the new key;
    names it asks for are ignored, so a node can renew itself and nothing more."""
    request = load_request(request_pem)
    public_key = request.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise ValueError("the signing request's key is not an EC key")
    names = current.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    listed = [str(n.value) for n in names]
    cert = certify(ca, public_key, current.subject, listed, now, lifetime)
    return cert.public_bytes(serialization.Encoding.PEM)


def signing_request(key: ec.EllipticCurvePrivateKey) -> bytes:
    request = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, hashes.SHA256())
    return request.public_bytes(serialization.Encoding.PEM)


def load_request(pem: bytes) -> x509.CertificateSigningRequest:
    try:
        request = x509.load_pem_x509_csr(pem)
    except ValueError as exc:
        raise ValueError(f"not a PEM certificate signing request: {exc}") from None
    if not request.is_signature_valid:
        raise ValueError("the signing request's signature does not match its key")
    return request


def verify_issued(ca: x509.Certificate, cert: x509.Certificate, now: datetime) -> None:
    """Raise ValueError unless ``cert`` was signed by ``ca`` and is valid at ``now``."""
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise ValueError(f"certificate {cert.subject.rfc4514_string()} is not issued by the cluster CA") from exc
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise ValueError(f"certificate {cert.subject.rfc4514_string()} is not valid at {now.isoformat()}")


def renewal_time(cert: x509.Certificate) -> datetime:
    """Two thirds into the certificate's validity."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return start + (end - start) * RENEW_AT


def load_pair(cert_pem: bytes, key_pem: bytes) -> KeyPair:
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("expected an EC private key")
    return KeyPair(key, x509.load_pem_x509_certificate(cert_pem))

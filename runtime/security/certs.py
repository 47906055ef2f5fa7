"""This node's certificates: on disk, used by HTTPS and the DB link, renewed in place.

A node holds one or two identities, each a certificate and key under ``data_dir/tls``:

- ``node``: serves HTTPS, is the client certificate towards other nodes, and towards etcd,
  which takes its common name as the DB user (so it names the node's service set);
- ``peer`` (DB members only): etcd's peer certificate, common name :data:`PEER_NAME`,
  which members require of each other on port 2380.

Where they come from, in this order: the files from an earlier start, if still valid and
issued by the cluster CA; else the bootstrap bundle the launcher gave this node; else, on a
node that holds the CA key (standalone, or an issuer), a fresh one. Renewal, two thirds into
a certificate's life, asks an :class:`Issuer`: the local CA, or an issuer node over mutual
TLS with the certificate being renewed, so a node can renew its own identity and nothing
more, and only the issuers hold the CA key.

The same two ``SSLContext`` objects live for the whole process; renewal calls
``load_cert_chain`` on them, which affects new handshakes only. etcd reads its certificate
files on every handshake, and the DB client reconnects (``on_renew``), so nothing restarts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import aiohttp
from cryptography import x509
from cryptography.x509.oid import NameOID

from runtime.exceptions import SecurityError
from runtime.files import write_atomic
from runtime.names import ROLES, SERVICES
from runtime.security import tls

log = logging.getLogger("runtime.security")
PEER_NAME = "modematrix-db-peer"
_BUNDLE_KEYS = "ca, node_cert, node_key[, peer_cert, peer_key, ca_key]"
RENEW_PATH = "/v1/_cluster/renew"


class Issuer(Protocol):
    async def renew(self, identity: Identity, request_pem: bytes) -> bytes:
        """The PEM certificate for the key in ``request_pem``, with ``identity``'s names."""


@dataclass
class Identity:
    """One certificate and its key on disk (the certificate file carries the CA after it)."""

    name: str
    cert_file: Path
    key_file: Path

    def load(self) -> x509.Certificate | None:
        try:
            return x509.load_pem_x509_certificate(self.cert_file.read_bytes())
        except (OSError, ValueError):
            return None

    def write(self, cert_pem: bytes, key_pem: bytes, ca_pem: bytes) -> None:
        write_atomic(self.key_file, key_pem, mode=0o600)
        write_atomic(self.cert_file, cert_pem + ca_pem, mode=0o644)  # certificates are public

    def client_context(self, ca_file: Path) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_verify_locations(ca_file)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


class NotRenewable(ValueError):
    """A certificate of the cluster CA that this issuer does not renew: not a node's identity."""


def renewable(cert: x509.Certificate) -> None:
    """Renew only what the launcher issues to nodes: a service set's identity (its common
    name is the DB user of the set, such as ``kv`` or ``auth+ingress+kv+queue``) or a DB
    member's peer identity. Never ``root`` (db-init's, one hour), never an identity of the
    Kubernetes cluster built here, never a name nobody issued to a node.

    >>> ca = tls.make_ca("ca", datetime.now(UTC), timedelta(days=1))
    >>> root = tls.issue_node_cert(ca, "x", ["x"], datetime.now(UTC), timedelta(hours=1), common_name="root")
    >>> renewable(root.cert)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    runtime.security.certs.NotRenewable: 'root' is not a node identity of this cluster; ...
    """
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common = str(names[0].value) if names else ""
    if common == PEER_NAME or _service_set(common):
        return
    raise NotRenewable(f"{common!r} is not a node identity of this cluster; only service sets and DB peers renew")


def _service_set(common_name: str) -> bool:
    parts = common_name.split("+")
    return bool(common_name) and parts == sorted(set(parts)) and all(p in SERVICES + ROLES for p in parts)


class LocalIssuer:
    """This node holds the CA key: it certifies renewals itself, and for other nodes."""

    def __init__(self, ca: tls.KeyPair, lifetime: float, clock: Callable[[], float] = time.time) -> None:
        self.ca, self.lifetime, self._clock = ca, timedelta(seconds=lifetime), clock

    async def renew(self, identity: Identity, request_pem: bytes) -> bytes:
        current = identity.load()
        if current is None:
            raise SecurityError(f"{identity.cert_file}: no certificate to renew")
        return self.certify(current, request_pem)

    def certify(self, current: x509.Certificate, request_pem: bytes) -> bytes:
        """Renew ``current`` (a valid certificate of this CA) for the key in the request."""
        now = datetime.fromtimestamp(self._clock(), UTC)
        tls.verify_issued(self.ca.cert, current, now)
        renewable(current)
        return tls.renew(self.ca, current, request_pem, now, self.lifetime)


class RemoteIssuer:
    """Renew through an issuer node: ``POST /v1/_cluster/renew`` with the signing request,
    over mutual TLS with the certificate being renewed (the issuer copies its names)."""

    def __init__(self, addresses: Sequence[str], ca_file: Path, timeout: float = 5.0) -> None:
        if not addresses:
            raise SecurityError("issuers: a node without the CA key needs issuer addresses to renew its certificates")
        self.addresses, self.ca_file, self.timeout = list(addresses), ca_file, timeout

    async def renew(self, identity: Identity, request_pem: bytes) -> bytes:
        context = identity.client_context(self.ca_file)
        failures = []
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for address in self.addresses:
                try:
                    async with session.post(f"https://{address}{RENEW_PATH}", data=request_pem, ssl=context) as reply:
                        body = await reply.read()
                        if reply.status == 200:
                            return body
                        failures.append(f"{address}: {reply.status} {body[:200]!r}")
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    failures.append(f"{address}: {exc or type(exc).__name__}")
        raise SecurityError("no issuer renewed the certificate: " + "; ".join(failures))


class NodeCertificate:
    def __init__(
        self,
        directory: Path,
        ca_pem: bytes,
        *,
        node_name: str,
        common_name: str,
        names: list[str],
        lifetime: float,
        member: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory, self.ca_pem = directory, ca_pem
        self.ca_cert = x509.load_pem_x509_certificate(ca_pem)
        self.node_name, self.common_name, self.names = node_name, common_name, names
        self.lifetime = timedelta(seconds=lifetime)
        self._clock = clock
        self.ca_file = directory / "ca.pem"
        self.node = Identity("node", directory / "node.pem", directory / "node-key.pem")
        self.peer = Identity("peer", directory / "peer.pem", directory / "peer-key.pem") if member else None
        self.issuer: Issuer | None = None
        self.on_renew: list[Callable[[], Awaitable[None]]] = []
        self.server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)

    @property
    def cert_file(self) -> Path:
        return self.node.cert_file

    @property
    def key_file(self) -> Path:
        return self.node.key_file

    @property
    def identities(self) -> list[Identity]:
        return [self.node] if self.peer is None else [self.node, self.peer]

    # -- at start ---------------------------------------------------------------------------

    def install(self, bundle: Bundle | None, ca: tls.KeyPair | None) -> None:
        """Put a valid certificate for every identity on disk (files from an earlier start,
        else the bundle's, else freshly issued with ``ca``), then load the contexts.
        Raises SecurityError when there is neither."""
        write_atomic(self.ca_file, self.ca_pem, mode=0o644)
        for identity in self.identities:
            if self._usable(identity):
                continue
            given = bundle.get(identity.name) if bundle is not None else None
            if given is not None:
                identity.write(*given, ca_pem=self.ca_pem)
                if self._usable(identity):
                    continue
            if ca is None:
                raise SecurityError(
                    f"tls: no valid {identity.name} certificate in {self.directory} or in the bootstrap bundle, "
                    "and this node does not hold the CA key to issue one"
                )
            cn = PEER_NAME if identity is self.peer else self.common_name
            pair = tls.issue_node_cert(ca, self.node_name, self.names, self._now(), self.lifetime, common_name=cn)
            identity.write(pair.cert_pem, pair.key_pem, ca_pem=self.ca_pem)
        self._configure_contexts()
        self._load_contexts()
        self._log_current("installed")

    def _usable(self, identity: Identity) -> bool:
        cert = identity.load()
        if cert is None or not identity.key_file.exists():
            return False
        try:
            tls.verify_issued(self.ca_cert, cert, self._now())
        except ValueError:
            return False
        return self._now() < tls.renewal_time(cert)

    def _configure_contexts(self) -> None:
        server = self.server_context
        server.minimum_version = ssl.TLSVersion.TLSv1_2
        server.load_verify_locations(self.ca_file)
        server.verify_mode = ssl.CERT_OPTIONAL  # clients may present a member certificate
        client = self.client_context
        client.minimum_version = ssl.TLSVersion.TLSv1_2
        client.load_verify_locations(self.ca_file)
        client.check_hostname = True
        client.verify_mode = ssl.CERT_REQUIRED

    def _load_contexts(self) -> None:
        for context in (self.server_context, self.client_context):
            context.load_cert_chain(self.node.cert_file, self.node.key_file)

    # -- renewal ----------------------------------------------------------------------------

    def seconds_until_renewal(self) -> float:
        due = [c for c in (i.load() for i in self.identities) if c is not None]
        if not due:
            return 0.0
        soonest = min(tls.renewal_time(c) for c in due)
        return max(0.0, soonest.timestamp() - self._clock())

    async def renew(self) -> None:
        """Renew every identity that is due, with a fresh key each; then tell the listeners."""
        if self.issuer is None:
            raise SecurityError("no issuer configured to renew certificates")
        renewed = False
        for identity in self.identities:
            cert = identity.load()
            if cert is not None and self._now() < tls.renewal_time(cert):
                continue
            key = tls.new_key()
            cert_pem = await self.issuer.renew(identity, tls.signing_request(key))
            issued = x509.load_pem_x509_certificate(cert_pem)
            tls.verify_issued(self.ca_cert, issued, self._now())
            identity.write(cert_pem, tls.KeyPair(key, issued).key_pem, ca_pem=self.ca_pem)
            renewed = True
        if not renewed:
            return
        self._load_contexts()
        self._log_current("renewed")
        for listener in self.on_renew:
            await listener()

    async def renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.seconds_until_renewal())
            try:
                await self.renew()
            except Exception:  # keep serving on the old certificate; try again soon
                log.exception("certificate renewal failed; retrying in 5 s")
                await asyncio.sleep(5)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def _log_current(self, what: str) -> None:
        for identity in self.identities:
            cert = identity.load()
            if cert is None:
                continue
            fields = {
                "identity": identity.name,
                "subject": cert.subject.rfc4514_string(),
                "serial": f"{cert.serial_number:x}",
                "not_after": cert.not_valid_after_utc.isoformat(),
                "renew_at": tls.renewal_time(cert).isoformat(),
            }
            log.info(f"{what} certificate", extra={"fields": fields})


@dataclass(frozen=True)
class Bundle:
    """What the launcher hands a node at bootstrap (``tls_bundle``, JSON): the CA
    certificate, this node's certificate and key, a member's peer certificate and key, and,
    on issuer nodes only, the CA key."""

    ca_pem: bytes
    pairs: dict[str, tuple[bytes, bytes]]
    ca_key_pem: bytes | None = None

    def get(self, identity: str) -> tuple[bytes, bytes] | None:
        return self.pairs.get(identity)

    @property
    def ca(self) -> tls.KeyPair | None:
        return tls.load_pair(self.ca_pem, self.ca_key_pem) if self.ca_key_pem else None

    def dump(self) -> str:
        data: dict[str, str] = {"ca": self.ca_pem.decode()}
        for name, (cert, key) in self.pairs.items():
            data[f"{name}_cert"], data[f"{name}_key"] = cert.decode(), key.decode()
        if self.ca_key_pem:
            data["ca_key"] = self.ca_key_pem.decode()
        return json.dumps(data)

    @classmethod
    def load(cls, text: str) -> Bundle:
        """Raise ValueError naming what is wrong."""
        try:
            data = json.loads(text)
        except ValueError:
            raise ValueError(f"expected a JSON object with keys {_BUNDLE_KEYS}") from None
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise ValueError("expected a JSON object of PEM strings")
        unknown = sorted(set(data) - {"ca", "node_cert", "node_key", "peer_cert", "peer_key", "ca_key"})
        if unknown or "ca" not in data:
            raise ValueError(f"expected keys {_BUNDLE_KEYS}; got {', '.join(sorted(data))}")
        pairs = {}
        for name in ("node", "peer"):
            cert, key = data.get(f"{name}_cert"), data.get(f"{name}_key")
            if (cert is None) != (key is None):
                raise ValueError(f"{name}_cert and {name}_key go together")
            if cert is not None and key is not None:
                pairs[name] = (cert.encode(), key.encode())
        bundle = cls(data["ca"].encode(), pairs, data["ca_key"].encode() if "ca_key" in data else None)
        try:
            x509.load_pem_x509_certificate(bundle.ca_pem)
            for cert, key in pairs.values():
                tls.load_pair(cert, key)
            _ = bundle.ca
        except ValueError as exc:
            raise ValueError(f"a PEM in the bundle does not load: {exc}") from None
        return bundle

"""The run's certificate authority: made by the launcher before any node starts.

The DB link is TLS with client certificates, so every node needs a certificate before the
DB exists: the launcher is the bootstrap authority (as ``kubeadm init`` is). It makes the
cluster CA, and hands each node a bundle (``RUNTIME_TLS_BUNDLE``): the CA certificate, the
node's certificate (common name: its DB user), a DB member's peer certificate, and only on
nodes that run ``auth`` (the issuers) the CA key. Every other node renews through an issuer.

The CA key also stays in the run's folder (mode 0600) on the machine that started the run,
for ``db-init`` (etcd's root certificate) and for tests that need a certificate of their own.
All the certificate math is the runtime's own (:mod:`runtime.security.tls`).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from runtime.config import parse_duration
from runtime.files import write_atomic
from runtime.security import tls
from runtime.security.certs import PEER_NAME, Bundle
from runtime.storage.etcd_auth import ROOT_USER, user_name
from topologies.spec import ModeSpec, NodeSpec

DEFAULT_LIFETIME = 86400.0  # the runtime's own default for cert_lifetime
ROOT_LIFETIME = timedelta(hours=1)


def node_names(node: NodeSpec, ip: str) -> list[str]:
    """What a node's certificate is valid for: the runtime's own list (``runtime.app._names``)."""
    return [node.name, ip, "localhost", "127.0.0.1", "::1"]


@dataclass(frozen=True)
class RunPki:
    ca: tls.KeyPair
    lifetime: timedelta

    @classmethod
    def create(cls, directory: Path, env: Mapping[str, str] | None = None) -> RunPki:
        """A new CA, written to ``directory`` (ca.pem, ca-key.pem at 0600). Node certificates
        live as long as ``RUNTIME_CERT_LIFETIME`` in ``env`` says, if it is given."""
        now = datetime.now(UTC)
        ca = tls.make_ca("modematrix cluster CA", now, timedelta(days=3650))
        write_atomic(directory / "ca-key.pem", ca.key_pem, mode=0o600)  # created 0600, never wider
        write_atomic(directory / "ca.pem", ca.cert_pem, mode=0o644)
        raw = (env or {}).get("RUNTIME_CERT_LIFETIME")
        return cls(ca, timedelta(seconds=parse_duration(raw) if raw else DEFAULT_LIFETIME))

    @classmethod
    def load(cls, directory: Path) -> RunPki:
        pair = tls.load_pair((directory / "ca.pem").read_bytes(), (directory / "ca-key.pem").read_bytes())
        return cls(pair, timedelta(seconds=DEFAULT_LIFETIME))

    def trust(self) -> ssl.SSLContext:
        """A client context that trusts this CA (and nothing else)."""
        return ssl.create_default_context(cadata=self.ca.cert_pem.decode())

    def pair(self, common_name: str, node: str, names: list[str]) -> tuple[bytes, bytes]:
        """A certificate (PEM) and its key for ``names``, whose common name is ``common_name``."""
        return self._pair(common_name, node, names)

    def _pair(
        self, common_name: str, node: str, names: list[str], lifetime: timedelta | None = None
    ) -> tuple[bytes, bytes]:
        now = datetime.now(UTC)
        pair = tls.issue_node_cert(self.ca, node, names, now, lifetime or self.lifetime, common_name=common_name)
        return pair.cert_pem, pair.key_pem

    def bundle(self, spec: ModeSpec, node: NodeSpec, ip: str) -> Bundle:
        names = node_names(node, ip)
        pairs = {"node": self._pair(user_name(node.services), node.name, names)}
        if node.db_member and spec.db == "etcd":
            pairs["peer"] = self._pair(PEER_NAME, node.name, names)
        issuer = "auth" in node.services
        return Bundle(self.ca.cert_pem, pairs, self.ca.key_pem if issuer else None)

    def client(self, common_name: str, addresses: Sequence[str] = (), lifetime: timedelta | None = None) -> Bundle:
        """A client identity: ``root`` for db-init, or any name a test wants to try. etcd's peer
        port also checks a client's address against the certificate's, hence ``addresses``."""
        return Bundle(self.ca.cert_pem, {"node": self._pair(common_name, common_name, list(addresses), lifetime)})

    def root(self) -> Bundle:
        """etcd's root, for db-init only: an hour, and no issuer renews it."""
        return self.client(ROOT_USER, lifetime=ROOT_LIFETIME)

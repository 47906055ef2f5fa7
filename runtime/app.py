"""The one wiring module: a Config becomes a running :class:`Node`.

Order matters and is the same in every mode: open the DB and wait for it, load or create
the cluster's keys (CA, signing keys), issue this node's certificate, start each service
(which checks its namespace marker), then connect to peers.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime import __version__
from runtime.config import Config
from runtime.exceptions import StorageUnavailable
from runtime.files import write_atomic
from runtime.metrics import Metrics
from runtime.proxy import PeerPool
from runtime.security import KeyStore, NodeCertificate, SecretBox
from runtime.services import AuthService, KvService, QueueService, Service
from runtime.storage import Backend, EtcdBackend, Namespace, SqliteBackend

log = logging.getLogger("runtime")
CLUSTER_NAMESPACE = "_cluster"


@dataclass
class Node:
    config: Config
    backend: Backend
    metrics: Metrics
    keys: KeyStore
    cert: NodeCertificate
    services: dict[str, Service]
    peers: PeerPool | None
    version: str = __version__
    started_at: float = field(default_factory=time.time)

    @property
    def is_edge(self) -> bool:
        """Runs ingress: accepts client calls. Other nodes take calls only from members."""
        return "ingress" in self.config.services

    def background(self) -> list[Coroutine[Any, Any, None]]:
        jobs = [self.cert.renew_forever(), self._follow_keys(), self._follow_revocations()]
        if self.keys.signer:  # only the nodes that issue tokens make new signing keys
            jobs.append(self._rotate_keys_forever())
        if self.peers is not None:
            jobs.append(self.peers.check_forever())
        return jobs

    async def _rotate_keys_forever(self) -> None:
        """Rotate the signing key when it is due (whichever node gets there first wins)."""
        interval = min(30.0, self.keys.rotation / 10)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.keys.rotate_if_due()
            except StorageUnavailable as exc:
                log.warning("could not rotate signing keys", extra={"fields": {"error": str(exc)}})
            self.metrics.cert_renewal.set(self.cert.seconds_until_renewal())

    async def _follow_revocations(self) -> None:
        """Revocations made on any node count here as soon as the DB's watch says so."""
        async for _ in self.keys.revocation_changes():
            try:
                await self.keys.reload_revocations()
            except StorageUnavailable as exc:
                log.warning("could not reload revocations", extra={"fields": {"error": str(exc)}})

    async def _follow_keys(self) -> None:
        """Reload the signing keys whenever any node changes them (the DB's watch, not polling)."""
        async for _ in self.keys.changes():
            try:
                await self.keys.reload()
            except StorageUnavailable as exc:
                log.warning("could not reload signing keys", extra={"fields": {"error": str(exc)}})

    async def close(self) -> None:
        if self.peers is not None:
            await self.peers.close()
        await self.backend.close()


def make_backend(config: Config) -> Backend:
    if config.db_backend == "etcd":
        return EtcdBackend(list(config.db_endpoints))
    return SqliteBackend(config.data_dir / "runtime.db")


async def wait_for_db(backend: Backend, timeout: float) -> None:
    deadline, last = time.monotonic() + timeout, "no attempt"
    while time.monotonic() < deadline:
        try:
            await backend.ping()
            return
        except StorageUnavailable as exc:
            last = str(exc)
            log.info("waiting for the DB", extra={"fields": {"error": last}})
            await asyncio.sleep(0.5)
    raise StorageUnavailable(f"the DB did not answer within {timeout:.0f} s; last error: {last}")


def cluster_secret(config: Config) -> str:
    """The configured secret; a standalone node without one keeps its own in the data dir."""
    if config.cluster_secret:
        return config.cluster_secret
    path = config.data_dir / "cluster-secret"
    if path.exists():
        return path.read_text().strip()
    secret = secrets.token_urlsafe(32)
    write_atomic(path, secret.encode() + b"\n", mode=0o600)
    log.warning("generated a cluster secret for this standalone node", extra={"fields": {"written_to": str(path)}})
    return secret


def _names(config: Config) -> list[str]:
    return [config.node_name, *config.advertise, "localhost", "127.0.0.1", "::1"]


def build_services(config: Config, backend: Backend, keys: KeyStore, metrics: Metrics) -> dict[str, Service]:
    def ns(name: str) -> Namespace:
        return Namespace(backend, name, metrics.db_observer(name))

    made: dict[str, Service] = {}
    for name in config.services:
        if name == "kv":
            made[name] = KvService(ns("kv"), unsafe_fault=config.unsafe_fault)
        elif name == "queue":
            made[name] = QueueService(ns("queue"), max_attempts=config.queue_max_attempts)
        elif name == "auth":
            made[name] = AuthService(ns("auth"), keys, data_dir=config.data_dir, admin_password=config.admin_password)
    return made


async def open_node(config: Config, *, db_timeout: float = 180.0) -> Node:
    metrics = Metrics()
    backend = make_backend(config)
    await backend.open()
    try:
        await wait_for_db(backend, db_timeout)
        keys = KeyStore(
            Namespace(backend, CLUSTER_NAMESPACE, metrics.db_observer(CLUSTER_NAMESPACE)),
            SecretBox(cluster_secret(config)),
            token_ttl=config.token_ttl,
            rotation=config.signing_key_rotation,
            ca_lifetime=config.ca_lifetime,
            signer="auth" in config.services,
        )
        ca = await keys.ensure_ca()
        await keys.ensure_signing_keys()
        await keys.reload_revocations()
        cert = NodeCertificate(ca, config.node_name, _names(config), config.cert_lifetime, config.data_dir / "tls")
        cert.issue()
        write_atomic(config.data_dir / "ca.pem", ca.cert_pem, mode=0o644)  # public: the cluster's trust anchor
        services = build_services(config, backend, keys, metrics)
        for service in services.values():
            await service.start()
    except BaseException:
        await backend.close()
        raise
    peers = None
    if config.peers:
        peers = PeerPool(
            config.peers,
            scheme=config.scheme,
            ssl_context=None if config.insecure_http else cert.client_context,
            metrics=metrics,
        )
    log.info(
        "node ready",
        extra={
            "fields": {
                "node": config.node_name,
                "services": list(config.services),
                "db": backend.name,
                "scheme": config.scheme,
            }
        },
    )
    return Node(config, backend, metrics, keys, cert, services, peers)


def data_dir_owner(config: Config) -> Path:
    return config.data_dir / "node.json"

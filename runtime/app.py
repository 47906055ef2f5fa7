"""The one wiring module: a Config becomes a running :class:`Node`.

Order matters and is the same in every mode: put this node's certificates on disk (from
an earlier start or the launcher's bootstrap bundle: the DB link needs them), open the DB
and wait for it, load or create the signing keys, start each service (which checks its
namespace marker), then connect to peers.

Without a bundle (a standalone node, or a development cluster over plain etcd) the CA lives
in the DB, sealed, and the node issues its own certificate from it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime import __version__
from runtime.clock import WallClock
from runtime.config import Config, seals
from runtime.discovery import DbLeaseSource, Endpoint, EndpointSource, Registrar
from runtime.discovery.endpointslices import EndpointSliceSource
from runtime.exceptions import SecurityError, StorageUnavailable
from runtime.files import write_atomic
from runtime.metrics import Metrics
from runtime.names import ROUTED_SERVICES
from runtime.proxy import PeerPool
from runtime.routing import GRPC_SERVICES
from runtime.security import KeyStore, NodeCertificate, SecretBox
from runtime.security.certs import Bundle, LocalIssuer, RemoteIssuer
from runtime.services import AuthService, KvService, QueueService, Service
from runtime.storage import Backend, EtcdBackend, Namespace, SqliteBackend
from runtime.storage.etcd import ClientTls
from runtime.storage.etcd_auth import user_name
from runtime.xds import edge
from runtime.xds.plane import run_control_plane

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
    registrar: Registrar | None = None
    version: str = __version__
    started_at: float = field(default_factory=time.time)

    @property
    def issuer(self) -> LocalIssuer | None:
        """Set on nodes that hold the CA key: they renew other nodes' certificates."""
        return self.cert.issuer if isinstance(self.cert.issuer, LocalIssuer) else None

    @property
    def is_edge(self) -> bool:
        """Runs ingress: accepts client calls. Other nodes take calls only from members."""
        return "ingress" in self.config.services

    def background(self) -> list[Coroutine[Any, Any, None]]:
        jobs = [
            self.cert.renew_forever(),
            self._follow_keys(),
            self._follow_revocations(),
            self.keys.follow_revoked_tokens(),
        ]
        if self.keys.signer:  # only the nodes that issue tokens make new signing keys, and prune
            jobs.append(self._rotate_keys_forever())
        if self.peers is not None:
            jobs.append(self.peers.check_forever())
        if self.registrar is not None:
            jobs.append(self.registrar.run())
        jobs.extend(self._roles())
        return jobs

    async def start_grpc(self) -> Any:
        """kv and queue over gRPC on ``grpc_port``, when this node runs either: the started
        ``grpc.Server`` (the caller stops it, with :func:`runtime.rpc.api.stop`), or None. A
        port in use fails here, at start."""
        config = self.config
        if not config.grpc_port or not any(s in self.services for s in GRPC_SERVICES):
            return None
        from runtime.rpc.api import Gate, Limits, build_server  # the stubs load only where needed
        from runtime.security.grpc_tls import server_credentials

        # a service node behind a balancer takes calls only from members: its TLS asks for and
        # requires a certificate of the cluster CA (gRPC's Python API cannot ask without
        # requiring, so edge nodes do not ask), and the gate checks again
        members_only = not self.is_edge and not config.insecure_http
        credentials = None
        if not config.insecure_http:
            credentials = server_credentials(self.cert.directory, require_client_auth=members_only)
        gate = Gate(self.keys, self.metrics, members_only=members_only)
        limits = Limits(
            connections=config.max_connections, handshake_s=config.handshake_timeout, idle_s=config.idle_timeout
        )
        server = build_server(
            dict(self.services), gate, f"{config.listen_host}:{config.grpc_port}", credentials, limits
        )
        if server is not None:
            server.start()
            log.info("gRPC listening", extra={"fields": {"port": config.grpc_port, "tls": credentials is not None}})
        return server

    def _roles(self) -> list[Coroutine[Any, Any, None]]:
        """The xDS control plane and the Envoy it configures, on nodes that take those roles."""
        config, jobs = self.config, []
        tls_directory = None if config.insecure_http else self.cert.directory
        if "xds" in config.services and isinstance(self.backend, EtcdBackend):
            source: EndpointSource = DbLeaseSource(self.backend)
            if config.endpoint_source == "kubernetes":  # the k8s mode: the cluster's EndpointSlices
                source = EndpointSliceSource(config.kubernetes_namespace, ROUTED_SERVICES)
            plane = run_control_plane(
                source, port=config.xds_port, envoy_port=config.envoy_port, tls_directory=tls_directory
            )
            jobs.append(plane)
        if "envoy" in config.services:
            bootstrap = edge.prepare(
                config.data_dir,
                config.node_name,
                config.xds_servers,
                admin_port=config.envoy_admin_port,
                tls_directory=tls_directory,
                max_connections=config.max_connections,
            )
            jobs.append(edge.supervise(bootstrap))
        return jobs

    async def _rotate_keys_forever(self) -> None:
        """Rotate the signing key when it is due (whichever node gets there first wins)."""
        interval = min(30.0, self.keys.rotation / 10)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.keys.rotate_if_due()
                await self.keys.prune_revoked_tokens()
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


def make_backend(config: Config, cert: NodeCertificate | None = None) -> Backend:
    if config.db_backend == "etcd":
        tls = ClientTls(cert.ca_file, cert.cert_file, cert.key_file) if cert is not None and config.db_tls else None
        if config.db_tls and tls is None:
            raise SecurityError("db_endpoints: https:// needs this node's certificates (tls_bundle)")
        return EtcdBackend(list(config.db_endpoints), tls=tls)
    return SqliteBackend(config.data_dir / "runtime.db")


def prepare_certificate(config: Config) -> NodeCertificate | None:
    """From the bootstrap bundle (or the files of an earlier start): this node's certificates
    on disk before anything needs them (the DB member, the DB link). None without a bundle."""
    if config.tls_bundle is None:
        return None
    bundle = Bundle.load(config.tls_bundle)
    cert = _certificate(config, bundle.ca_pem, member=config.db_member_name is not None)
    ca = bundle.ca
    cert.install(bundle, ca)
    cert.issuer = (
        LocalIssuer(ca, config.cert_lifetime, clock=clock_of(config))
        if ca is not None
        else RemoteIssuer(config.issuers, cert.ca_file)
    )
    return cert


def _certificate(config: Config, ca_pem: bytes, *, member: bool) -> NodeCertificate:
    return NodeCertificate(
        config.data_dir / "tls",
        ca_pem,
        node_name=config.node_name,
        common_name=user_name(config.services),
        names=_names(config),
        lifetime=config.cert_lifetime,
        member=member,
        clock=clock_of(config),
    )


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


async def _until_answered(step: Callable[[], Awaitable[None]], timeout: float) -> None:
    """A start-up step, again while the DB is unavailable (an election, a member restarting)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await step()
        except StorageUnavailable as exc:
            if time.monotonic() >= deadline:
                raise
            log.info("start-up step waits for the DB", extra={"fields": {"error": str(exc)}})
            await asyncio.sleep(0.5)


def cluster_secret(config: Config) -> str:
    """The configured secret; a standalone node without one keeps its own in the data dir.
    A node that seals nothing (no ``auth``, a launcher's bundle) is given none: it gets a
    throwaway one that never leaves the process, since it never opens a sealed record."""
    if config.cluster_secret:
        return config.cluster_secret
    if not seals(config.services, config.tls_bundle):
        return secrets.token_urlsafe(32)
    path = config.data_dir / "cluster-secret"
    if path.exists():
        return path.read_text().strip()
    secret = secrets.token_urlsafe(32)
    write_atomic(path, secret.encode() + b"\n", mode=0o600)
    log.warning("generated a cluster secret for this standalone node", extra={"fields": {"written_to": str(path)}})
    return secret


def _names(config: Config) -> list[str]:
    return [config.node_name, *config.advertise, "localhost", "127.0.0.1", "::1"]


def clock_of(config: Config) -> WallClock:
    """The node's one wall clock (runtime/clock.py), made once per skew file."""
    return _CLOCKS.setdefault(config.clock_skew_file, WallClock(config.clock_skew_file))


_CLOCKS: dict[Path | None, WallClock] = {}


def build_services(config: Config, backend: Backend, keys: KeyStore, metrics: Metrics) -> dict[str, Service]:
    def ns(name: str) -> Namespace:
        return Namespace(backend, name, metrics.db_observer(name))

    made: dict[str, Service] = {}
    for name in config.services:
        if name == "kv":
            made[name] = KvService(ns("kv"), unsafe_fault=config.unsafe_fault)
        elif name == "queue":
            made[name] = QueueService(ns("queue"), clock_of(config), max_attempts=config.queue_max_attempts)
        elif name == "auth":
            made[name] = AuthService(
                ns("auth"), keys, data_dir=config.data_dir, admin_password=config.admin_password, clock=clock_of(config)
            )
    return made


async def open_node(config: Config, *, db_timeout: float = 180.0, cert: NodeCertificate | None = None) -> Node:
    metrics = Metrics()
    cert = cert or prepare_certificate(config)
    backend = make_backend(config, cert)
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
            clock=clock_of(config),
        )
        if cert is None:  # no launcher's CA: the cluster's own, sealed in the DB
            ca = await keys.ensure_ca()
            cert = _certificate(config, ca.cert_pem, member=False)
            cert.install(None, ca)
            cert.issuer = LocalIssuer(ca, config.cert_lifetime, clock=clock_of(config))
        if keys.signer:
            await _until_answered(keys.ensure_signing_keys, db_timeout)
        else:
            await keys.wait_for_signing_keys(db_timeout)
        await _until_answered(keys.load_revocations, db_timeout)
        if isinstance(backend, EtcdBackend) and backend.tls is not None:
            cert.on_renew.append(backend.reconnect)
        write_atomic(config.data_dir / "ca.pem", cert.ca_pem, mode=0o644)  # public: the cluster's trust anchor
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
    registrar = None
    if config.discovery and isinstance(backend, EtcdBackend):
        host = next((a for a in config.advertise if _is_address(a)), config.node_name)
        registered = [
            Endpoint(
                config.node_name,
                s,
                host,
                config.listen_port,
                True,
                __version__,
                config.grpc_port if s in GRPC_SERVICES else 0,
            )
            for s in config.services
            if s in ROUTED_SERVICES
        ]
        registrar = Registrar(backend, registered) if registered else None
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
    return Node(config, backend, metrics, keys, cert, services, peers, registrar)


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def data_dir_owner(config: Config) -> Path:
    return config.data_dir / "node.json"

"""The DB link, tried from outside as an attacker on the run's network would.

In ha and scaled, etcd's client port (2379) and peer port (2380) take only TLS with a
certificate from the run's CA; 2380 only the members' peer certificate. Each
service's DB user reaches its own namespace and nothing else. Each refusal has a positive
control beside it (the same call with the right certificate succeeds), so these tests fail
when the link is open, and when the test itself could not reach the DB at all.

    pytest scenarios/test_db_security.py --mode ha,scaled
"""

from __future__ import annotations

import ssl
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import httpx
import pytest
from aetcd import rpc

import topologies
from runtime.security import tls
from runtime.security.certs import PEER_NAME
from runtime.storage.base import prefix_end
from runtime.storage.etcd_auth import ROOT_USER, user_name
from topologies import ContainerRun
from topologies.constants import DB_CLIENT_PORT, DB_PEER_PORT, SECRETS_DIR
from topologies.pki import RunPki
from topologies.wait import wait_until

pytestmark = [pytest.mark.ha, pytest.mark.scaled]


class Identity:
    """A certificate and key on disk, for clients under test."""

    def __init__(self, directory: Path, name: str, cert_pem: bytes, key_pem: bytes) -> None:
        self.cert_file, self.key_file = directory / f"{name}.pem", directory / f"{name}-key.pem"
        self.cert_file.write_bytes(cert_pem)
        self.key_file.write_bytes(key_pem)
        self.cert_pem, self.key_pem = cert_pem, key_pem


@pytest.fixture(scope="module")
def certs(run: ContainerRun) -> Iterator[dict[str, Identity]]:
    """Certificates from the run's own CA (as the launcher can make them) and from a foreign CA
    whose certificate claims to be root."""
    pki = RunPki.load(run.workdir)
    here = [members(run)[0].rsplit(".", 1)[0] + ".1"]  # this host on the run's network (its gateway)
    now = datetime.now(UTC)
    foreign = tls.make_ca("modematrix run CA", now, timedelta(days=1))  # same name, other key
    with tempfile.TemporaryDirectory() as folder:
        directory = Path(folder)
        made = {"ca": Identity(directory, "ca", pki.ca.cert_pem, b"")}
        for name in {ROOT_USER, PEER_NAME, *(user_name(n.services) for n in run.spec.nodes)}:
            pair = pki.client(name, here).get("node")
            assert pair is not None
            made[name] = Identity(directory, name, *pair)
        fake = tls.issue_node_cert(foreign, ROOT_USER, here, now, timedelta(hours=1))
        made["foreign"] = Identity(directory, "foreign", fake.cert_pem, fake.key_pem)
        yield made


def members(run: ContainerRun) -> list[str]:
    return [run.node(m.name).ip for m in run.spec.members]


def _context(ca: Identity, client: Identity | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca.cert_file))
    context.check_hostname = False  # peer certificates name the member's address, clients connect by it too
    if client is not None:
        context.load_cert_chain(client.cert_file, client.key_file)
    return context


def _get(url: str, verify: ssl.SSLContext | bool) -> int:
    """Status of a GET, or 0 when the connection was refused at the TLS level."""
    try:
        return httpx.get(url, verify=verify, timeout=5).status_code
    except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
        return 0


def test_the_client_port_takes_only_certificates_of_the_cluster_ca(
    run: ContainerRun, certs: dict[str, Identity]
) -> None:
    for ip in members(run):
        url = f"https://{ip}:{DB_CLIENT_PORT}/version"
        assert _get(url, _context(certs["ca"], certs[ROOT_USER])) == 200, "positive control: the run's root"
        assert _get(f"http://{ip}:{DB_CLIENT_PORT}/version", False) != 200, "plaintext"
        assert _get(url, _context(certs["ca"], None)) == 0, "TLS without a client certificate"
        assert _get(url, _context(certs["ca"], certs["foreign"])) == 0, "a foreign CA's 'root'"


def test_the_peer_port_takes_only_the_members_peer_certificate(run: ContainerRun, certs: dict[str, Identity]) -> None:
    for ip in members(run):
        url = f"https://{ip}:{DB_PEER_PORT}/version"
        assert _get(url, _context(certs["ca"], certs[PEER_NAME])) == 200, "positive control: a peer certificate"
        assert _get(f"http://{ip}:{DB_PEER_PORT}/version", False) != 200, "plaintext"
        assert _get(url, _context(certs["ca"], None)) == 0, "TLS without a client certificate"
        assert _get(url, _context(certs["ca"], certs["foreign"])) == 0, "a foreign CA's certificate"
        assert _get(url, _context(certs["ca"], certs[ROOT_USER])) == 0, "the run CA's, but not a peer's"


def _kv(run: ContainerRun, certs: dict[str, Identity], user: str) -> tuple[grpc.Channel, rpc.KVStub]:
    credentials = grpc.ssl_channel_credentials(certs["ca"].cert_pem, certs[user].key_pem, certs[user].cert_pem)
    channel = grpc.secure_channel(f"{members(run)[0]}:{DB_CLIENT_PORT}", credentials)
    return channel, rpc.KVStub(channel)


def _allowed(method: Callable[..., object], request: object) -> bool:
    """True if the call succeeds, False if etcd says permission denied; anything else raises."""
    try:
        method(request, timeout=5)
        return True
    except grpc.RpcError as exc:
        if exc.code() is grpc.StatusCode.PERMISSION_DENIED:
            return False
        raise


def test_each_service_user_reaches_only_its_own_namespace(run: ContainerRun, certs: dict[str, Identity]) -> None:
    namespaces = ("auth", "kv", "queue")
    for node in run.spec.nodes:
        user = user_name(node.services)
        channel, kv = _kv(run, certs, user)
        with channel:
            for ns in namespaces:
                key = f"/modematrix/{ns}/meta/marker".encode()
                read = _allowed(kv.Range, rpc.RangeRequest(key=key))
                assert read is (ns in node.services), f"{user} reading {ns}"
            every = rpc.RangeRequest(key=b"/", range_end=b"\x00", keys_only=True)
            assert not _allowed(kv.Range, every), f"{user} listing the whole store"
            outside = rpc.PutRequest(key=b"/elsewhere", value=b"x")
            assert not _allowed(kv.Put, outside), f"{user} writing outside /modematrix/"
            start = b"/modematrix/_cluster/signing-keys-private/"
            private = rpc.RangeRequest(key=start, range_end=prefix_end(start))
            assert _allowed(kv.Range, private) is ("auth" in node.services), (
                f"{user} reading the private halves of the signing keys"
            )
            public = rpc.RangeRequest(key=b"/modematrix/_cluster/signing-keys")
            assert _allowed(kv.Range, public), f"{user} reading the public signing keys"


def test_root_is_held_by_no_node(run: ContainerRun) -> None:
    for node in run.nodes:
        code, out = node.exec(["cat", f"{SECRETS_DIR}/tls-bundle.json"])
        assert code == 0 and '"node_cert"' in out
        assert f"CN={ROOT_USER}," not in _subject_of(out), node.name
        assert ('"ca_key"' in out) is ("auth" in node.spec.services), f"{node.name}: the CA key only on issuers"


def _subject_of(bundle: str) -> str:
    import json

    from cryptography import x509

    return x509.load_pem_x509_certificate(json.loads(bundle)["node_cert"].encode()).subject.rfc4514_string()


def test_the_runtime_keeps_working_through_a_member_restart(run: ContainerRun) -> None:
    member = run.node(run.spec.members[-1].name)
    member.restart()
    run.wait_healthy()
    with run.client() as api:
        key = f"after-restart-{time.time_ns()}"
        assert api.put(f"/v1/kv/{key}", content=b"v").status_code == 200
        assert api.get(f"/v1/kv/{key}").content == b"v"


def _served_serial(ip: str, port: int, ca: Identity, client: Identity | None) -> int:
    context = _context(ca, client)
    import socket

    with socket.create_connection((ip, port), timeout=5) as raw, context.wrap_socket(raw) as sock:
        der = sock.getpeercert(binary_form=True)
    assert der is not None
    from cryptography import x509

    return x509.load_der_x509_certificate(der).serial_number


def test_certificates_renew_without_a_restart(run: ContainerRun, certs: dict[str, Identity]) -> None:
    """A run of this mode whose certificates live 30 s: every node renews (non-issuers
    through an auth node), etcd serves the new certificate on 2379, and the API and the DB
    link keep working, with no process restarted."""
    with topologies.start(run.mode, env={"RUNTIME_CERT_LIFETIME": "30s"}) as short:
        assert isinstance(short, ContainerRun)
        pki = RunPki.load(short.workdir)
        with tempfile.TemporaryDirectory() as folder:
            ca = Identity(Path(folder), "ca", pki.ca.cert_pem, b"")
            root = Identity(Path(folder), "root", *(pki.root().get("node") or (b"", b"")))
            api_before = {n.name: _served_serial(n.ip, 8443, ca, None) for n in short.nodes}
            member = short.node(short.spec.members[0].name)
            db_before = _served_serial(member.ip, DB_CLIENT_PORT, ca, root)

            def all_renewed() -> bool:
                api_now = {n.name: _served_serial(n.ip, 8443, ca, None) for n in short.nodes}
                db_now = _served_serial(member.ip, DB_CLIENT_PORT, ca, root)
                return db_now != db_before and all(api_now[n] != api_before[n] for n in api_now)

            wait_until(all_renewed, timeout=90, interval=1, message="every node and etcd serving a renewed certificate")
            short.wait_healthy()
            with short.client() as api:
                for door in short.endpoints:
                    key = f"renewed-{time.time_ns()}"
                    assert api.put(f"/v1/kv/{key}", content=b"v").status_code == 200, door
                    assert api.get(f"/v1/kv/{key}").content == b"v", door
            for node in short.nodes:
                logs = node.logs(400)
                assert "renewed certificate" in logs, node.name
                assert logs.count('"node ready"') == 1, f"{node.name} started more than once"


def test_each_node_holds_only_the_secrets_its_services_use_and_none_in_its_settings(run: ContainerRun) -> None:
    """Secrets are files of the runtime's user (0400), never settings: nothing in any node's
    environment as the platform reports it (``docker inspect``) or in any process of it
    (Envoy's, an etcd member's), and only ``auth`` nodes hold the admin password and the
    run secret (a kv node hosting an etcd member could once unseal the signing keys)."""
    secrets = run.secrets
    values = {"run secret": secrets.cluster_secret, "admin password": secrets.admin_password}
    for node in run.nodes:
        settings = "\n".join(f"{k}={v}" for k, v in node.handle.env.items())  # what docker inspect shows
        leaked = [name for name, value in values.items() if value in settings] + (
            ["a private key"] if "PRIVATE KEY" in settings else []
        )
        assert not leaked, f"{node.name}: {leaked} in its settings"
        code, listing = node.exec(["sh", "-c", f"stat -c '%n %a %U' {SECRETS_DIR}/*"])
        held = {line.split()[0].rsplit("/", 1)[1]: line.split()[1:] for line in listing.splitlines() if "/" in line}
        expected = (
            {"tls-bundle.json", "admin-password", "cluster-secret"} if "auth" in node.services else {"tls-bundle.json"}
        )
        assert set(held) == expected, f"{node.name} ({','.join(node.services)}): {sorted(held)}"
        assert all(mode_owner == ["400", "modematrix"] for mode_owner in held.values()), (node.name, held)
        code, environs = node.exec(["sh", "-c", "cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'"])
        assert code == 0 and "PATH=" in environs, f"{node.name}: positive control: environments are readable"
        assert not [n for n, v in values.items() if v in environs], f"{node.name}: a process has a secret in its env"

"""Node certificates: the bootstrap bundle, install order, renewal (local and through an
issuer node over real mutual TLS), and the errors bad input gets."""

from __future__ import annotations

import json
import ssl
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from runtime import config
from runtime.exceptions import ConfigError, SecurityError
from runtime.security import tls
from runtime.security.certs import PEER_NAME, Bundle, Identity, LocalIssuer, NodeCertificate, NotRenewable, RemoteIssuer
from runtime.storage.etcd_member import member_argv
from tests.conftest import RuntimeProcess

NOW = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture
def ca() -> tls.KeyPair:
    return tls.make_ca("test CA", NOW, timedelta(days=365))


def _bundle(ca: tls.KeyPair, *, member: bool = False, issuer: bool = False, lifetime: float = 3600) -> Bundle:
    def pair(cn: str) -> tuple[bytes, bytes]:
        made = tls.issue_node_cert(ca, "kv-1", ["10.0.0.5"], NOW, timedelta(seconds=lifetime), common_name=cn)
        return made.cert_pem, made.key_pem

    pairs = {"node": pair("kv")}
    if member:
        pairs["peer"] = pair(PEER_NAME)
    return Bundle(ca.cert_pem, pairs, ca.key_pem if issuer else None)


def _node_cert(directory: Path, ca: tls.KeyPair, *, member: bool = False, at: float | None = None) -> NodeCertificate:
    clock = (lambda: at) if at is not None else (lambda: NOW.timestamp())
    return NodeCertificate(
        directory,
        ca.cert_pem,
        node_name="kv-1",
        common_name="kv",
        names=["10.0.0.5"],
        lifetime=3600,
        member=member,
        clock=clock,
    )


def test_a_bundle_round_trips_and_bad_ones_say_what_is_wrong(ca: tls.KeyPair) -> None:
    bundle = _bundle(ca, member=True, issuer=True)
    again = Bundle.load(bundle.dump())
    assert again.get("peer") == bundle.get("peer") and again.ca is not None
    cases = {
        "not json": "expected a JSON object",
        json.dumps({"node_cert": "x"}): "expected keys ca",
        json.dumps({"ca": ca.cert_pem.decode(), "extra": "x"}): "expected keys ca",
        json.dumps({"ca": ca.cert_pem.decode(), "node_cert": "x"}): "node_cert and node_key go together",
        json.dumps({"ca": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}): "does not load",
        json.dumps({"ca": 1}): "JSON object of PEM strings",
    }
    for text, expected in cases.items():
        with pytest.raises(ValueError, match=expected):
            Bundle.load(text)


def test_config_checks_the_bundle_and_that_a_member_has_a_peer_certificate(ca: tls.KeyPair) -> None:
    with pytest.raises(ConfigError, match="tls_bundle: expected a JSON object"):
        config.build({"services": "kv", "tls_bundle": "{"})
    member = {
        "services": "kv",
        "db_member_name": "kv-1",
        "db_member_host": "10.0.0.5",
        "db_initial_cluster": "kv-1=https://10.0.0.5:2380",
        "issuers": "10.0.0.9:8443",
    }
    with pytest.raises(ConfigError, match="a DB member needs peer_cert"):
        config.build({**member, "tls_bundle": _bundle(ca).dump()})
    with pytest.raises(ConfigError, match=r"issuers: .*renew"):
        config.build({**member, "issuers": "", "tls_bundle": _bundle(ca, member=True).dump()})
    assert config.build({**member, "tls_bundle": _bundle(ca, member=True).dump()}).tls_bundle is not None


def test_install_takes_files_then_the_bundle_then_issues_and_keys_are_private(tmp_path: Path, ca: tls.KeyPair) -> None:
    cert = _node_cert(tmp_path, ca, member=True)
    cert.install(_bundle(ca, member=True), None)
    first = cert.node.load()
    assert first is not None and first.subject.rfc4514_string() == "CN=kv,O=modematrix cluster"
    peer = cert.peer.load() if cert.peer else None
    assert peer is not None and peer.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == PEER_NAME
    for key in (cert.node.key_file, tmp_path / "peer-key.pem"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    again = _node_cert(tmp_path, ca, member=True)
    again.install(_bundle(ca, member=True), None)  # a restart: the files win over the bundle
    assert again.node.load() == first
    with pytest.raises(SecurityError, match="does not hold the CA key"):
        _node_cert(tmp_path / "empty", ca).install(None, None)
    fresh = _node_cert(tmp_path / "issued", ca)
    fresh.install(None, ca)
    assert fresh.node.load() is not None


def test_a_bundle_from_another_ca_is_not_installed(tmp_path: Path, ca: tls.KeyPair) -> None:
    other = tls.make_ca("other", NOW, timedelta(days=30))
    with pytest.raises(SecurityError, match="no valid node certificate"):
        _node_cert(tmp_path, ca).install(_bundle(other), None)


def test_renewal_keeps_the_identity_and_ignores_the_names_asked_for(ca: tls.KeyPair) -> None:
    current = tls.issue_node_cert(ca, "kv-1", ["10.0.0.5"], NOW, timedelta(hours=1), common_name="kv")
    greedy = x509.CertificateSigningRequestBuilder().subject_name(tls.subject("root"))
    greedy = greedy.add_extension(x509.SubjectAlternativeName([x509.DNSName("auth-1")]), critical=False)
    key = tls.new_key()
    from cryptography.hazmat.primitives import hashes, serialization

    request = greedy.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    issued = x509.load_pem_x509_certificate(
        LocalIssuer(ca, 3600, clock=lambda: NOW.timestamp()).certify(current.cert, request)
    )
    assert issued.subject == current.cert.subject
    assert issued.public_key() == key.public_key()
    names = issued.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(n.value) for n in names] == ["kv-1", "10.0.0.5"]


def test_renewal_refuses_a_foreign_or_expired_certificate_and_a_forged_request(ca: tls.KeyPair) -> None:
    issuer = LocalIssuer(ca, 3600, clock=lambda: NOW.timestamp())
    request = tls.signing_request(tls.new_key())
    other = tls.make_ca("other", NOW, timedelta(days=30))
    foreign = tls.issue_node_cert(other, "kv-1", [], NOW, timedelta(hours=1))
    with pytest.raises(ValueError, match="not issued by the cluster CA"):
        issuer.certify(foreign.cert, request)
    old = tls.issue_node_cert(ca, "kv-1", [], NOW - timedelta(days=2), timedelta(hours=1))
    with pytest.raises(ValueError, match="not valid at"):
        issuer.certify(old.cert, request)
    valid = tls.issue_node_cert(ca, "kv-1", [], NOW, timedelta(hours=1), common_name="kv")
    with pytest.raises(ValueError, match="not a PEM certificate signing request"):
        issuer.certify(valid.cert, b"garbage")
    tampered = request.replace(request[80:84], b"AAAA") if request[80:84] != b"AAAA" else request
    with pytest.raises(ValueError):
        issuer.certify(valid.cert, tampered)


@pytest.mark.parametrize(
    ("common_name", "renews"),
    [
        ("kv", True),
        ("auth+ingress+kv+queue", True),
        ("envoy", True),
        (PEER_NAME, True),
        ("root", False),  # db-init's: an hour, then gone (it came back renewed for 24 h)
        ("system:node:k8s-worker-1", False),  # the Kubernetes cluster built here shares the CA
        ("lb", False),
        ("kv+auth", False),  # not how a service set is named
        ("", False),
    ],
)
def test_the_issuer_renews_only_what_it_issues_to_nodes(ca: tls.KeyPair, common_name: str, renews: bool) -> None:
    issuer = LocalIssuer(ca, 3600, clock=lambda: NOW.timestamp())
    current = tls.issue_node_cert(ca, "x", ["x"], NOW, timedelta(hours=1), common_name=common_name)
    request = tls.signing_request(tls.new_key())
    if renews:
        assert issuer.certify(current.cert, request)
    else:
        with pytest.raises(NotRenewable):
            issuer.certify(current.cert, request)


@pytest.mark.anyio
async def test_renew_writes_new_files_and_tells_the_listeners(tmp_path: Path, ca: tls.KeyPair) -> None:
    cert = _node_cert(tmp_path, ca, member=True, at=NOW.timestamp())
    cert.install(_bundle(ca, member=True), None)
    before = {i.name: i.load() for i in cert.identities}
    later = NOW.timestamp() + 3000  # past 2/3 of an hour
    cert._clock = lambda: later
    cert.issuer = LocalIssuer(ca, 3600, clock=lambda: later)
    told: list[str] = []

    async def listener() -> None:
        told.append("renewed")

    cert.on_renew.append(listener)
    assert cert.seconds_until_renewal() == 0
    await cert.renew()
    after = {i.name: i.load() for i in cert.identities}
    assert told == ["renewed"]
    for name in ("node", "peer"):
        old, new = before[name], after[name]
        assert old is not None and new is not None
        assert new.serial_number != old.serial_number and new.subject == old.subject
    assert cert.seconds_until_renewal() > 0


@pytest.mark.anyio
async def test_a_node_renews_through_an_issuer_over_mutual_tls(tmp_path: Path, server: RuntimeProcess) -> None:
    """The standalone server holds its CA: it is an issuer. Its own certificate files serve as
    the identity of a node renewing itself through it."""
    node = Identity("node", server.data_dir / "tls" / "node.pem", server.data_dir / "tls" / "node-key.pem")
    current = node.load()
    assert current is not None
    issuer = RemoteIssuer([server.address], server.ca_file)
    issued = x509.load_pem_x509_certificate(await issuer.renew(node, tls.signing_request(tls.new_key())))
    assert issued.subject == current.subject and issued.serial_number != current.serial_number
    plain = httpx.post(
        server.url + "/v1/_cluster/renew", content=b"x", verify=ssl.create_default_context(cafile=str(server.ca_file))
    )
    assert plain.status_code == 403 and plain.json()["error"] == "members_only"
    context = node.client_context(server.ca_file)
    garbage = httpx.post(server.url + "/v1/_cluster/renew", content=b"not a request", verify=context)
    assert garbage.status_code == 400 and "signing request" in garbage.json()["detail"]
    with pytest.raises(SecurityError, match="no issuer renewed"):
        await RemoteIssuer(["127.0.0.1:1"], server.ca_file, timeout=1).renew(node, tls.signing_request(tls.new_key()))


def test_a_member_with_tls_requires_certificates_on_both_ports(ca: tls.KeyPair) -> None:
    settings = config.build(
        {
            "services": "kv",
            "mode": "cluster",
            "db_backend": "etcd",
            "db_endpoints": "https://10.0.0.5:2379",
            "cluster_secret": "s" * 32,
            "db_member_name": "kv-1",
            "db_member_host": "10.0.0.5",
            "db_initial_cluster": "kv-1=https://10.0.0.5:2380",
            "tls_bundle": _bundle(ca, member=True, issuer=True).dump(),
        }
    )
    argv = member_argv(settings)
    assert "--client-cert-auth" in argv and "--peer-client-cert-auth" in argv
    assert f"--peer-cert-allowed-cn={PEER_NAME}" in argv
    assert not [a for a in argv if a.startswith("http://")]
    with pytest.raises(ConfigError, match="every endpoint https"):
        config.build({**{"services": "kv"}, "db_backend": "etcd", "db_endpoints": "https://a:2379,http://b:2379"})

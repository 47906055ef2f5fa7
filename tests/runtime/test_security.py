"""Authentication, authorization and TLS against real runtime processes.

Every attack here is sent over a real TLS socket to a real server; the comments say what
the server must answer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import ssl
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from tests.conftest import EtcdCluster, RuntimeProcess, cluster_env, trust
from topologies.wait import wait_until

SHORT = {"RUNTIME_TOKEN_TTL": "3s", "RUNTIME_SIGNING_KEY_ROTATION": "5s", "RUNTIME_CERT_LIFETIME": "6s"}
ADMIN_PASSWORD = "correct-horse-battery-staple"
SECRET = "cluster-secret-for-tests-0123456789"


@pytest.fixture(scope="module")
def server() -> Iterator[RuntimeProcess]:
    with tempfile.TemporaryDirectory(prefix="sec-") as root:
        env = {**SHORT, "RUNTIME_ADMIN_PASSWORD": ADMIN_PASSWORD, "RUNTIME_CLUSTER_SECRET": SECRET}
        proc = RuntimeProcess(Path(root) / "node", env=env).start().wait_ready()
        yield proc
        proc.kill()


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unsigned(claims: dict[str, object], header: dict[str, object]) -> str:
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}."


def claims(sub: str = "admin", roles: tuple[str, ...] = ("admin",), ttl: int = 600) -> dict[str, object]:
    now = int(time.time())
    return {"iss": "modematrix", "sub": sub, "roles": list(roles), "iat": now, "exp": now + ttl}


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def status(server: RuntimeProcess, token: str | None, method: str = "GET", path: str | None = None) -> int:
    """The status of one call; by default a read of a key nobody writes (404 when allowed)."""
    path = path or ("/v1/kv/written" if method == "PUT" else "/v1/kv/never-written")
    with server.client() as c:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return c.request(method, path, headers=headers, content=b"v" if method == "PUT" else None).status_code


def test_401_without_a_token(server: RuntimeProcess) -> None:
    assert status(server, None) == 401


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer abc",
        "Bearer a.b.c",
        "Bearer " + "x" * 5000,
        "Bearer eyJhbGciOiJFUzI1NiJ9.e30.AAAA",
        "Basic YWRtaW46eA==",
        "token-without-scheme",
    ],
)
def test_401_for_malformed_tokens(server: RuntimeProcess, header: str) -> None:
    with server.client() as c:
        assert c.get("/v1/kv/x", headers={"Authorization": header}).status_code == 401


def test_401_for_alg_none(server: RuntimeProcess) -> None:
    kid = kid_of(server.login(password=ADMIN_PASSWORD))
    assert status(server, unsigned(claims(), {"alg": "none", "typ": "JWT", "kid": kid})) == 401


def test_401_for_hmac_signed_with_the_public_key(server: RuntimeProcess) -> None:
    """The classic algorithm-confusion attack: HS256 keyed with the published public key."""
    with server.client() as c:
        jwk = c.get("/v1/auth/jwks").json()["keys"][0]
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": jwk["kid"]}).encode())
    body = b64url(json.dumps(claims()).encode())
    mac = hmac.new(json.dumps(jwk).encode(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    assert status(server, f"{header}.{body}.{b64url(mac)}") == 401


def test_401_for_a_key_the_cluster_never_had(server: RuntimeProcess) -> None:
    stranger = ec.generate_private_key(ec.SECP256R1())
    assert status(server, jwt.encode(claims(), stranger, "ES256", headers={"kid": "deadbeefdeadbeef"})) == 401
    real_kid = kid_of(server.login(password=ADMIN_PASSWORD))
    assert status(server, jwt.encode(claims(), stranger, "ES256", headers={"kid": real_kid})) == 401


def test_401_for_an_expired_token_and_for_a_tampered_one(server: RuntimeProcess) -> None:
    token = server.login(password=ADMIN_PASSWORD)
    assert status(server, token) == 404  # valid: the key just does not exist
    head, body, sig = token.split(".")
    forged = json.loads(base64.urlsafe_b64decode(body + "=="))
    forged["sub"] = "someone-else"
    assert status(server, f"{head}.{b64url(json.dumps(forged).encode())}.{sig}") == 401
    wait_until(lambda: status(server, token) == 401, timeout=15, interval=0.25, message="token expires after 3 s")


def test_403_for_a_reader_writing_and_a_writer_managing_users(server: RuntimeProcess) -> None:
    admin = server.login(password=ADMIN_PASSWORD)
    with server.client(admin) as c:
        for name, role in (("rita", "reader"), ("walt", "writer")):
            reply = c.post("/v1/auth/users", json={"username": name, "password": f"{name}-password", "roles": [role]})
            assert reply.status_code in (201, 409)
    reader, writer = server.login("rita", "rita-password"), server.login("walt", "walt-password")
    assert status(server, reader, "GET") == 404
    assert status(server, reader, "PUT") == 403
    assert status(server, reader, "POST", "/v1/queue/q/claim") == 403
    assert status(server, writer, "PUT") == 200
    new_user = {"username": "eve", "password": "eve-password", "roles": ["admin"]}
    with server.client(writer) as c:
        assert c.post("/v1/auth/users", json=new_user).status_code == 403
        me = c.get("/v1/auth/whoami").json()
    assert me["username"] == "walt" and me["roles"] == ["writer"]


def test_wrong_password_is_401_then_slowed_down(tmp_path: Path) -> None:
    server = RuntimeProcess(tmp_path / "node").start().wait_ready()  # its own: this locks out 127.0.0.1
    with server.client() as c:
        answers = [c.post("/v1/auth/login", json={"username": "admin-guess", "password": f"p{i}"}) for i in range(7)]
    assert [a.status_code for a in answers[:5]] == [401] * 5
    assert answers[-1].status_code == 429 and int(answers[-1].headers["retry-after"]) >= 1
    assert answers[0].json()["detail"] == "unknown user or wrong password"
    server.kill()


def test_signing_key_rotates_and_old_tokens_stay_valid_until_they_expire(server: RuntimeProcess) -> None:
    seen: list[str] = [server.login(password=ADMIN_PASSWORD)]

    def rotated() -> bool:
        seen.append(server.login(password=ADMIN_PASSWORD))
        return kid_of(seen[-1]) != kid_of(seen[0])

    wait_until(rotated, timeout=40, interval=0.2, message="a new signing key after 5 s")
    last_old, first_new = seen[-2], seen[-1]
    assert status(server, last_old) == 404, "a token of the previous key is accepted until it expires"
    assert status(server, first_new) == 404
    with server.client() as c:
        kids = {k["kid"] for k in c.get("/v1/auth/jwks").json()["keys"]}
    assert {kid_of(last_old), kid_of(first_new)} <= kids
    wait_until(lambda: status(server, last_old) == 401, timeout=15, interval=0.25, message="old token expires")


def test_client_that_trusts_nothing_is_refused_at_the_handshake(server: RuntimeProcess) -> None:
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(server.url + "/healthz")
    assert httpx.get(server.url + "/healthz", verify=trust(server.ca_file)).status_code == 200


def test_certificate_names_and_issuer(server: RuntimeProcess) -> None:
    pem = ssl.get_server_certificate(("127.0.0.1", server.port))
    cert = x509.load_pem_x509_certificate(pem.encode())
    ca = x509.load_pem_x509_certificate(server.ca_file.read_bytes())
    assert cert.issuer == ca.subject
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert "127.0.0.1" in [str(ip) for ip in names.get_values_for_type(x509.IPAddress)]


def _serial(reply: httpx.Response) -> int:
    der = reply.extensions["network_stream"].get_extra_info("ssl_object").getpeercert(True)
    return int(x509.load_der_x509_certificate(der).serial_number)


def test_certificate_is_renewed_while_a_connection_stays_open(server: RuntimeProcess) -> None:
    with server.client(limits=httpx.Limits(max_connections=1)) as kept:
        first = kept.get("/healthz")
        old_serial = _serial(first)

        def renewed() -> bool:
            with server.client() as fresh:
                return _serial(fresh.get("/healthz")) != old_serial

        wait_until(renewed, timeout=30, interval=0.5, message="a new certificate after 2/3 of 6 s")
        again = kept.get("/healthz")
        assert again.status_code == 200
        assert _serial(again) == old_serial, "the open connection must be the same one, not a new handshake"


def test_no_secret_in_logs_bodies_or_metrics(server: RuntimeProcess) -> None:
    token = server.login(password=ADMIN_PASSWORD)
    with server.client(token) as c:
        bodies = [
            c.post("/v1/auth/login", json={"username": "admin", "password": "wrong-" + ADMIN_PASSWORD}).text,
            c.get("/metrics").text,
            c.get("/v1/auth/jwks").text,
            c.get("/openapi.json").text,
        ]
    key_pem = (server.data_dir / "tls" / "node-key.pem").read_text()
    key_body = "".join(key_pem.splitlines()[1:-1])[:40]
    haystacks = [*bodies, server.log_file.read_text()]
    for secret in (ADMIN_PASSWORD, SECRET, token, key_body):
        assert not any(secret in h for h in haystacks)
    assert oct((server.data_dir / "tls" / "node-key.pem").stat().st_mode & 0o777) == "0o600"


def test_generated_admin_password_is_written_0600_and_logged_once_without_the_password(tmp_path: Path) -> None:
    proc = RuntimeProcess(tmp_path / "node").start().wait_ready()
    path = proc.data_dir / "admin-password"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    password = path.read_text().strip()
    assert proc.login(password=password)
    log = proc.log_file.read_text()
    assert log.count("generated the first admin password") == 1 and password not in log
    proc.kill()


@pytest.mark.etcd
def test_three_nodes_started_at_once_share_one_ca_and_accept_each_others_tokens(
    etcd: EtcdCluster, tmp_path: Path
) -> None:
    prefix = f"/race{time.time_ns()}"  # fresh cluster state on the shared etcd: our own secret
    env = cluster_env(etcd, SECRET + prefix, RUNTIME_ADMIN_PASSWORD=ADMIN_PASSWORD)
    etcd.wipe()
    nodes = [RuntimeProcess(tmp_path / f"n{i}", env=env).start() for i in range(3)]
    try:
        for node in nodes:
            node.wait_ready()
        cas = {n.ca_file.read_bytes() for n in nodes}
        assert len(cas) == 1
        for issuer in nodes:
            token = issuer.login(password=ADMIN_PASSWORD)
            assert {status(other, token) for other in nodes} == {404}
    finally:
        for node in nodes:
            node.kill()


@pytest.mark.etcd
def test_a_node_with_another_cluster_secret_refuses_to_start(etcd: EtcdCluster, tmp_path: Path) -> None:
    env = {"RUNTIME_MODE": "cluster", "RUNTIME_DB_BACKEND": "etcd", "RUNTIME_DB_ENDPOINTS": ",".join(etcd.endpoints)}
    etcd.wipe()
    first = RuntimeProcess(tmp_path / "a", env={**env, "RUNTIME_CLUSTER_SECRET": SECRET}).start().wait_ready()
    intruder = RuntimeProcess(tmp_path / "b", env={**env, "RUNTIME_CLUSTER_SECRET": "another-secret-entirely"}).start()
    assert intruder.process is not None and intruder.process.wait(60) == 2
    assert "does not decrypt with this node's cluster_secret" in intruder.log_file.read_text()
    first.kill()


@pytest.mark.etcd
def test_a_node_whose_db_is_gone_names_no_member_to_its_callers(etcd3: EtcdCluster, tmp_path: Path) -> None:
    """/readyz and a write's 503 once carried the etcd members' addresses and raw errors;
    now they say what happened and whether it was applied, and the log has the rest."""
    env = cluster_env(etcd3, SECRET + "/gone", RUNTIME_ADMIN_PASSWORD=ADMIN_PASSWORD)
    node = RuntimeProcess(tmp_path / "n", env=env).start().wait_ready()
    try:
        token = node.login(password=ADMIN_PASSWORD)
        etcd3.stop()
        with httpx.Client(verify=trust(node.ca_file), timeout=30) as client:
            ready = wait_until(
                lambda: (r := client.get(node.url + "/readyz")).status_code == 503 and r,
                timeout=30,
                interval=0.2,
                message="/readyz says not ready",
            )
            write = client.put(node.url + "/v1/kv/x", content=b"1", headers={"Authorization": f"Bearer {token}"})
        assert ready.status_code == 503 and write.status_code == 503, (ready.text, write.text)
        for body in (ready.text, write.text):
            assert "127.0.0.1" not in body and "2379" not in body and "etcd" not in body.lower(), body
            assert set(ready.json()) == {"error", "detail"}
        assert any(str(m.client_port) in node.log_tail(200) for m in etcd3.members), "the log keeps the detail"
    finally:
        node.kill()

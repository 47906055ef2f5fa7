"""What an outsider can do through a mode's front door, tried as one would (issue: a client
with no certificate once got its own key signed as ``CN=envoy`` through Envoy):

- the run's own routes (certificate renewal) are never served through a balancer: Envoy
  and HAProxy answer 404 themselves, with or without a certificate of the run's CA;
- a client cannot choose the address it is throttled and logged by (X-Forwarded-For).

pytest scenarios/test_front_door.py --mode single,ha,scaled,scaled-haproxy
"""

from __future__ import annotations

import json
import ssl
import time
from pathlib import Path

import httpx
import pytest

from runtime.routing import ROUTES
from runtime.security import tls
from topologies import ContainerRun
from topologies.pki import RunPki

RENEW = next(r.path for r in ROUTES if r.name == "cluster.renew")


def balanced(run: ContainerRun) -> bool:
    """A front door in front of the nodes (Envoy or HAProxy), not the nodes themselves."""
    return run.lb is not None or any(n.spec.is_envoy for n in run.nodes)


def trusting(ca_file: Path, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file))
    if cert is not None:
        context.load_cert_chain(*cert)
    return context


def renew(endpoint: str, ca_file: Path, cert: tuple[Path, Path] | None) -> httpx.Response:
    request = tls.signing_request(tls.new_key())
    with httpx.Client(verify=trusting(ca_file, cert), timeout=10) as client:
        return client.post(endpoint + RENEW, content=request)


def test_no_certificate_is_issued_through_the_front_door(run: ContainerRun, tmp_path: Path) -> None:
    """With no certificate, and with one of the run's own CA (a member's identity, as a
    leaked one would be): through Envoy or HAProxy the answer is always 404, from the
    balancer; a node reached directly refuses a caller without a member certificate."""
    member = RunPki.load(run.workdir).client("envoy", ["127.0.0.1"]).pairs["node"]
    cert_file, key_file = tmp_path / "member.pem", tmp_path / "member-key.pem"
    cert_file.write_bytes(member[0])
    key_file.write_bytes(member[1])
    for endpoint in run.endpoints:
        for who, cert in (("no certificate", None), ("a member's certificate", (cert_file, key_file))):
            if cert is not None and not balanced(run):
                continue  # a member calling an issuer directly renews its own identity: by design
            reply = renew(endpoint, run.ca_file, cert)
            assert b"BEGIN CERTIFICATE" not in reply.content, f"{endpoint}, {who}: a certificate was issued"
            expected = 404 if balanced(run) else 403
            assert reply.status_code == expected, f"{endpoint}, {who}: {reply.status_code} {reply.text}"


def test_a_client_cannot_choose_the_address_it_is_throttled_by(run: ContainerRun) -> None:
    """Twelve wrong passwords for one user, each with a new forged X-Forwarded-For: the nodes
    that check them see one client, so they lock it out (the throttle is per auth node: with
    two behind a balancer, each sees about half). Before, behind Envoy, every guess came from
    a "new" address and none was ever refused."""
    user = f"nobody-{time.time_ns()}"
    statuses = []
    with httpx.Client(verify=trusting(run.ca_file), timeout=30) as client:
        for i in range(12):
            statuses.append(
                client.post(
                    run.endpoints[0] + "/v1/auth/login",
                    json={"username": user, "password": f"guess-{i}"},
                    headers={"X-Forwarded-For": f"203.0.113.{i + 1}"},
                ).status_code
            )
    assert statuses[:5] == [401] * 5 and 429 in statuses, statuses
    forged = [
        record["client"]
        for node in run.nodes
        if "auth" in node.spec.services
        for line in node.logs(400).splitlines()
        if line.startswith("{") and '"msg": "request"' in line
        for record in [json.loads(line)]
        if record.get("route") == "auth.login" and str(record.get("client", "")).startswith("203.0.113.")
    ]
    assert not forged, f"the log recorded forged addresses: {forged}"


def test_the_front_doors_own_404_names_no_node(run: ContainerRun) -> None:
    if not balanced(run):
        pytest.skip(f"{run.mode} has no balancer in front of its nodes")
    with httpx.Client(verify=trusting(run.ca_file), timeout=10) as client:
        reply = client.post(run.endpoints[0] + RENEW, content=b"x")
    assert reply.status_code == 404
    for node in run.nodes:
        assert node.ip not in reply.text, reply.text

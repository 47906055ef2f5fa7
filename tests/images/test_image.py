"""The built image, for real: entry point, readiness, hygiene, no secrets in any layer."""

from __future__ import annotations

import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest

import images
from images.inspect import find_secrets
from topologies.wait import wait_until

pytestmark = pytest.mark.docker


@pytest.fixture(scope="session")
def client() -> docker.DockerClient:
    return images.docker_client()


@pytest.fixture(scope="session")
def image(client: docker.DockerClient) -> str:
    return images.build(quiet=True, client=client).tag


def test_a_second_build_reuses_the_image(client: docker.DockerClient, image: str) -> None:
    again = images.build(quiet=True, client=client)
    assert again.reused and again.tag == image


def test_run_without_services_exits_2_with_the_runtime_message(client: docker.DockerClient, image: str) -> None:
    container = client.containers.run(image, detach=True, labels={"modematrix.run": "image-test"})
    try:
        assert container.wait(timeout=60)["StatusCode"] == 2
        assert "services: no services given" in container.logs().decode()
    finally:
        container.remove(force=True)


@pytest.fixture
def running(client: docker.DockerClient, image: str) -> Iterator[docker.models.containers.Container]:
    container = client.containers.run(
        image,
        ["serve", "--services", "all"],
        detach=True,
        ports={"8443/tcp": ("127.0.0.1", None)},
        labels={"modematrix.run": "image-test"},
    )
    yield container
    container.remove(force=True)


def test_serve_all_becomes_ready_as_a_non_root_user(running: docker.models.containers.Container) -> None:
    running.reload()
    port = running.ports["8443/tcp"][0]["HostPort"]
    ca = wait_until(
        lambda: (
            running.exec_run(["cat", "/var/lib/modematrix/data/ca.pem"]).output
            if running.exec_run(["test", "-s", "/var/lib/modematrix/data/ca.pem"]).exit_code == 0
            else None
        ),
        timeout=60,
        interval=0.25,
        message="the node wrote its CA",
    )
    with tempfile.NamedTemporaryFile(suffix=".pem") as ca_file:
        Path(ca_file.name).write_bytes(ca)
        context = ssl.create_default_context(cafile=ca_file.name)
        reply = wait_until(
            lambda: httpx.get(f"https://127.0.0.1:{port}/readyz", verify=context, timeout=2),
            timeout=60,
            interval=0.25,
            message="readyz through the published port",
            ignore=(httpx.HTTPError,),
        )
    assert reply.json()["status"] == "ready"
    assert running.exec_run(["id", "-u"]).output.strip() == b"10001"
    assert running.exec_run(["/opt/venv/bin/python", "-m", "runtime.healthcheck"]).exit_code == 0


def test_image_hygiene(client: docker.DockerClient, image: str) -> None:
    attrs = client.images.get(image).attrs
    config = attrs["Config"]
    assert config["User"] == "modematrix"
    assert config["Entrypoint"] == ["/usr/bin/tini", "--", "/usr/local/bin/runtime"]
    assert config["Healthcheck"]["Test"][-1] == "runtime.healthcheck"
    labels = config["Labels"]
    for label in ("source", "revision", "version", "created"):
        assert labels[f"org.opencontainers.image.{label}"] not in ("", "unknown")
    for tool in ("etcd", "etcdctl", "haproxy", "iptables", "tc", "tini"):
        found = client.containers.run(image, [tool], entrypoint=["which"], remove=True)
        assert found.strip(), f"{tool} is missing from the image"


def test_no_test_tooling_in_the_image(client: docker.DockerClient, image: str) -> None:
    tools = "('pytest', 'locust', 'testcontainers', 'docker', 'pip')"
    probe = f"import importlib.util as u; print([m for m in {tools} if u.find_spec(m)])"
    listing = client.containers.run(image, ["-c", probe], entrypoint=["/opt/venv/bin/python"], remove=True)
    assert listing.strip() == b"[]"


def test_no_secret_in_any_layer(client: docker.DockerClient, image: str) -> None:
    assert find_secrets(client, image) == []


def test_the_secret_check_catches_a_key_baked_into_a_layer(
    client: docker.DockerClient, image: str, tmp_path: Path
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "innocent.txt").write_bytes(key)
    (tmp_path / "Dockerfile").write_text(
        f"FROM {image}\nCOPY innocent.txt /tmp/\nUSER root\nRUN rm /tmp/innocent.txt\n"
    )
    leaky, _ = client.images.build(path=str(tmp_path), tag="modematrix/leaky-test:latest", rm=True)
    try:
        found = find_secrets(client, leaky.id)
        assert any("tmp/innocent.txt: holds a private key" in f for f in found), found
    finally:
        client.images.remove(leaky.id, force=True)

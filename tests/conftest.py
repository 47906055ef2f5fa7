"""Shared fixtures: real etcd processes and real runtime processes on loopback."""

from __future__ import annotations

import base64
import functools
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from topologies.wait import tried, wait_until


def trust(ca_file: Path) -> ssl.SSLContext:
    """A client TLS context that trusts exactly this CA file."""
    return ssl.create_default_context(cafile=str(ca_file))


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """One event loop per test process, kept for the session (anyio keeps its runner while this
    lasts): grpc.aio, under the runtime's etcd client, binds to one loop per process, and a
    call left from a loop that a test closed completed on the next test's loop as "Event loop
    is closed" (CI29, once in ten runs)."""
    return "asyncio"


PORT_TRIES = 3  # cluster starts with new ports when a member loses its port to another process


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class EtcdMember:
    """One etcd member on loopback: the host's etcd binary if there is one, else the etcd
    inside the project's own image, run with host networking (so a fresh machine with only
    Python and Docker runs these tests too)."""

    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None
    container: object | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def argv(self, initial_cluster: str, data_dir: str) -> list[str]:
        return [
            "--name",
            self.name,
            "--data-dir",
            data_dir,
            "--listen-client-urls",
            self.url,
            "--advertise-client-urls",
            self.url,
            "--listen-peer-urls",
            f"http://127.0.0.1:{self.peer_port}",
            "--initial-advertise-peer-urls",
            f"http://127.0.0.1:{self.peer_port}",
            "--initial-cluster",
            initial_cluster,
            "--initial-cluster-state",
            "new",
            "--heartbeat-interval",
            "50",
            "--election-timeout",
            "500",
            "--log-level",
            "warn",
        ]

    def start(self, initial_cluster: str) -> None:
        if shutil.which("etcd"):
            with open(self.data_dir.with_suffix(".log"), "ab") as log:  # the child keeps its own copy
                self.process = subprocess.Popen(
                    ["etcd", *self.argv(initial_cluster, str(self.data_dir))], stdout=log, stderr=log
                )
            return
        import images

        client = images.docker_client()
        self.container = client.containers.run(
            images.build(quiet=True, client=client).tag,
            self.argv(initial_cluster, f"/tmp/{self.name}"),
            entrypoint=["etcd"],
            network_mode="host",
            detach=True,
            labels={"modematrix.run": "tests-etcd"},
        )

    def pause(self) -> None:
        """SIGSTOP: the member keeps its sockets but answers nothing (a hung peer)."""
        if self.process is None:
            pytest.skip("pausing a member needs the host's etcd binary")
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        if self.container is not None:
            self.container.remove(force=True)  # type: ignore[attr-defined]
            self.container = None


class EtcdCluster:
    """``size`` real etcd members on loopback, each with its own ports and data dir."""

    def __init__(self, root: Path, size: int) -> None:
        self.members = [EtcdMember(f"m{i}", free_port(), free_port(), root / f"m{i}") for i in range(size)]

    @property
    def endpoints(self) -> list[str]:
        return [m.url for m in self.members]

    def start(self) -> EtcdCluster:
        """Start every member and wait until each is healthy; stop them all if one is not.

        A member that exits because another process bound its port between ``free_port()`` and
        etcd's own bind (pytest-xdist's workers and Docker's proxies take ports too) is started
        again, with the whole cluster, on new ports."""

        def on_new_ports(exc: Exception) -> None:
            for member in self.members:
                shutil.rmtree(member.data_dir, ignore_errors=True)
                member.client_port, member.peer_port = free_port(), free_port()

        def lost_a_port(exc: Exception) -> bool:
            return isinstance(exc, MemberExited) and "address already in use" in exc.log

        def start_once() -> None:
            try:
                self._start_once()
            except BaseException:
                self.stop()
                raise

        tried(start_once, tries=PORT_TRIES, again=lost_a_port, between=on_new_ports)
        return self

    def _start_once(self) -> None:
        initial = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in self.members)
        for member in self.members:
            member.start(initial)
        for member in self.members:
            wait_until(
                functools.partial(_healthy_or_exited, member),
                timeout=30,
                interval=0.1,
                message=f"etcd member {member.name} healthy",
                ignore=(httpx.HTTPError, ValueError, KeyError),
            )

    def stop(self) -> None:
        for member in self.members:
            member.kill()

    def wipe(self) -> None:
        """Remove every modematrix key, so a test starts a brand-new cluster on a shared etcd."""
        root = base64.b64encode(b"/modematrix/").decode()
        end = base64.b64encode(b"/modematrix0").decode()
        httpx.post(self.endpoints[0] + "/v3/kv/deleterange", json={"key": root, "range_end": end}).raise_for_status()


@pytest.fixture(scope="session")
def etcd() -> Iterator[EtcdCluster]:
    """One real etcd member for the whole session."""
    with tempfile.TemporaryDirectory(prefix="etcd-") as root:
        cluster = EtcdCluster(Path(root), 1).start()
        yield cluster
        cluster.stop()


@pytest.fixture(scope="session")
def etcd_degraded() -> Iterator[EtcdCluster]:
    """A 3-member cluster whose first member (the endpoint clients try first) is dead."""
    with tempfile.TemporaryDirectory(prefix="etcd3-") as root:
        cluster = EtcdCluster(Path(root), 3).start()
        cluster.members[0].kill()
        survivor = cluster.members[1].url
        wait_until(
            lambda: httpx.get(survivor + "/health", timeout=2).json()["health"] == "true",
            timeout=30,
            interval=0.1,
            message="etcd quorum after killing one member",
        )
        yield cluster
        cluster.stop()


@pytest.fixture
def etcd3(tmp_path: Path) -> Iterator[EtcdCluster]:
    """A fresh 3-member etcd cluster, for tests that kill members."""
    cluster = EtcdCluster(tmp_path, 3).start()
    yield cluster
    cluster.stop()


@dataclass
class RuntimeProcess:
    """``python -m runtime serve`` as a real process, on its own port and data dir."""

    data_dir: Path
    services: str = "all"
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'http' if self.insecure else 'https'}://127.0.0.1:{self.port}"

    @property
    def insecure(self) -> bool:
        return self.env.get("RUNTIME_INSECURE_HTTP", "").lower() in ("1", "true", "yes")

    def _verify(self) -> ssl.SSLContext | bool:
        return False if self.insecure else trust(self.ca_file)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        return self.data_dir / "ca.pem"

    @property
    def log_file(self) -> Path:
        return self.data_dir.with_name(self.data_dir.name + ".log")

    def start(self) -> RuntimeProcess:
        env = {**os.environ, "RUNTIME_LOG_LEVEL": "debug", "RUNTIME_GRPC_PORT": str(self.grpc_port), **self.env}
        with open(self.log_file, "ab") as log:  # the child keeps its own copy
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "runtime",
                    "serve",
                    "--services",
                    self.services,
                    "--data-dir",
                    str(self.data_dir),
                    "--listen",
                    self.address,
                ],
                env=env,
                stdout=log,
                stderr=log,
            )
        return self

    def wait_ready(self, timeout: float = 30) -> RuntimeProcess:
        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"runtime exited {self.process.returncode}: {self.log_tail()}")
            return httpx.get(self.url + "/readyz", verify=self._verify(), timeout=2).status_code == 200

        wait_until(
            ready,
            timeout=timeout,
            interval=0.1,
            message=f"runtime on {self.url} ready",
            ignore=(httpx.HTTPError, OSError),
        )
        return self

    def client(self, token: str | None = None, **kwargs: object) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, verify=self._verify(), headers=headers, timeout=10, **kwargs)  # type: ignore[arg-type]

    def login(self, username: str = "admin", password: str | None = None) -> str:
        password = password or (self.data_dir / "admin-password").read_text().strip()
        with self.client() as c:
            reply = c.post("/v1/auth/login", json={"username": username, "password": password})
        assert reply.status_code == 200, reply.text
        return str(reply.json()["token"])

    def log_tail(self, lines: int = 20) -> str:
        return (
            "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:]) if self.log_file.exists() else ""
        )

    def terminate(self) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[object]:
    """Start runtime processes; every one is killed at the end of the test."""
    started: list[RuntimeProcess] = []

    def make(name: str = "node", **kwargs: object) -> RuntimeProcess:
        proc = RuntimeProcess(tmp_path / name, **kwargs)  # type: ignore[arg-type]
        started.append(proc)
        return proc.start()

    yield make
    for proc in started:
        proc.kill()


def _healthy(url: str) -> bool:
    return bool(httpx.get(url + "/health", timeout=1).json()["health"] == "true")


class MemberExited(Exception):
    """An etcd member's process ended while the cluster was starting."""

    def __init__(self, member: EtcdMember, log: str) -> None:
        super().__init__(f"etcd member {member.name} exited while starting; its log ends:\n{log}")
        self.log = log


def _healthy_or_exited(member: EtcdMember) -> bool:
    if member.process is not None and member.process.poll() is not None:
        log = member.data_dir.with_suffix(".log").read_text(errors="replace")
        raise MemberExited(member, "\n".join(log.splitlines()[-10:]))
    return _healthy(member.url)


@contextmanager
def running(env: dict[str, str] | None = None, *, prefix: str = "rt-") -> Iterator[RuntimeProcess]:
    """A runtime process on its own data dir for as long as the block lasts."""
    with tempfile.TemporaryDirectory(prefix=prefix) as root:
        proc = RuntimeProcess(Path(root) / "node", env=env or {}).start().wait_ready()
        try:
            yield proc
        finally:
            proc.kill()


def cluster_env(etcd: EtcdCluster, secret: str, **extra: str) -> dict[str, str]:
    """The settings of a node of a cluster on ``etcd``."""
    return {
        "RUNTIME_MODE": "cluster",
        "RUNTIME_DB_BACKEND": "etcd",
        "RUNTIME_DB_ENDPOINTS": ",".join(etcd.endpoints),
        "RUNTIME_CLUSTER_SECRET": secret,
        **extra,
    }

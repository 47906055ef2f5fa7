"""The Run protocol: a mode started on a target, as everything above the targets sees it.

Scenarios, load tests, the pytest plugin and the CLI use this and nothing more of a run;
what only one target can do (stop a container, delete a pod) is that target's faults'
business (:mod:`topologies.containers.faults`, :mod:`topologies.kubernetes.faults`).

    with topologies.start("ha") as run:          # a ContainerRun
        with run.client() as api:
            api.put("/v1/kv/x", content=b"1")
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import grpc

from topologies.client import ClusterClient, Credentials
from topologies.exceptions import NotFound, TopologyError
from topologies.runs import Secrets, read_secrets


@dataclass(frozen=True)
class Footprint:
    """One part's resident memory when asked: its processes' anonymous memory as its cgroup
    counts it, without the page cache (``docker stats``' figure less the cache; on
    Kubernetes, the kubelet's ``rssBytes``)."""

    part: str  # a node's or a pod's name
    role: str  # what runs in it: runtime, runtime + etcd member, envoy, haproxy, etcd
    rss_bytes: int


# Envoy's own anonymous memory in its part, in kB (no pgrep in the image: /proc by hand)
_ENVOY_ANON_KB = (
    'for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = envoy ] && '
    'sed -n "s/^RssAnon:[^0-9]*\\([0-9]*\\) kB/\\1/p" $p/status; done; :'
)


def with_envoy_apart(parts: list[Footprint], exec: Callable[[str, Sequence[str]], tuple[int, str]]) -> list[Footprint]:
    """An Envoy part runs two processes, the runtime that supervises it and Envoy: each its own
    row (``envoy-1`` as ``runtime``, ``envoy-1/envoy`` as ``envoy``), so each meets its own budget."""
    found = []
    for part in parts:
        if part.role != "envoy":
            found.append(part)
            continue
        code, out = exec(part.part, ["sh", "-c", _ENVOY_ANON_KB])
        kb = out.split()
        if code != 0 or len(kb) != 1 or not kb[0].isdigit():
            raise TopologyError(f"{part.part}: could not read Envoy's memory: exit {code}, {out.strip()[:200]!r}")
        envoy = int(kb[0]) * 1024
        found += [
            Footprint(part.part, "runtime", part.rss_bytes - envoy),
            Footprint(f"{part.part}/envoy", "envoy", envoy),
        ]
    return found


@runtime_checkable
class Run(Protocol):
    @property
    def run_id(self) -> str: ...
    @property
    def mode(self) -> str: ...
    @property
    def workdir(self) -> Path:
        """The run's folder on the launching machine (its CA, secrets and record)."""

    @property
    def ca_file(self) -> Path: ...
    @property
    def admin(self) -> Credentials: ...
    @property
    def secrets(self) -> Secrets: ...
    @property
    def endpoints(self) -> list[str]:
        """The front door as clients reach it (``https://HOST:PORT``), in the order to try."""

    @property
    def grpc_endpoints(self) -> list[str]:
        """The gRPC front door, ``HOST:PORT`` (TLS with the run's CA)."""

    def client(
        self,
        credentials: Credentials | None = None,
        *,
        timeout: float = 5.0,
        endpoints: Sequence[str] | None = None,
        first: int = 0,
        resend_idempotent: bool = True,
        budget: float | None = None,
    ) -> ClusterClient: ...

    def grpc_channel(self, endpoint: str | None = None) -> grpc.Channel: ...
    def describe(self) -> dict[str, Any]:
        """What ``modematrix up --json`` prints (docs/cli.md has the schema)."""

    def wait_healthy(self, timeout: float = 120.0) -> None:
        """Return when every part is up and the front door answers; raise FaultError if not."""

    def heal_all(self) -> None:
        """Undo every fault this run's target knows of; FaultError lists what could not be."""

    def status(self) -> dict[str, Any]:
        """What ``modematrix status RUN`` shows: its parts and their state (docs/cli.md)."""

    def parts(self) -> list[str]:
        """The names ``logs`` and ``exec`` take: its containers, or its pods."""

    def logs(self, part: str, tail: int = 100) -> str: ...
    def follow(self, part: str, tail: int = 100) -> Iterator[str]:
        """A part's last ``tail`` log lines, then each as it is written."""

    def exec(self, part: str, command: Sequence[str]) -> tuple[int, str]:
        """Run ``command`` in a part: (exit code, output)."""

    def memory(self) -> list[Footprint]:
        """Each running part's resident memory now."""

    def stop(self) -> None:
        """Remove the run: everything it started, and its folder."""

    def __enter__(self) -> Run: ...
    def __exit__(self, *exc: object) -> None: ...


class RunFolder:
    """What a run of every target keeps in its folder and builds from it: its id, the CA file,
    the secrets, the admin's credentials, and clients of its front door (HTTP and gRPC). A
    target's run (:class:`topologies.containers.ContainerRun`,
    :class:`topologies.kubernetes.KubeRun`) adds where its doors are (``endpoints``,
    ``grpc_endpoints``) and everything about its parts."""

    def __init__(self, run_id: str, workdir: Path) -> None:
        self._run_id, self._workdir = run_id, workdir
        self._secrets: Secrets | None = None  # read when asked: a service's run has none

    @property
    def run_id(self) -> str:
        return self._run_id

    @property
    def mode(self) -> str:
        raise NotImplementedError

    @property
    def workdir(self) -> Path:
        return self._workdir

    @property
    def ca_file(self) -> Path:
        return self._workdir / "ca.pem"

    @property
    def secrets(self) -> Secrets:
        if self._secrets is None:
            self._secrets = read_secrets(self._workdir)
        return self._secrets

    @property
    def admin(self) -> Credentials:
        return Credentials("admin", self.secrets.admin_password)

    @property
    def endpoints(self) -> list[str]:
        raise NotImplementedError

    @property
    def grpc_endpoints(self) -> list[str]:
        raise NotImplementedError

    def client(
        self,
        credentials: Credentials | None = None,
        *,
        timeout: float = 5.0,
        endpoints: Sequence[str] | None = None,
        first: int = 0,
        resend_idempotent: bool = True,
        budget: float | None = None,
    ) -> ClusterClient:
        """A client of the front door; ``first`` picks which endpoint it tries first (see
        :class:`ClusterClient` for ``resend_idempotent``)."""
        doors = list(endpoints or self.endpoints)
        if not doors:
            raise NotFound(f"run {self.run_id} ({self.mode}): no address from here reaches its front door")
        return ClusterClient(
            doors,
            self.ca_file,
            credentials or self.admin,
            timeout=timeout,
            first=first,
            resend_idempotent=resend_idempotent,
            budget=budget,
        )

    def grpc_channel(self, endpoint: str | None = None) -> grpc.Channel:
        """A gRPC channel to ``endpoint`` (default: the first of :attr:`grpc_endpoints`),
        TLS verified against the run's CA; stubs: ``runtime.rpc.pb_grpc.KvStub(channel)``."""
        target = endpoint or next(iter(self.grpc_endpoints), None)
        if target is None:
            raise NotFound(f"run {self.run_id} ({self.mode}) has no gRPC endpoint")
        credentials = grpc.ssl_channel_credentials(root_certificates=self.ca_file.read_bytes())
        return grpc.secure_channel(target, credentials)

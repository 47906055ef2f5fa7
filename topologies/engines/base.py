"""The Engine protocol: everything topologies ask of what runs containers.

Docker implements it (:mod:`topologies.engines.docker`, the only module that imports the
Docker SDK or testcontainers), and a recording fake for unit tests
(:mod:`topologies.engines.fake`). Both targets run on an engine: the Docker modes' nodes are
its containers (:mod:`topologies.containers`), and so are the node containers of a Kubernetes
cluster built here (:mod:`topologies.kubernetes.clusters.nodes`). Nothing above this seam
knows which engine it talks to.

A container is described by a :class:`Launch` (what to start) and known afterwards by a
:class:`Handle` (what was started, and how to reach it).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from images.kubernetes import NodeImage

# Container states every engine reports in: what faults and readiness reason about.
RUNNING, PAUSED, EXITED, CREATED, REMOVED = "running", "paused", "exited", "created", "removed"
STOPPED = (EXITED, CREATED, "dead")


@dataclass(frozen=True)
class Launch:
    """What to start: one node (or balancer, or helper) of a run.

    ``publish`` lists container ports that get a fixed loopback port on the host, stable
    across restarts; ``volume`` is a named volume, created with the node's labels and
    mounted at ``volume_path``.
    """

    name: str
    image: str
    labels: Mapping[str, str]
    command: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    network: str | None = None
    hostname: str | None = None
    ip: str | None = None
    publish: tuple[int, ...] = ()
    memory: str | None = None
    cpuset: str | None = None  # pin to these host cores ("0", "0-1"): benchmarks pin servers apart from load
    volume: str | None = None
    volume_path: str = ""
    # bytes: the volume is a file system of this size (tmpfs: it lasts while its container
    # runs, so a restart starts it empty), which a full-disk fault can fill; None: the host's
    volume_size: int | None = None
    # a container that manages containers itself (a Kubernetes node: containerd, kubelet)
    # needs every device and capability, a private /run and /tmp, and files of the run's
    # folder (host path -> container path, read-only)
    privileged: bool = False
    fuse: bool = False  # may mount a FUSE file system: /dev/fuse and CAP_SYS_ADMIN, nothing more
    user: str | None = None  # run as this user instead of the image's ("0": root)
    healthcheck: bool = True  # False: without the image's HEALTHCHECK (the image plays another part)
    cgroupns: str | None = None  # "private": a cgroup namespace of its own (a node on a cgroup v2 host)
    tmpfs: tuple[str, ...] = ()
    binds: Mapping[str, str] = field(default_factory=dict)
    # secrets: container path -> content, written before the node starts, owned by
    # ``files_owner`` with mode 0400; never in the node's settings (``docker inspect``)
    files: Mapping[str, bytes] = field(default_factory=dict)
    files_owner: int = 0


@dataclass(frozen=True)
class Handle:
    """A started container as the engine knows it. ``ports`` maps container port -> host port."""

    id: str
    name: str
    labels: Mapping[str, str]
    ip: str = ""
    ports: Mapping[int, int] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    image: str = ""


@runtime_checkable
class Engine(Protocol):
    """Where containers run. Every method raises only :class:`~topologies.exceptions.TopologyError`."""

    name: str

    def image(self, *, quiet: bool = True) -> str:
        """The runtime image's reference, built or reused."""

    def node_image(self, *, quiet: bool = True) -> NodeImage:
        """The Kubernetes node image (components built from source), built or reused."""

    def cgroup_version(self) -> int:
        """The cgroup hierarchy the engine's containers get: 1 (one per controller) or 2 (unified)."""

    def save_images(self, tags: Sequence[str], folder: Path) -> Path:
        """``tags`` as one image archive in ``folder``, each layer once however many images
        share it (once per set of images: the file is named by their ids), for loading into a
        Kubernetes node's containerd."""

    def registry_image(self, *, quiet: bool = True) -> str:
        """An image that serves a container registry on port 5000 (plain HTTP), built or reused."""

    def push(self, tag: str, registry: str) -> str:
        """Push the local image ``tag`` to ``registry`` (``HOST:PORT``, reachable from this
        machine); the name it has there."""

    def guard(self, image: str) -> None:
        """Make sure what this process starts is removed if the process dies (the reaper)."""

    def create_network(self, name: str, labels: Mapping[str, str]) -> str:
        """Create an isolated network on a free /24; return its prefix (``10.213.7``)."""

    def connect(self, network: str, handle: Handle, ip: str | None = None) -> None: ...
    def disconnect(self, network: str, handle: Handle) -> None: ...
    def launch(self, spec: Launch) -> Handle: ...
    def state(self, handle: Handle) -> str:
        """One of running, paused, exited, created, dead, removed."""

    def exit_reason(self, handle: Handle) -> str:
        """Why a node that is not running stopped, in a few words (exit code, OOM kill)."""

    def memory(self, handle: Handle) -> int:
        """The node's resident memory in bytes: its processes' anonymous memory as its cgroup
        counts it (``rss`` on cgroup v1, ``anon`` on v2), without the page cache."""

    def cpu_seconds(self, handle: Handle) -> float:
        """CPU time the node's processes have used since it started (user and system, as its
        cgroup counts it): read before and after a load, what that load cost the node."""

    def start(self, handle: Handle) -> None: ...
    def stop(self, handle: Handle, timeout: int = 20) -> None: ...
    def kill(self, handle: Handle) -> None: ...
    def restart(self, handle: Handle, timeout: int = 20) -> None: ...
    def pause(self, handle: Handle) -> None: ...
    def unpause(self, handle: Handle) -> None: ...
    def remove(self, handle: Handle) -> None: ...
    def remove_volume(self, name: str) -> None:
        """Remove the named volume (its container removed first); nothing if there is none."""

    def exec(self, handle: Handle, command: Sequence[str], user: str = "") -> tuple[int, str]:
        """Run ``command`` inside the node; (exit code, output)."""

    def netns_exec(self, handle: Handle, script: str, image: str) -> tuple[int, str]:
        """Run a shell script as root with network-admin rights in the node's network
        namespace, without giving the node itself those rights."""

    def logs(self, handle: Handle, tail: int = 30) -> str: ...
    def follow_logs(self, handle: Handle, tail: int = 100) -> Iterator[str]:
        """The last ``tail`` log lines, then each as it is written, until the container stops."""

    def list_run(self, run_id: str | None) -> list[Handle]:
        """Every node of a run (``None``: of every run), by the run label."""

    def remove_run(self, run_id: str | None) -> dict[str, int]:
        """Remove everything labelled with the run; counts of what was removed, by kind."""

    def run_once(
        self,
        image: str,
        args: Sequence[str],
        env: Mapping[str, str],
        labels: Mapping[str, str],
        network: str | None = None,
        files: Mapping[str, bytes] | None = None,
        files_owner: int = 0,
    ) -> tuple[int, str]:
        """Run the image to completion with ``args`` (on ``network`` if given, with ``files``
        as :class:`Launch` has them); (exit code, output)."""

"""The Docker engine: containers started with testcontainers on user networks.

The only module of topologies that imports ``docker`` or ``testcontainers``. Every Docker
exception is translated here into the topology error tree, with what to do about it.
Containers that testcontainers starts carry its session label, so our Ryuk-compatible
reaper (see :meth:`DockerEngine.guard`) removes them if this process dies; networks,
volumes and helpers get the same label from :func:`reaped`.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import socket
import tarfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

import docker
import docker.errors
import requests.exceptions
from docker.models.containers import Container
from docker.types import EndpointConfig, IPAMConfig, IPAMPool, Mount
from testcontainers.core.config import testcontainers_config
from testcontainers.core.container import DockerContainer, Reaper
from testcontainers.core.labels import LABEL_SESSION_ID, SESSION_ID

import images
from images import kubernetes as components
from images import registry
from images.build import ENVOY_SUFFIX
from topologies.constants import LABEL_ROLE, LABEL_RUN
from topologies.engines.base import REMOVED, Handle, Launch
from topologies.exceptions import EngineError, EngineUnavailable, ImageFailed, NotFound, PortInUse
from topologies.wait import tried

PRIVILEGED_RUNTIME = "modematrix-runc"  # images/k8s/host/runc-wrap, registered with dockerd
_NO_PRIVILEGED = (
    "this host cannot give a --privileged container every capability (Docker 20.10 asks for "
    "CAP_SYS_RESOURCE, which the host lacks): register the runc wrapper with dockerd as "
    f"{PRIVILEGED_RUNTIME!r} (`sudo images/k8s/host/install-runc-wrap`, which .ci/run does)"
)
_NO_DAEMON = "no Docker daemon answers ({}); start it (`sudo dockerd &`, or `bash .ci/run` does) or set DOCKER_HOST"


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Turn Docker's exceptions into topology errors that say what failed and what to do."""
    try:
        yield
    except docker.errors.NotFound as exc:
        raise NotFound(f"{what}: {_explain(exc)}") from exc
    except docker.errors.APIError as exc:
        text = _explain(exc)
        if "port is already allocated" in text or "address already in use" in text:
            raise PortInUse(f"{what}: a host port is already in use ({text}); free it or retry") from exc
        raise EngineError(f"{what}: Docker refused: {text}") from exc
    except (requests.exceptions.ConnectionError, docker.errors.DockerException) as exc:
        raise EngineUnavailable(_NO_DAEMON.format(f"{what}: {exc}")) from exc
    except images.ImageError as exc:
        raise ImageFailed(f"{what}: {exc}") from exc


def _explain(exc: docker.errors.APIError) -> str:
    return str(exc.explanation or exc).strip()


HOLDER_ROLE = "holder"  # keeps a node's sized data volume mounted (Docker._hold)
LABEL_VOLUME = "modematrix.volume"


def reaped(labels: Mapping[str, str]) -> dict[str, str]:
    """Labels plus testcontainers' session label, for what testcontainers does not create."""
    return {**labels, LABEL_SESSION_ID: SESSION_ID}


def secret_files(files: Mapping[str, bytes], owner: int) -> bytes:
    """A tar of ``files`` (absolute paths) and their folders, owned by ``owner``: files 0400,
    folders 0500, for ``put_archive`` into a container before it starts.

    >>> import io, tarfile
    >>> made = tarfile.open(fileobj=io.BytesIO(secret_files({"/run/s/a": b"x"}, 10001)))
    >>> [(m.name, oct(m.mode), m.uid) for m in made.getmembers()]
    [('run/s', '0o500', 10001), ('run/s/a', '0o400', 10001)]
    """
    buffer = io.BytesIO()
    folders = sorted({str(PurePosixPath(path).parent).lstrip("/") for path in files})
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for folder in folders:
            info = tarfile.TarInfo(folder)
            info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, 0o500, owner, owner
            tar.addfile(info)
        for path, data in sorted(files.items()):
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode, info.uid, info.gid = len(data), 0o400, owner, owner
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class _Node(DockerContainer):
    """testcontainers' container, plus secret files put in place between create and start."""

    def __init__(self, image: str, files: Mapping[str, bytes], owner: int) -> None:
        super().__init__(image)
        self._secrets, self._owner = files, owner
        if files:
            self.with_copy_into_container(b"", "/.modematrix-secrets")  # a marker: start() transfers

    def _transfer_into_container(self, transferable: bytes | Path, destination: str, mode: int) -> None:
        if destination == "/.modematrix-secrets":
            created = self._container
            if created is None or not created.put_archive(path="/", data=secret_files(self._secrets, self._owner)):
                raise EngineError("could not write the node's secret files")
            return
        super()._transfer_into_container(transferable, destination, mode)


FREEZE_TRIES = 5
PORT_TRIES = 5  # a node's start, on other free host ports each time (DockerEngine.launch)


def frozen_again(pause: Callable[[], None], tries: int = FREEZE_TRIES, wait: float = 0.2) -> None:
    """``pause``, tried again while runc's cgroup v1 freezer gives up ("unable to freeze": a
    task in uninterruptible sleep, such as an fsync under load, did not stop in runc's time;
    CI, 2026-12-07). Any other refusal, or the last one, is raised.

    >>> calls = []
    >>> def pause() -> None:
    ...     calls.append(1)
    ...     if len(calls) < 3:
    ...         raise EngineError("pause x: Docker refused: OCI runtime pause failed: unable to freeze: unknown")
    >>> frozen_again(pause, wait=0)
    >>> len(calls)
    3
    >>> def gone() -> None:
    ...     raise EngineError("pause x: Docker refused: No such container: x")
    >>> frozen_again(gone, wait=0)
    Traceback (most recent call last):
    topologies.exceptions.EngineError: pause x: Docker refused: No such container: x
    """
    tried(pause, tries=tries, again=lambda exc: "unable to freeze" in str(exc), between=lambda exc: time.sleep(wait))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# a container's CPU time in its cgroup, where the daemon puts it (cgroupfs or systemd driver,
# cgroup v1 in nanoseconds or v2 in microseconds), and the unit's count in a second
CGROUP_CPU_FILES = (
    ("/sys/fs/cgroup/cpuacct/docker/{id}/cpuacct.usage", 1e9),
    ("/sys/fs/cgroup/cpu,cpuacct/docker/{id}/cpuacct.usage", 1e9),
    ("/sys/fs/cgroup/cpuacct/system.slice/docker-{id}.scope/cpuacct.usage", 1e9),
    ("/sys/fs/cgroup/docker/{id}/cpu.stat", 1e6),
    ("/sys/fs/cgroup/system.slice/docker-{id}.scope/cpu.stat", 1e6),
)
KEEP_ARCHIVES = 3  # image sets whose archives stay in the saved-images folder (about 0.35 GB each)


def _prune_archives(folder: Path) -> None:
    """All but the :data:`KEEP_ARCHIVES` archives used last, and leftovers of saves that died."""
    archives = sorted(folder.glob("*.tar"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in archives[KEEP_ARCHIVES:]:
        old.unlink(missing_ok=True)
    for stale in folder.glob(".*.partial"):
        if time.time() - stale.stat().st_mtime > 3600:  # a save takes seconds: this one's writer is gone
            stale.unlink(missing_ok=True)


class DockerEngine:
    name = "docker"

    def __init__(self, *, reaper: bool = True, client: docker.DockerClient | None = None) -> None:
        with translated("connecting to Docker"):
            self.client = client or docker.from_env(timeout=600)
            self.client.ping()
        self.reaper = reaper
        if not reaper:  # testcontainers is steered through its public config object
            testcontainers_config.ryuk_disabled = True

    # -- image and reaper ---------------------------------------------------------------------

    def image(self, *, quiet: bool = True) -> str:
        with translated("building the runtime image"):
            return images.build(quiet=quiet, client=self.client).tag

    def node_image(self, *, quiet: bool = True) -> components.NodeImage:
        with translated("building the Kubernetes node image"):
            return components.node_image(client=self.client, quiet=quiet)

    def cgroup_version(self) -> int:
        with translated("asking Docker for its cgroup version"):
            return 2 if str(self.client.info().get("CgroupVersion", "1")) == "2" else 1

    def registry_image(self, *, quiet: bool = True) -> str:
        with translated("building the registry image"):
            return registry.build(quiet=quiet, client=self.client)

    def push(self, tag: str, to: str) -> str:
        repository, _, version = tag.rpartition(":")
        target = f"{to}/{repository}"
        with translated(f"pushing {tag} to {to}"):
            self.client.images.get(tag).tag(target, tag=version)
            try:
                for line in self.client.images.push(target, tag=version, stream=True, decode=True):
                    if "error" in line:
                        raise EngineError(f"pushing {tag} to {to}: {line['error']}")
            finally:  # the name was only the way to push: a registry on a port of its run's, gone with it
                self.client.images.remove(f"{target}:{version}", noprune=True)
        return f"{target}:{version}"

    def save_images(self, tags: Sequence[str], folder: Path) -> Path:
        """``docker save TAG...``: Docker's API takes several names, the SDK's ``save`` one.
        Written under a name of this process's and renamed, so two processes saving the same
        set never mix their bytes; the archives of the :data:`KEEP_ARCHIVES` image sets used
        last stay (another process's cluster may be importing one, or heal from it), older
        ones are removed."""
        with translated(f"saving {', '.join(tags)}"):
            ids = [self.client.images.get(tag).id.split(":")[-1][:12] for tag in tags]
            archive = folder / f"{'-'.join(ids)}.tar"
            if archive.exists():
                archive.touch()  # used now: the last to go
            else:
                api = self.client.api
                url = f"{api.base_url}/v{api.api_version}/images/get"
                partial = folder / f".{archive.stem}.{os.getpid()}-{threading.get_ident()}.partial"
                try:
                    with api.get(url, params={"names": list(tags)}, stream=True) as reply, partial.open("wb") as out:
                        reply.raise_for_status()
                        for chunk in reply.iter_content(1 << 20):
                            out.write(chunk)
                    partial.rename(archive)
                finally:
                    partial.unlink(missing_ok=True)
            _prune_archives(folder)
            return archive

    def guard(self, image: str) -> None:
        if not self.reaper:
            return
        with translated("starting the reaper"):
            testcontainers_config.ryuk_image = images.build_reaper(image, quiet=True, client=self.client)
            testcontainers_config.ryuk_disabled = False
            Reaper.get_instance()

    # -- networks -------------------------------------------------------------------------------

    def create_network(self, name: str, labels: Mapping[str, str]) -> str:
        """A bridge network on a free /24 of 10.213-10.252.x.0, tried at random."""
        for _ in range(20):
            prefix = f"10.{random.randint(213, 252)}.{random.randint(0, 255)}"
            pool = IPAMPool(subnet=f"{prefix}.0/24", gateway=f"{prefix}.1")
            try:
                self.client.networks.create(
                    name, driver="bridge", labels=reaped(labels), ipam=IPAMConfig(pool_configs=[pool])
                )
                return prefix
            except docker.errors.APIError as exc:
                if "overlap" not in _explain(exc).lower():
                    raise EngineError(f"creating network {name}: Docker refused: {_explain(exc)}") from exc
        raise EngineError(f"creating network {name}: no free /24 in 10.213-252.x after 20 tries")

    def connect(self, network: str, handle: Handle, ip: str | None = None) -> None:
        with translated(f"connecting {handle.name} to {network}"):
            self.client.networks.get(network).connect(handle.id, ipv4_address=ip)

    def disconnect(self, network: str, handle: Handle) -> None:
        with translated(f"disconnecting {handle.name} from {network}"):
            self.client.networks.get(network).disconnect(handle.id, force=True)

    # -- nodes ----------------------------------------------------------------------------------

    def launch(self, spec: Launch) -> Handle:
        """Start ``spec``'s container. Its host ports are free ports looked up here (a restarted
        node keeps its address), so another process may bind one first: the container is then
        removed and started again on other ports, up to PORT_TRIES times (CI, 2026-12-07:
        pytest-xdist's two workers started nodes at once)."""

        def start() -> Handle:
            try:
                with translated(f"starting {spec.name}"):
                    self._present(spec.image)
                    container = self._container(spec)
                    container.start()
                    return self._handle(container.get_wrapped_container())
            except EngineError as exc:
                if spec.privileged and "unable to apply caps" in str(exc):
                    raise EngineError(f"{exc}; {_NO_PRIVILEGED}") from exc
                raise

        def removed(exc: Exception) -> None:
            with translated(f"removing {spec.name} to start it on other ports"):
                _quietly(lambda: self.client.containers.get(spec.name).remove(force=True))

        return tried(start, tries=PORT_TRIES, again=lambda exc: isinstance(exc, PortInUse), between=removed)

    def _present(self, image: str) -> None:
        """The image, here or pulled; if neither, an error that names it (Docker's own is
        the registry's DNS lookup, which does not)."""
        try:
            self.client.images.get(image)
            return
        except docker.errors.ImageNotFound:
            pass
        try:
            self.client.images.pull(image)
        except docker.errors.APIError as exc:
            hint = "; a runtime image's envoy image is built beside it (`modematrix images build`)"
            raise NotFound(
                f"image {image} is not on this machine and could not be pulled ({_explain(exc)})"
                + (hint if image.endswith(ENVOY_SUFFIX) else "")
            ) from exc

    def _container(self, spec: Launch) -> DockerContainer:
        kwargs: dict[str, Any] = {"labels": dict(spec.labels)}
        if spec.entrypoint is not None:
            kwargs["entrypoint"] = list(spec.entrypoint)
        if spec.memory:
            kwargs["mem_limit"] = spec.memory
        if spec.cpuset:
            kwargs["cpuset_cpus"] = spec.cpuset
        if spec.network:
            endpoint = EndpointConfig("1.41", aliases=[spec.hostname or spec.name], ipv4_address=spec.ip)
            kwargs.update(network=spec.network, networking_config={spec.network: endpoint})
        if spec.hostname:
            kwargs["hostname"] = spec.hostname
        mounts = [Mount(target, source, type="bind", read_only=True) for source, target in spec.binds.items()]
        if spec.volume:
            options = {}
            if spec.volume_size is not None:  # the local driver mounts a tmpfs of that size
                owner = f"uid={spec.files_owner},gid={spec.files_owner},mode=0700"
                options = {"type": "tmpfs", "device": "tmpfs", "o": f"size={spec.volume_size},{owner}"}
            self.client.volumes.create(spec.volume, driver="local", driver_opts=options, labels=reaped(spec.labels))
            if spec.volume_size is not None:
                self._hold(spec, spec.volume)
            mounts.append(Mount(spec.volume_path, spec.volume, type="volume"))
        if mounts:
            kwargs["mounts"] = mounts
        if spec.cgroupns:
            kwargs["cgroupns"] = spec.cgroupns
        if spec.user is not None:
            kwargs["user"] = spec.user
        if not spec.healthcheck:
            kwargs["healthcheck"] = {"test": ["NONE"]}
        if spec.fuse:
            kwargs.update(devices=["/dev/fuse:/dev/fuse:rwm"], cap_add=["SYS_ADMIN"])
        if spec.privileged:
            kwargs["privileged"] = True
            if PRIVILEGED_RUNTIME in (self.client.info().get("Runtimes") or {}):
                kwargs["runtime"] = PRIVILEGED_RUNTIME
        container = _Node(spec.image, spec.files, spec.files_owner).with_name(spec.name).with_kwargs(**kwargs)
        if spec.command:
            container.with_command(list(spec.command))
        for path in spec.tmpfs:
            container.with_tmpfs_mount(path)
        for key, value in spec.env.items():
            container.with_env(key, value)
        bindings: dict[str, Any] = {f"{port}/tcp": ("127.0.0.1", _free_port()) for port in spec.publish}
        container.ports = bindings  # the Docker SDK takes (host ip, host port): loopback only
        return container

    def _hold(self, spec: Launch, volume: str) -> None:
        """Keep a sized volume mounted while its node stops and starts: Docker's local driver
        unmounts a tmpfs volume, and so empties it, when the last container using it stops, so
        a node's data would not survive its own restart. A holder container of the same run
        (``<node>-data``, role "holder", no network, ``sleep infinity``) mounts it for as long
        as the volume lives; :meth:`remove_volume` removes it first."""
        labels = reaped({**spec.labels, LABEL_ROLE: HOLDER_ROLE, LABEL_VOLUME: volume})
        with translated(f"holding volume {volume}"):
            for holder in self.client.containers.list(all=True, filters={"label": f"{LABEL_VOLUME}={volume}"}):
                if holder.status != "running":  # stopped by hand, or by a restart of Docker
                    holder.start()
                return
            self.client.containers.run(
                spec.image,
                name=f"{spec.name}-data",
                entrypoint=["sleep", "infinity"],
                user=str(spec.files_owner),
                network_mode="none",
                mem_limit="16m",
                cpuset_cpus=spec.cpuset or None,
                mounts=[Mount("/data", volume, type="volume")],
                healthcheck={"test": ["NONE"]},
                labels=labels,
                detach=True,
            )

    def _get(self, handle: Handle) -> Container:
        with translated(f"finding {handle.name}"):
            return self.client.containers.get(handle.id)

    def _act(self, handle: Handle, action: str, **kwargs: Any) -> None:
        container = self._get(handle)
        with translated(f"{action} {handle.name}"):
            getattr(container, action)(**kwargs)

    def state(self, handle: Handle) -> str:
        try:
            return str(self._get(handle).status)
        except NotFound:
            return REMOVED

    def exit_reason(self, handle: Handle) -> str:
        try:
            state = self._get(handle).attrs.get("State", {})
        except NotFound:
            return REMOVED
        reason = f"{state.get('Status', '?')}, exit code {state.get('ExitCode', '?')}"
        return reason + (", killed by the kernel's OOM killer (memory limit)" if state.get("OOMKilled") else "")

    def memory(self, handle: Handle) -> int:
        container = self._get(handle)
        with translated(f"reading {handle.name}'s memory"):
            stats = container.stats(stream=False, one_shot=True)
        counted = stats.get("memory_stats", {}).get("stats", {})
        for key in ("total_rss", "rss", "anon"):  # cgroup v1 (with children, then without), v2
            if key in counted:
                return int(counted[key])
        raise EngineError(f"{handle.name}: the engine reports no rss or anon figure ({', '.join(sorted(counted))})")

    def cpu_seconds(self, handle: Handle) -> float:
        """From the container's cgroup when the daemon is this machine's (a file read; Docker's
        stats call took 1 s each here), else from Docker's stats."""
        for pattern, scale in CGROUP_CPU_FILES:
            path = Path(pattern.format(id=handle.id))
            try:
                text = path.read_text()
            except OSError:
                continue
            if path.name == "cpu.stat":  # v2: "usage_usec N" among other lines
                text = next((line.split()[1] for line in text.splitlines() if line.startswith("usage_usec ")), "")
            with contextlib.suppress(ValueError):
                return int(text) / scale
        container = self._get(handle)
        with translated(f"reading {handle.name}'s CPU time"):
            stats = container.stats(stream=False, one_shot=True)
        used = stats.get("cpu_stats", {}).get("cpu_usage", {}).get("total_usage")
        if used is None:
            raise EngineError(f"{handle.name}: the engine reports no CPU usage (is it running?)")
        return int(used) / 1e9

    def start(self, handle: Handle) -> None:
        self._act(handle, "start")

    def stop(self, handle: Handle, timeout: int = 20) -> None:
        self._act(handle, "stop", timeout=timeout)

    def kill(self, handle: Handle) -> None:
        self._act(handle, "kill", signal="SIGKILL")

    def restart(self, handle: Handle, timeout: int = 20) -> None:
        self._act(handle, "restart", timeout=timeout)

    def pause(self, handle: Handle) -> None:
        frozen_again(lambda: self._act(handle, "pause"))

    def unpause(self, handle: Handle) -> None:
        self._act(handle, "unpause")

    def remove(self, handle: Handle) -> None:
        self._act(handle, "remove", force=True, v=True)

    def remove_volume(self, name: str) -> None:
        with translated(f"removing volume {name}"):
            for holder in self.client.containers.list(all=True, filters={"label": f"{LABEL_VOLUME}={name}"}):
                _quietly(lambda c=holder: c.remove(force=True))
            try:
                self.client.volumes.get(name).remove(force=True)
            except docker.errors.NotFound:
                pass

    def exec(self, handle: Handle, command: Sequence[str], user: str = "") -> tuple[int, str]:
        container = self._get(handle)
        with translated(f"exec in {handle.name}"):
            result = container.exec_run(list(command), user=user)
        return int(result.exit_code), result.output.decode(errors="replace")

    def netns_exec(self, handle: Handle, script: str, image: str) -> tuple[int, str]:
        """A helper container of ``image`` with NET_ADMIN in the node's network namespace."""
        labels = reaped({**handle.labels, LABEL_ROLE: "helper"})
        with translated(f"network helper for {handle.name}"):
            helper = self.client.containers.run(
                image,
                entrypoint=["sh", "-c", script],
                network_mode=f"container:{handle.id}",
                cap_add=["NET_ADMIN"],
                user="root",
                detach=True,
                labels=labels,
            )
            try:
                code = int(helper.wait(timeout=60)["StatusCode"])
                return code, helper.logs().decode(errors="replace")
            finally:
                helper.remove(force=True)

    def logs(self, handle: Handle, tail: int = 30) -> str:
        try:
            container = self._get(handle)
            with translated(f"logs of {handle.name}"):
                return str(container.logs(tail=tail).decode(errors="replace"))
        except EngineError as exc:
            return f"(no logs: {exc})"
        except NotFound:
            return f"(no logs: {handle.name} is gone)"

    def follow_logs(self, handle: Handle, tail: int = 100) -> Iterator[str]:
        container = self._get(handle)
        with translated(f"logs of {handle.name}"):
            for chunk in container.logs(stream=True, follow=True, tail=tail):
                yield chunk.decode(errors="replace")

    # -- runs -------------------------------------------------------------------------------------

    def list_run(self, run_id: str | None) -> list[Handle]:
        with translated("listing runs"):
            found = self.client.containers.list(all=True, filters=_selector(run_id), ignore_removed=True)
            return [self._handle(c) for c in found if c.labels.get(LABEL_ROLE) not in ("helper", HOLDER_ROLE)]

    def remove_run(self, run_id: str | None) -> dict[str, int]:
        selector = _selector(run_id)
        removed = {"containers": 0, "networks": 0, "volumes": 0}
        with translated(f"removing run {run_id or '(all)'}"):
            for container in self.client.containers.list(all=True, filters=selector, ignore_removed=True):
                removed["containers"] += _quietly(lambda c=container: c.remove(force=True, v=True))
            for network in self.client.networks.list(filters=selector):
                removed["networks"] += _quietly(network.remove)
            for volume in self.client.volumes.list(filters=selector):
                removed["volumes"] += _quietly(lambda v=volume: v.remove(force=True))
        return removed

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
        with translated(f"running {image} once"):
            container = self.client.containers.create(
                image, list(args), labels=reaped(labels), environment=dict(env), network=network
            )
            if files:
                container.put_archive("/", secret_files(files, files_owner))
            container.start()
            try:
                code = int(container.wait(timeout=120)["StatusCode"])
                return code, container.logs().decode(errors="replace")
            finally:
                container.remove(force=True)

    def _handle(self, container: Container) -> Handle:
        attrs = container.attrs
        networks = attrs["NetworkSettings"]["Networks"] or {}
        endpoint: dict[str, Any] = next(iter(networks.values()), {})
        ip = (endpoint.get("IPAMConfig") or {}).get("IPv4Address") or endpoint.get("IPAddress") or ""
        bindings = attrs["HostConfig"].get("PortBindings") or {}
        ports = {int(key.split("/")[0]): int(value[0]["HostPort"]) for key, value in bindings.items() if value}
        env = dict(item.split("=", 1) for item in attrs["Config"].get("Env") or [] if "=" in item)
        image = (container.image.tags or [container.image.id])[0] if container.image else ""
        return Handle(container.id, container.name, dict(container.labels), ip, ports, env, image)


def _selector(run_id: str | None) -> dict[str, str]:
    return {"label": f"{LABEL_RUN}={run_id}" if run_id else LABEL_RUN}


def _quietly(remove: Any) -> int:
    """1 if removed, 0 if it was already gone (another cleaner got there first)."""
    try:
        remove()
    except docker.errors.NotFound:
        return 0
    return 1


__all__ = ["DockerEngine", "reaped", "translated"]

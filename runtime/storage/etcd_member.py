"""Host one etcd member beside the runtime, when the node's config says so.

The runtime is the container's one entry point; a node that hosts a DB member starts
etcd as its child, stops it on exit, and exits itself if the member dies.
"""

from __future__ import annotations

import asyncio
import shutil

from runtime.config import Config

CLIENT_PORT, PEER_PORT = 2379, 2380


def member_argv(config: Config, etcd: str = "etcd") -> list[str]:
    """The etcd command line for this node's member (pure)."""
    host = config.db_member_host
    return [
        etcd,
        "--name",
        str(config.db_member_name),
        "--data-dir",
        str(config.data_dir / "etcd"),
        "--listen-peer-urls",
        f"http://0.0.0.0:{PEER_PORT}",
        "--listen-client-urls",
        f"http://0.0.0.0:{CLIENT_PORT}",
        "--advertise-client-urls",
        f"http://{host}:{CLIENT_PORT}",
        "--initial-advertise-peer-urls",
        f"http://{host}:{PEER_PORT}",
        "--initial-cluster",
        str(config.db_initial_cluster),
        "--initial-cluster-state",
        "new",
        "--initial-cluster-token",
        "modematrix",
        "--heartbeat-interval",
        str(config.db_heartbeat_ms),
        "--election-timeout",
        str(config.db_election_timeout_ms),
        "--logger",
        "zap",
        "--log-outputs",
        "stderr",
        "--log-level",
        "warn",
    ]


async def start_member(config: Config) -> asyncio.subprocess.Process:
    etcd = shutil.which("etcd")
    if etcd is None:
        raise FileNotFoundError("db_member_name is set but no 'etcd' binary is on PATH (Debian: etcd-server)")
    (config.data_dir / "etcd").mkdir(parents=True, exist_ok=True, mode=0o700)
    return await asyncio.create_subprocess_exec(*member_argv(config, etcd))


async def stop_member(process: asyncio.subprocess.Process, timeout: float = 5.0) -> None:
    if process.returncode is not None:
        return
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()

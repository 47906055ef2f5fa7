"""Host one etcd member beside the runtime, when the node's config says so.

The runtime is the container's one entry point; a node that hosts a DB member starts
etcd as its child, starts it again if it exits (``children.supervise``), and stops it on exit.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import PurePath

from runtime import children
from runtime.config import Config
from runtime.security.certs import PEER_NAME

CLIENT_PORT, PEER_PORT = 2379, 2380


def member_argv(config: Config, etcd: str = "etcd") -> list[str]:
    """The etcd command line for this node's member (pure).

    With TLS (``https://`` endpoints), both ports take only the cluster CA's certificates:
    2379 requires a client certificate (its common name is the DB user), 2380 requires the
    members' peer certificate by its common name, so a node's own certificate is no peer.
    etcd reads the certificate files on every handshake: renewal needs no restart.
    """
    host = config.db_member_host
    scheme = "https" if config.db_tls else "http"
    return [
        etcd,
        "--name",
        str(config.db_member_name),
        "--data-dir",
        str(config.data_dir / "etcd"),
        "--listen-peer-urls",
        f"{scheme}://0.0.0.0:{PEER_PORT}",
        "--listen-client-urls",
        f"{scheme}://0.0.0.0:{CLIENT_PORT}",
        "--advertise-client-urls",
        f"{scheme}://{host}:{CLIENT_PORT}",
        "--initial-advertise-peer-urls",
        f"{scheme}://{host}:{PEER_PORT}",
        "--initial-cluster",
        str(config.db_initial_cluster),
        "--initial-cluster-state",
        config.db_initial_cluster_state,
        "--initial-cluster-token",
        "modematrix",
        "--heartbeat-interval",
        str(config.db_heartbeat_ms),
        "--election-timeout",
        str(config.db_election_timeout_ms),
        # bounded memory: etcd keeps up to --snapshot-count raft entries in memory (100,000
        # by default in 3.4), and every revision until compaction. A scaled soak's member node
        # (192 MB) was OOM-killed after ~100k operations with the defaults, and again with
        # compaction alone; keep 10,000 of each. Nothing here reads old revisions.
        "--snapshot-count",
        "10000",
        "--auto-compaction-mode",
        "revision",
        "--auto-compaction-retention",
        "10000",
        "--logger",
        "zap",
        "--log-outputs",
        "stderr",
        "--log-level",
        "warn",
        *(tls_flags(config.data_dir / "tls") if config.db_tls else []),
    ]


def tls_flags(directory: PurePath) -> list[str]:
    """etcd's TLS flags for the files in ``directory`` (this machine's, or a pod's: the k8s manifests)."""
    return [
        "--client-cert-auth",
        f"--trusted-ca-file={directory / 'ca.pem'}",
        f"--cert-file={directory / 'node.pem'}",
        f"--key-file={directory / 'node-key.pem'}",
        "--peer-client-cert-auth",
        f"--peer-trusted-ca-file={directory / 'ca.pem'}",
        f"--peer-cert-file={directory / 'peer.pem'}",
        f"--peer-key-file={directory / 'peer-key.pem'}",
        f"--peer-cert-allowed-cn={PEER_NAME}",
    ]


async def start_member(config: Config) -> asyncio.subprocess.Process:
    etcd = shutil.which("etcd")
    if etcd is None:
        raise FileNotFoundError("db_member_name is set but no 'etcd' binary is on PATH (Debian: etcd-server)")
    (config.data_dir / "etcd").mkdir(parents=True, exist_ok=True, mode=0o700)
    return await asyncio.create_subprocess_exec(*member_argv(config, etcd), env=children.environment())

"""Names the whole project agrees on, defined once: services, ports, paths, labels (the
modes are listed by :func:`topologies.targets.modes`).

The service names come from the runtime itself, so a mode file, a peer list and the image
can never disagree about them.
"""

from __future__ import annotations

from runtime.names import ROLES, ROUTED_SERVICES, SERVICES

API_PORT, DB_CLIENT_PORT, DB_PEER_PORT = 8443, 2379, 2380
PROXY_PORT = 8444  # edge nodes behind a balancer: PROXY protocol v2, then TLS
GRPC_PORT = 8445  # kv and queue over gRPC (the runtime's default grpc_port); HAProxy's gRPC frontend
XDS_PORT = 18000  # the xds node's ADS server
ENVOY_RUNTIME_PORT = 9443  # on envoy nodes the runtime steps aside: Envoy listens on API_PORT
LB_KINDS = ("haproxy", "envoy")
DATA_DIR = "/var/lib/modematrix/data"
# a node's wall-clock skew in seconds (+0, +300, -120): the runtime's clock failpoint (runtime/clock.py)
CLOCK_FILE = "/var/lib/modematrix/clock"
# what the full-disk fault fills a node's (size-limited) data dir with; removing it heals
BALLAST_FILE = f"{DATA_DIR}/.modematrix-ballast"
# a lazy node (up --lazy-fs): its volume holds data/ and lazyfs's journal; DATA_DIR is the FUSE mount
LAZY_VOLUME_DIR = "/var/lib/modematrix/lazy"
LAZYFS_BIN = "/usr/local/bin/lazyfs"  # bound in from the host's build (images/lazyfs)
SECRETS_DIR = "/run/modematrix/secrets"  # a node's secrets, as files of the image's user (mode 0400)
RUNTIME_UID = 10001  # the image's user (images/Dockerfile)

LABEL_RUN = "modematrix.run"
LABEL_MODE = "modematrix.mode"
LABEL_NODE = "modematrix.node"
LABEL_ROLE = "modematrix.role"
LABEL_SERVICES = "modematrix.services"
LABEL_DB_MEMBER = "modematrix.db_member"
# bytes: the node's data dir is a file system of this size (a run started with a data size)
LABEL_DATA_SIZE = "modematrix.data_size"
# "true": the node's data dir is on lazyfs, which loses unsynced writes when the node is killed
LABEL_LAZY_FS = "modematrix.lazy_fs"

__all__ = [
    "API_PORT",
    "BALLAST_FILE",
    "DATA_DIR",
    "DB_CLIENT_PORT",
    "DB_PEER_PORT",
    "GRPC_PORT",
    "LABEL_DATA_SIZE",
    "LABEL_DB_MEMBER",
    "LABEL_LAZY_FS",
    "LABEL_MODE",
    "LABEL_NODE",
    "LABEL_ROLE",
    "LABEL_RUN",
    "LABEL_SERVICES",
    "ROLES",
    "ROUTED_SERVICES",
    "SERVICES",
]

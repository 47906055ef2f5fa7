"""Where the users go: an existing cluster (``--host``, ``--cluster-json``) or one this run
starts and removes. The resolved target is written back into the run's parsed options
(``host``, ``ca_file``, ``admin_password``, ``endpoints``, ``load_mode``), which every user can read."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import topologies
from topologies import Run

log = logging.getLogger("modematrix.load")


@dataclass(frozen=True)
class Target:
    endpoints: tuple[str, ...]
    grpc_endpoints: tuple[str, ...]
    ca_file: str
    password: str
    run: Run | None  # set when this load run started it, or attached to it for --fault
    owned: bool


def resolve(mode: str, options: Any) -> Target:
    """From the options: an existing cluster, or a new one of ``mode``."""
    described: dict[str, Any] = json.loads(Path(options.cluster_json).read_text()) if options.cluster_json else {}
    if not options.host and not described:
        log.info("no --host: starting the %s mode", mode)
        started = topologies.start(mode)
        return Target(
            tuple(started.endpoints),
            tuple(started.grpc_endpoints),
            str(started.ca_file),
            started.admin.password,
            started,
            True,
        )
    endpoints = (options.host,) if options.host else tuple(described["endpoints"])
    given = [t.strip() for t in getattr(options, "grpc_target", "").split(",") if t.strip()]
    grpc_endpoints = tuple(given or described.get("grpc_endpoints", []))
    ca_file = options.ca_file or described.get("ca_file", "")
    password = options.admin_password or described.get("admin", {}).get("password", "")
    if not ca_file or not password:
        raise SystemExit("modematrix: with --host, give --cluster-json, or --ca-file and --admin-password")
    attached = topologies.attach(described["run_id"]) if described and options.fault else None
    return Target(endpoints, grpc_endpoints, ca_file, password, attached, False)


def publish(mode: str, target: Target, options: Any) -> None:
    """Hand the target to the users through the run's options."""
    options.host, options.ca_file, options.admin_password = target.endpoints[0], target.ca_file, target.password
    options.endpoints, options.load_mode = list(target.endpoints), mode
    options.grpc_endpoints = list(target.grpc_endpoints)

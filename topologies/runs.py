"""What every run makes first, whatever its target: an id, a folder on the launching machine,
its secrets, and the record of how it was started.

    run_id = new_run_id()                       # "r-1a2b3c4d"
    folder = run_dir(run_id)                    # ~/.cache/modematrix/runs/r-1a2b3c4d, 0700
    secrets = Secrets.generate()
    RunRecord(run_id, "ha", "containers", spec=mode.to_dict()).write(folder, secrets)
    RunRecord.read(folder)                      # what `modematrix status/scale/fault` attach to

The record is how a later process knows the run: the mode it was started with, its target,
and whatever that target needs to reach it again (a kubeconfig, a namespace): never guessed
back from labels. The secrets stay on this machine (mode 0600), as the run's CA key does.
"""

from __future__ import annotations

import json
import secrets as random
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import images
from runtime.files import private_dir, write_atomic
from topologies.constants import SECRETS_DIR
from topologies.exceptions import NotFound, UsageError

RECORD_FILE, SECRETS_FILE = "run.json", "secrets.json"


@dataclass(frozen=True)
class Secrets:
    """The run's shared secrets: the cluster secret (seals the signing keys) and the first
    admin's password."""

    cluster_secret: str
    admin_password: str

    @classmethod
    def generate(cls) -> Secrets:
        return cls(random.token_urlsafe(32), random.token_urlsafe(16))


SECRET_FILES = {  # setting -> file name under SECRETS_DIR
    "tls_bundle": "tls-bundle.json",
    "cluster_secret": "cluster-secret",
    "admin_password": "admin-password",
}


def secret_settings(paths: Iterable[str]) -> dict[str, str]:
    """``RUNTIME_<SETTING>_FILE`` for each secret file a node is given: paths, never values."""
    by_file = {f"{SECRETS_DIR}/{file}": name for name, file in SECRET_FILES.items()}
    return {f"RUNTIME_{by_file[path].upper()}_FILE": path for path in paths}


def new_run_id() -> str:
    """``r-`` and 8 hex digits: a valid container, network and Kubernetes namespace name.

    >>> len(new_run_id()), new_run_id()[:2]
    (10, 'r-')
    """
    return f"r-{uuid.uuid4().hex[:8]}"


def runs_root() -> Path:
    return images.cache_dir() / "runs"


def run_dir(run_id: str) -> Path:
    """Where a run keeps its CA, secrets and record (0700): outlives the process that started it."""
    path = runs_root() / run_id
    private_dir(path)
    return path


@dataclass(frozen=True)
class RunRecord:
    """How a run was started. ``target`` is ``containers`` or ``kubernetes``; ``spec`` the
    mode's layout as data (a mode file of the user's is recorded whole); ``details`` what the
    target needs to find the run again."""

    run_id: str
    mode: str
    target: str
    spec: dict[str, Any]
    details: dict[str, Any] = field(default_factory=dict)
    created: float = field(default_factory=time.time)

    def write(self, folder: Path, secrets: Secrets | None = None) -> None:
        """The record, and the runtime's secrets if the run has them (a service's run has none)."""
        if secrets is not None:
            write_atomic(folder / SECRETS_FILE, json.dumps(asdict(secrets)).encode(), mode=0o600)
        write_atomic(folder / RECORD_FILE, json.dumps(asdict(self), indent=2).encode(), mode=0o600)

    @classmethod
    def read(cls, run_id: str) -> RunRecord:
        path = runs_root() / run_id / RECORD_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise NotFound(f"no run {run_id!r} on this machine; `modematrix status` lists the runs") from None
        except (OSError, ValueError) as exc:
            raise UsageError(f"run {run_id}: its record {path} cannot be read ({exc})") from None
        return cls(**data)


def read_secrets(folder: Path) -> Secrets:
    path = folder / SECRETS_FILE
    try:
        body = json.loads(path.read_text())
        return Secrets(str(body["cluster_secret"]), str(body["admin_password"]))
    except (OSError, ValueError, KeyError) as exc:
        raise NotFound(
            f"the run's secrets are not in {path} ({exc}): runs are reached from the machine that started them"
        ) from None


def recorded() -> list[RunRecord]:
    """Every run this machine has a record of, oldest first."""
    found = []
    for path in sorted(runs_root().glob(f"*/{RECORD_FILE}")) if runs_root().is_dir() else []:
        try:
            found.append(RunRecord.read(path.parent.name))
        except UsageError:
            continue  # a record being written, or a broken one: `down` can still remove its folder
    return sorted(found, key=lambda r: r.created)

"""A Kubernetes cluster the user has: all this toolkit is handed is a kubeconfig (as
testcontainers' k3s module hands its users, and kind and k3d write them)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from lightkube.config.kubeconfig import KubeConfig

from topologies.exceptions import EngineError, UsageError


@dataclass(frozen=True)
class GivenCluster:
    kubeconfig_path: Path

    @classmethod
    def read(cls, path: str | Path) -> GivenCluster:
        """A readable kubeconfig, or UsageError (exit 2) saying what is wrong with it."""
        given = cls(Path(path).expanduser().resolve())
        try:
            KubeConfig.from_file(given.kubeconfig_path)
        except Exception as exc:  # lightkube raises several kinds for a file that is not a kubeconfig
            raise UsageError(f"--kubeconfig {path}: cannot be read as a kubeconfig ({exc})") from None
        return given

    @property
    def config(self) -> KubeConfig:
        return KubeConfig.from_file(self.kubeconfig_path)

    def kubectl(self, *args: str, timeout: float = 60) -> str:
        """The user's own kubectl with this kubeconfig (it must be on PATH)."""
        found = shutil.which("kubectl")
        if found is None:
            raise EngineError("kubectl is not on PATH (this verb runs the user's kubectl for a cluster it is handed)")
        done = subprocess.run(
            [found, "--kubeconfig", str(self.kubeconfig_path), *args], capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            raise EngineError(f"kubectl {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

"""A Kubernetes cluster the user has: all this toolkit is handed is a kubeconfig (as
testcontainers' k3s module hands its users, and kind and k3d write them)."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from lightkube import Client
from lightkube.config.kubeconfig import KubeConfig
from lightkube.resources.core_v1 import Node

from images import kubernetes as components
from images.exceptions import ImageError
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

    @property
    def kubectl_path(self) -> Path:
        """$MODEMATRIX_KUBECTL, the kubectl on PATH, or the one ``modematrix k8s build`` made."""
        named = os.environ.get("MODEMATRIX_KUBECTL") or shutil.which("kubectl")
        if named:
            return Path(named)
        try:
            built = components.folder() / "kubectl"
        except ImageError:
            built = None
        if built is not None and built.exists():
            return built
        raise EngineError("no kubectl: put one on PATH, name it in MODEMATRIX_KUBECTL, or run `modematrix k8s build`")

    def kubectl_argv(self) -> list[str]:
        return [str(self.kubectl_path), "--kubeconfig", str(self.kubeconfig_path)]

    def node_addresses(self) -> list[str]:
        """Each node's external address, or its internal one: where a node port is dialled."""
        found = []
        with Client(config=self.config) as client:
            for node in client.list(Node):
                given = {a.type: a.address for a in (node.status.addresses or [])} if node.status else {}
                address = given.get("ExternalIP") or given.get("InternalIP")
                if address:
                    found.append(address)
        return found

    def kubectl(self, *args: str, timeout: float = 60) -> str:
        """kubectl (:attr:`kubectl_path`) with this kubeconfig; its output."""
        done = subprocess.run([*self.kubectl_argv(), *args], capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise EngineError(f"kubectl {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

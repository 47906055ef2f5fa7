"""Faults of the k8s mode, as values with the same protocol as :mod:`topologies.faults`
(``name``, ``applies_to``, ``apply``, ``heal``), so :func:`topologies.faults.injected` and the
scenario runner use them unchanged:

- :class:`DeletePod`: ``kubectl delete pod`` of one of a workload's pods; its Deployment or
  StatefulSet replaces it; heal waits for that.
- :class:`NodeFault`: the node container of a cluster built here is SIGKILLed, frozen, or
  drops every packet on its link (iptables in its own network namespace, where it is root);
  heal starts, thaws or reconnects it.

A worker of a cluster built here runs one etcd member and maybe an Envoy, so a node fault
takes one member and up to one front door away at once, which a quorum of 3 and the other
Envoy survive.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from topologies.exceptions import FaultError

if TYPE_CHECKING:
    from topologies.kuberun import KubeRun


def _built(run: KubeRun) -> str | None:
    return None if run.cluster is not None else "needs a cluster built here (node containers), not a user's cluster"


def _worker(run: KubeRun, node: str) -> str | None:
    if run.cluster is None:
        return _built(run)
    names = [n.name for n in run.cluster.workers]
    return None if node in names else f"no worker {node!r}; workers: {', '.join(names)}"


@dataclass(frozen=True)
class DeletePod:
    """Delete one pod of ``workload``, by name, as ``kubectl delete pod`` does."""

    workload: str
    pod: str
    grace_s: int | None = None  # None: the pod's own grace period, as kubectl does

    @property
    def name(self) -> str:
        return f"delete-pod({self.pod})"

    def applies_to(self, run: KubeRun) -> str | None:
        ready = run.ready_pods(self.workload)
        return None if self.pod in ready else f"{self.pod} is not a Ready pod of {self.workload} ({ready})"

    def apply(self, run: KubeRun) -> None:
        run.delete_pod(self.pod, grace=self.grace_s)

    def heal(self, run: KubeRun) -> None:
        pass  # the controller replaces the pod; the cycle's health check waits for it


NODE_ACTIONS = ("kill", "pause", "partition")


@dataclass(frozen=True)
class NodeFault:
    """``kill``: SIGKILL the node container; ``pause``: freeze it; ``partition``: it drops
    everything on its network link (to the other nodes, the control plane and clients) while
    its pods keep running, cut off. Heal undoes whichever it was and waits for the node."""

    node: str
    action: str

    def __post_init__(self) -> None:
        if self.action not in NODE_ACTIONS:
            raise ValueError(f"node fault: expected one of {', '.join(NODE_ACTIONS)}, got {self.action!r}")

    @property
    def name(self) -> str:
        return f"{self.action}-node({self.node})"

    def applies_to(self, run: KubeRun) -> str | None:
        return _worker(run, self.node)

    def apply(self, run: KubeRun) -> None:
        assert run.cluster is not None
        act = {"kill": run.cluster.kill_node, "pause": run.cluster.pause_node, "partition": run.cluster.partition_node}
        act[self.action](self.node)

    def heal(self, run: KubeRun) -> None:
        assert run.cluster is not None
        run.cluster.heal_node(self.node)
        run.cluster.wait_nodes_ready(timeout=120)


def any_worker(run: KubeRun, rng: random.Random) -> str:
    if run.cluster is None:
        raise FaultError(_built(run) or "")
    return rng.choice([n.name for n in run.cluster.workers])


def any_pod(run: KubeRun, workload: str, rng: random.Random) -> DeletePod:
    ready = run.ready_pods(workload)
    if not ready:
        raise FaultError(f"no Ready pod of {workload} to delete")
    return DeletePod(workload, rng.choice(ready))

"""Faults of a mode running as containers, as values (``Fault[ContainerRun]``): kill, stop,
restart or freeze a node, partition nodes, lose or delay a node's packets.

Network faults run in the node's network namespace from a helper container
(:meth:`ContainerRun.in_netns`); the node never holds NET_ADMIN. The rules are computed
first (:mod:`topologies.containers.plan`), then written.

    with faults.injected(run, Partition.isolating("node-2", run)):
        ...
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from topologies.containers import plan
from topologies.containers.run import ContainerRun
from topologies.exceptions import UsageError
from topologies.faults import Fault


def _has(run: ContainerRun, node: str) -> str | None:
    names = [n.name for n in run.nodes]
    return None if node in names else f"no node {node!r} in run {run.run_id} ({run.mode})"


@dataclass(frozen=True)
class Kill:
    """SIGKILL the node's container; heal starts it again (same address, same data)."""

    node: str

    @property
    def name(self) -> str:
        return f"kill({self.node})"

    def applies_to(self, run: ContainerRun) -> str | None:
        return _has(run, self.node)

    def apply(self, run: ContainerRun) -> None:
        run.node(self.node).kill()

    def heal(self, run: ContainerRun) -> None:
        node = run.node(self.node)
        if not node.running:
            node.start()


@dataclass(frozen=True)
class Stop(Kill):
    """Graceful stop (SIGTERM, drain); heal starts it again."""

    @property
    def name(self) -> str:
        return f"stop({self.node})"

    def apply(self, run: ContainerRun) -> None:
        run.node(self.node).stop()


@dataclass(frozen=True)
class Restart(Kill):
    @property
    def name(self) -> str:
        return f"restart({self.node})"

    def apply(self, run: ContainerRun) -> None:
        run.node(self.node).restart()


@dataclass(frozen=True)
class Pause(Kill):
    """Freeze every process of the node (SIGSTOP-like); heal thaws it."""

    @property
    def name(self) -> str:
        return f"pause({self.node})"

    def apply(self, run: ContainerRun) -> None:
        run.node(self.node).pause()

    def heal(self, run: ContainerRun) -> None:
        node = run.node(self.node)
        if node.paused:
            node.unpause()


@dataclass(frozen=True)
class Partition:
    """Cut the network between groups of nodes with iptables; the rules are computed first."""

    groups: tuple[tuple[str, ...], ...]

    @classmethod
    def isolating(cls, node: str, run: ContainerRun) -> Partition:
        return cls(tuple(tuple(g) for g in plan.isolate(node, [n.name for n in run.nodes])))

    @property
    def name(self) -> str:
        return "partition(" + " | ".join(",".join(g) for g in self.groups) + ")"

    def applies_to(self, run: ContainerRun) -> str | None:
        if len(run.nodes) < 2:
            return "a partition needs at least two nodes"
        try:
            plan.partition_rules(self.groups, run.ips)
        except ValueError as exc:
            return str(exc)
        return None

    def apply(self, run: ContainerRun) -> None:
        rules = plan.partition_rules(self.groups, run.ips)  # decide every rule before writing any
        for node_name, commands in rules.items():
            if commands:
                run.in_netns(run.node(node_name), commands)

    def heal(self, run: ContainerRun) -> None:
        for name in {n for group in self.groups for n in group}:
            _flush(run, name)


@dataclass(frozen=True)
class Loss:
    """Drop a share of the node's packets in both directions."""

    node: str
    percent: float

    @property
    def name(self) -> str:
        return f"loss({self.node},{self.percent:g}%)"

    def applies_to(self, run: ContainerRun) -> str | None:
        return _has(run, self.node)

    def apply(self, run: ContainerRun) -> None:
        run.in_netns(run.node(self.node), plan.loss_rules(self.percent))

    def heal(self, run: ContainerRun) -> None:
        _flush(run, self.node)


@dataclass(frozen=True)
class Delay:
    """Delay the node's outgoing packets (tc netem; needs the host kernel's sch_netem)."""

    node: str
    ms: int
    jitter_ms: int = 0

    @property
    def name(self) -> str:
        return f"delay({self.node},{self.ms}ms±{self.jitter_ms}ms)"

    def applies_to(self, run: ContainerRun) -> str | None:
        return _has(run, self.node) or run.netem_missing()

    def apply(self, run: ContainerRun) -> None:
        run.in_netns(run.node(self.node), plan.delay_rules(self.ms, self.jitter_ms))

    def heal(self, run: ContainerRun) -> None:
        _flush(run, self.node)


def _flush(run: ContainerRun, name: str) -> None:
    node = run.node(name)
    if node.running:
        run.in_netns(node, plan.HEAL_RULES)


def rolling_restart(run: ContainerRun, names: Sequence[str] | None = None, timeout: float = 120.0) -> None:
    """Restart each node in turn, waiting for the whole run to be healthy in between."""
    for name in names or [n.name for n in run.nodes]:
        run.node(name).restart()
        run.wait_healthy(timeout=timeout)


# what `modematrix fault RUN ACTION NODE` can do to a node of a run on containers
BY_NAME: dict[str, Callable[[str, ContainerRun], Fault[ContainerRun]]] = {
    "kill": lambda node, run: Kill(node),
    "stop": lambda node, run: Stop(node),
    "restart": lambda node, run: Restart(node),
    "pause": lambda node, run: Pause(node),
    "partition": lambda node, run: Partition.isolating(node, run),
}


def named(action: str, node: str, run: ContainerRun) -> Fault[ContainerRun]:
    """The fault ``action`` on ``node``; UsageError (exit 2) for an unknown action or node."""
    if action not in BY_NAME:
        raise UsageError(f"no fault {action!r} for a run on containers; expected one of {', '.join(BY_NAME)}")
    run.node(node)  # NotFound names the run's nodes
    return BY_NAME[action](node, run)

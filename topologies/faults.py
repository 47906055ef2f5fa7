"""Faults are values: each says whether it applies to a cluster, how to apply it, how to heal.

    fault = faults.Partition.isolating("node-2", cluster)
    with faults.injected(cluster, fault, mark=print):   # health checked before; healed and checked after
        ...traffic...

:func:`injected` is the one fault cycle (check, apply, hold, heal, check) used by the pytest
plugin, the scenarios and the load tests; ``mark`` hears ``apply X``, ``heal X``, ``healthy``.

Network faults run in the node's network namespace from a helper container
(:meth:`Cluster.in_netns`); the node never holds NET_ADMIN. :func:`heal_all` restores
everything it can, even after a failed step, and reports what it could not.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from topologies import plan
from topologies.cluster import Cluster
from topologies.exceptions import FaultError, TopologyError
from topologies.platforms import PAUSED, STOPPED

log = logging.getLogger("topologies.faults")


class Fault(Protocol):
    @property
    def name(self) -> str: ...
    def applies_to(self, cluster: Cluster) -> str | None:
        """None if it applies, else the reason it does not."""

    def apply(self, cluster: Cluster) -> None: ...
    def heal(self, cluster: Cluster) -> None: ...


def _has(cluster: Cluster, node: str) -> str | None:
    names = [n.name for n in cluster.nodes]
    return None if node in names else f"no node {node!r} in mode {cluster.mode}"


@dataclass(frozen=True)
class Kill:
    """SIGKILL the node's container; heal starts it again (same address, same data)."""

    node: str

    @property
    def name(self) -> str:
        return f"kill({self.node})"

    def applies_to(self, cluster: Cluster) -> str | None:
        return _has(cluster, self.node)

    def apply(self, cluster: Cluster) -> None:
        cluster.node(self.node).kill()

    def heal(self, cluster: Cluster) -> None:
        node = cluster.node(self.node)
        if not node.running:
            node.start()


@dataclass(frozen=True)
class Stop(Kill):
    """Graceful stop (SIGTERM, drain); heal starts it again."""

    @property
    def name(self) -> str:
        return f"stop({self.node})"

    def apply(self, cluster: Cluster) -> None:
        cluster.node(self.node).stop()


@dataclass(frozen=True)
class Restart(Kill):
    @property
    def name(self) -> str:
        return f"restart({self.node})"

    def apply(self, cluster: Cluster) -> None:
        cluster.node(self.node).restart()


@dataclass(frozen=True)
class Pause(Kill):
    """Freeze every process of the node (SIGSTOP-like); heal thaws it."""

    @property
    def name(self) -> str:
        return f"pause({self.node})"

    def apply(self, cluster: Cluster) -> None:
        cluster.node(self.node).pause()

    def heal(self, cluster: Cluster) -> None:
        node = cluster.node(self.node)
        if node.paused:
            node.unpause()


@dataclass(frozen=True)
class Partition:
    """Cut the network between groups of nodes with iptables; the rules are computed first."""

    groups: tuple[tuple[str, ...], ...]

    @classmethod
    def isolating(cls, node: str, cluster: Cluster) -> Partition:
        return cls(tuple(tuple(g) for g in plan.isolate(node, [n.name for n in cluster.nodes])))

    @property
    def name(self) -> str:
        return "partition(" + " | ".join(",".join(g) for g in self.groups) + ")"

    def applies_to(self, cluster: Cluster) -> str | None:
        if len(cluster.nodes) < 2:
            return "a partition needs at least two nodes"
        try:
            plan.partition_rules(self.groups, cluster.ips)
        except ValueError as exc:
            return str(exc)
        return None

    def apply(self, cluster: Cluster) -> None:
        rules = plan.partition_rules(self.groups, cluster.ips)  # decide every rule before writing any
        for node_name, commands in rules.items():
            if commands:
                cluster.in_netns(cluster.node(node_name), commands)

    def heal(self, cluster: Cluster) -> None:
        for name in {n for group in self.groups for n in group}:
            _flush(cluster, name)


@dataclass(frozen=True)
class Loss:
    """Drop a share of the node's packets in both directions."""

    node: str
    percent: float

    @property
    def name(self) -> str:
        return f"loss({self.node},{self.percent:g}%)"

    def applies_to(self, cluster: Cluster) -> str | None:
        return _has(cluster, self.node)

    def apply(self, cluster: Cluster) -> None:
        cluster.in_netns(cluster.node(self.node), plan.loss_rules(self.percent))

    def heal(self, cluster: Cluster) -> None:
        _flush(cluster, self.node)


@dataclass(frozen=True)
class Delay:
    """Delay the node's outgoing packets (tc netem; needs the host kernel's sch_netem)."""

    node: str
    ms: int
    jitter_ms: int = 0

    @property
    def name(self) -> str:
        return f"delay({self.node},{self.ms}ms±{self.jitter_ms}ms)"

    def applies_to(self, cluster: Cluster) -> str | None:
        return _has(cluster, self.node) or netem_missing(cluster)

    def apply(self, cluster: Cluster) -> None:
        cluster.in_netns(cluster.node(self.node), plan.delay_rules(self.ms, self.jitter_ms))

    def heal(self, cluster: Cluster) -> None:
        _flush(cluster, self.node)


@dataclass(frozen=True)
class Both:
    """Two faults at once (the second applied while the first holds), healed in reverse."""

    first: Fault
    second: Fault

    @property
    def name(self) -> str:
        return f"{self.first.name}+{self.second.name}"

    def applies_to(self, cluster: Cluster) -> str | None:
        return self.first.applies_to(cluster) or self.second.applies_to(cluster)

    def apply(self, cluster: Cluster) -> None:
        self.first.apply(cluster)
        self.second.apply(cluster)

    def heal(self, cluster: Cluster) -> None:
        try:
            self.second.heal(cluster)
        finally:
            self.first.heal(cluster)


def netem_missing(cluster: Cluster) -> str | None:
    """None when tc netem works on this host; else why not (probed once per cluster)."""
    if "netem" not in cluster.facts:
        node = next(n for n in cluster.nodes if n.running)
        try:
            cluster.in_netns(node, ["tc qdisc add dev lo root netem delay 1ms", "tc qdisc del dev lo root"])
            cluster.facts["netem"] = None
        except FaultError as exc:
            cluster.facts["netem"] = f"tc netem is not available in this host's kernel (sch_netem): {exc}"
    return cluster.facts["netem"]


def _flush(cluster: Cluster, name: str) -> None:
    node = cluster.node(name)
    if node.running:
        cluster.in_netns(node, plan.HEAL_RULES)


def heal_all(cluster: Cluster) -> None:
    """Undo every fault on every node: thaw, start, flush rules. Tries everything, then
    raises one FaultError listing whatever could not be healed."""
    failures = []
    for node in cluster.nodes:
        try:
            status = node.status
            if status == PAUSED:
                node.unpause()
            elif status in STOPPED:
                node.start()
            if node.running:
                cluster.in_netns(node, plan.HEAL_RULES)
        except TopologyError as exc:  # keep healing the others
            failures.append(f"{node.name}: {exc}")
    if failures:
        raise FaultError("could not heal: " + "; ".join(failures))


def heal(cluster: Cluster, fault: Fault, *, tries: int = 3, backoff: float = 1.0) -> None:
    """Heal ``fault`` and then everything else; a failed step is retried, then reported."""
    last: TopologyError | None = None
    for attempt in range(tries):
        try:
            fault.heal(cluster)
            everything = getattr(cluster, "heal_all", None)  # a target with faults of its own (k8s)
            everything() if callable(everything) else heal_all(cluster)
            return
        except TopologyError as exc:
            last = exc
            log.warning("healing %s failed (try %d of %d): %s", fault.name, attempt + 1, tries, exc)
            time.sleep(backoff * (attempt + 1))  # the platform may need a moment (a container still stopping)
    raise FaultError(f"could not heal {fault.name} after {tries} tries: {last}") from last


def _ignore(event: str) -> None:
    pass


@contextmanager
def injected(
    cluster: Cluster,
    fault: Fault,
    *,
    timeout: float = 120.0,
    mark: Callable[[str], None] = _ignore,
    heal_tries: int = 3,
) -> Iterator[Fault]:
    """The fault cycle: refuse a fault that does not apply, check health, apply, yield; on
    every way out (an exception, KeyboardInterrupt) heal everything, retrying a failed heal
    step, then check health again."""
    reason = fault.applies_to(cluster)
    if reason:
        raise FaultError(f"{fault.name} does not apply: {reason}")
    cluster.wait_healthy(timeout=timeout)
    log.info("applying %s", fault.name)
    mark(f"apply {fault.name}")
    try:
        fault.apply(cluster)
        yield fault
    finally:
        heal(cluster, fault, tries=heal_tries)
        mark(f"heal {fault.name}")
        cluster.wait_healthy(timeout=timeout)
        mark("healthy")


def rolling_restart(cluster: Cluster, names: Sequence[str] | None = None, timeout: float = 120.0) -> None:
    """Restart each node in turn, waiting for the whole cluster to be healthy in between."""
    for name in names or [n.name for n in cluster.nodes]:
        cluster.node(name).restart()
        cluster.wait_healthy(timeout=timeout)

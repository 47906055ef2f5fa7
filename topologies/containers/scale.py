"""Live scaling: add or remove service nodes of a mode running as containers, from the same image.

:func:`plan` is pure: the counts asked for, against the mode as it runs, become the nodes to
start and the nodes to stop, or a :class:`UsageError` that changes nothing (exit 2). Only
modes whose front door follows discovery (``load_balancer: {kind: envoy}``) scale: a new
node registers itself and takes traffic once Envoy's first check of it passes; a removed
node drains (withdraws, finishes what is in flight, stops). DB members are never removed.

    >>> from topologies import spec
    >>> p = decide(spec.load("scaled"), {"kv": 3, "queue": 1})
    >>> [n.name for n in p.add], list(p.remove)
    (['kv-3'], ['queue-2'])
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from topologies import pki
from topologies.constants import ROUTED_SERVICES
from topologies.containers.node import wait_ready
from topologies.containers.run import ContainerRun
from topologies.containers.start import Place, start_nodes
from topologies.exceptions import UsageError
from topologies.spec import ModeSpec, NodeSpec

MAX_PER_SERVICE = 20  # the run's /24 holds 240 nodes; 20 per service keeps a margin
_NUMBERED = re.compile(r"^(?P<service>[a-z]+)-(?P<n>\d+)$")


@dataclass(frozen=True)
class ScalePlan:
    add: tuple[NodeSpec, ...]
    remove: tuple[str, ...]


def parse_counts(words: list[str]) -> dict[str, int]:
    """``["kv=4", "queue=1"]`` -> ``{"kv": 4, "queue": 1}``; UsageError on anything else."""
    counts: dict[str, int] = {}
    for word in words:
        service, sep, number = word.partition("=")
        if not sep or not number.strip().isascii() or not number.strip().isdigit():
            raise UsageError(f"expected SERVICE=COUNT (kv=4), got {word!r}")
        counts[service.strip()] = int(number)
    if not counts:
        raise UsageError("expected at least one SERVICE=COUNT (kv=4)")
    return counts


def decide(mode: ModeSpec, counts: Mapping[str, int]) -> ScalePlan:
    if mode.load_balancer is None or mode.load_balancer.kind != "envoy":
        raise UsageError(
            f"mode {mode.mode} cannot scale: its front door does not follow discovery; "
            "scaling needs load_balancer: {kind: envoy} (the scaled mode)"
        )
    add: list[NodeSpec] = []
    remove: list[str] = []
    for service, count in counts.items():
        if service not in ROUTED_SERVICES:
            raise UsageError(f"unknown service {service!r}; expected one of {', '.join(ROUTED_SERVICES)}")
        if not 1 <= count <= MAX_PER_SERVICE:
            raise UsageError(f"{service}={count}: expected a count from 1 to {MAX_PER_SERVICE}")
        current = [n for n in mode.nodes if n.services == (service,)]
        if len(current) < count:
            taken = {n.name for n in mode.nodes}
            numbers = (i for i in range(1, 1000) if f"{service}-{i}" not in taken)
            add += [NodeSpec(f"{service}-{next(numbers)}", (service,)) for _ in range(count - len(current))]
        elif len(current) > count:
            removable = sorted((n for n in current if not n.db_member), key=_number, reverse=True)
            keep_members = len(current) - len(removable)
            if count < keep_members:
                raise UsageError(
                    f"{service}={count}: {keep_members} of its nodes host DB members, which scaling never removes"
                )
            remove += [n.name for n in removable[: len(current) - count]]
    return ScalePlan(tuple(add), tuple(remove))


def _number(node: NodeSpec) -> int:
    found = _NUMBERED.match(node.name)
    return int(found["n"]) if found else 0


def apply(run: ContainerRun, counts: Mapping[str, int], *, timeout: float = 120.0) -> ScalePlan:
    """Start the new nodes and wait until each is ready; then stop the removed ones (SIGTERM:
    they drain). Raises UsageError before touching anything if the plan is refused."""
    decided = decide(run.spec, counts)
    if decided.add:
        _start(run, decided.add, timeout)
    for name in decided.remove:
        node = run.remove(name)
        node.stop()  # SIGTERM: withdraw, wait for the balancers, finish in-flight requests, exit
        run.engine.remove(node.handle)
    return decided


def _start(run: ContainerRun, specs: tuple[NodeSpec, ...], timeout: float) -> None:
    nodes = run.nodes
    prefix = nodes[0].ip.rsplit(".", 1)[0]
    used = {int(n.ip.rsplit(".", 1)[1]) for n in run.all_nodes}
    free = (i for i in range(11, 250) if i not in used)
    grown = run.spec.with_nodes((*run.spec.nodes, *specs))
    ips = {**run.ips, **{s.name: f"{prefix}.{next(free)}" for s in specs}}
    place = Place.of(run, prefix)
    started = start_nodes(place, grown, specs, ips, run.secrets, pki.RunPki.load(run.workdir), {})
    run.add(started)
    wait_ready(started, run.tls_context(), timeout=timeout)  # ready: it registers itself as it starts serving

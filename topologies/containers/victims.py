"""Which node a fault hits: the one place that chooses.

    victims.choose(run, "leader", rng)            # the etcd leader's node right now
    victims.choose(run, "follower", rng)          # an etcd member that is not the leader
    victims.choose(run, "other", rng)             # any node but the leader
    victims.choose(run, "random", rng)            # any node
    victims.choose(run, "service:kv", rng)        # a node that runs kv
    victims.choose(run, "service:envoy", rng)     # one of the Envoys (a role, in the scaled mode)

In a mode without a replicated DB the single node is its own leader; in a service's run
(:class:`topologies.containers.service.ServiceRun`) the leader is the member its leader
probe says yes on, and a service without one has its first member as "leader".
"""

from __future__ import annotations

import random

from topologies.constants import ROLES, SERVICES
from topologies.containers.run import ContainerRun
from topologies.exceptions import NotFound

KINDS = ("leader", "follower", "other", "random", *(f"service:{s}" for s in (*SERVICES, *ROLES)))


def leader(run: ContainerRun) -> str:
    return run.db_leader().name if run.has_leader else run.nodes[0].name


def choose(run: ContainerRun, which: str, rng: random.Random) -> str:
    """The name of a node to break, chosen by ``which`` (one of :data:`KINDS`)."""
    names = [n.name for n in run.nodes]
    if which == "leader":
        return leader(run)
    if which == "random":
        return rng.choice(names)
    if which in ("follower", "other"):
        first = leader(run)
        pool = [n.name for n in run.nodes if n.name != first and (which == "other" or n.db_member)]
        if not pool:
            raise NotFound(f"mode {run.mode} has no {which} node besides the leader {first}")
        return rng.choice(pool)
    if which.startswith("service:"):
        service = which.split(":", 1)[1]
        pool = [n.name for n in run.nodes if service in n.services]
        if not pool:
            raise NotFound(f"no node of mode {run.mode} runs {service!r}")
        return rng.choice(pool)
    raise NotFound(f"no victim kind {which!r}; expected one of {', '.join(KINDS)}")

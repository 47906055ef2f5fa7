"""Which node a fault hits: the one place that chooses.

    victims.choose(cluster, "leader", rng)            # the etcd leader's node right now
    victims.choose(cluster, "follower", rng)          # an etcd member that is not the leader
    victims.choose(cluster, "other", rng)             # any node but the leader
    victims.choose(cluster, "random", rng)            # any node
    victims.choose(cluster, "service:kv", rng)        # a node that runs kv
    victims.choose(cluster, "service:envoy", rng)     # one of the Envoys (a role, in the scaled mode)

In a mode without a replicated DB the single node is its own leader.
"""

from __future__ import annotations

import random

from topologies.cluster import Cluster
from topologies.constants import ROLES, SERVICES
from topologies.exceptions import NotFound

KINDS = ("leader", "follower", "other", "random", *(f"service:{s}" for s in (*SERVICES, *ROLES)))


def leader(cluster: Cluster) -> str:
    return cluster.db_leader().name if cluster.spec.db == "etcd" else cluster.nodes[0].name


def choose(cluster: Cluster, which: str, rng: random.Random) -> str:
    """The name of a node to break, chosen by ``which`` (one of :data:`KINDS`)."""
    names = [n.name for n in cluster.nodes]
    if which == "leader":
        return leader(cluster)
    if which == "random":
        return rng.choice(names)
    if which in ("follower", "other"):
        first = leader(cluster)
        pool = [n.name for n in cluster.nodes if n.name != first and (which == "other" or n.db_member)]
        if not pool:
            raise NotFound(f"mode {cluster.mode} has no {which} node besides the leader {first}")
        return rng.choice(pool)
    if which.startswith("service:"):
        service = which.split(":", 1)[1]
        pool = [n.name for n in cluster.nodes if service in n.services]
        if not pool:
            raise NotFound(f"no node of mode {cluster.mode} runs {service!r}")
        return rng.choice(pool)
    raise NotFound(f"no victim kind {which!r}; expected one of {', '.join(KINDS)}")

"""Start the one image in each deployment mode, reach it, and break it on purpose."""

from topologies.attach import attach
from topologies.client import ClusterClient, Credentials
from topologies.cluster import Cluster, remove_run
from topologies.exceptions import FaultError, NotFound, SpecError, StartTimeout, TopologyError
from topologies.launch import launch, run_image, start
from topologies.node import Node
from topologies.spec import ModeSpec, available, load
from topologies.wait import WaitTimeout, wait_until

__all__ = [
    "Cluster",
    "ClusterClient",
    "Credentials",
    "FaultError",
    "ModeSpec",
    "Node",
    "NotFound",
    "SpecError",
    "StartTimeout",
    "TopologyError",
    "WaitTimeout",
    "attach",
    "available",
    "launch",
    "load",
    "remove_run",
    "run_image",
    "start",
    "wait_until",
]

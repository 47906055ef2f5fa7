"""Start the one image in each deployment mode, reach it, and break it on purpose."""

from topologies.attach import attach
from topologies.client import ClusterClient, Credentials
from topologies.cluster import Cluster
from topologies.exceptions import (
    FaultError,
    ImageFailed,
    NotFound,
    PlatformError,
    PlatformUnavailable,
    PortInUse,
    SpecError,
    StartTimeout,
    TopologyError,
    UsageError,
)
from topologies.launch import launch, run_image, start
from topologies.node import Node
from topologies.platforms import Platform
from topologies.spec import ModeSpec, available, load
from topologies.wait import WaitTimeout, wait_until

__all__ = [
    "Cluster",
    "ClusterClient",
    "Credentials",
    "FaultError",
    "ImageFailed",
    "ModeSpec",
    "Node",
    "NotFound",
    "Platform",
    "PlatformError",
    "PlatformUnavailable",
    "PortInUse",
    "SpecError",
    "StartTimeout",
    "TopologyError",
    "UsageError",
    "WaitTimeout",
    "attach",
    "available",
    "launch",
    "load",
    "run_image",
    "start",
    "wait_until",
]

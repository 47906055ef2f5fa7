"""Target 1: a mode as containers on an engine (Docker): one container per node of the mode,
on a network of the run's own, with the run's CA, secrets and labels.

    run = containers.start(spec.load("ha"), engines.get("docker"))   # built whole, ready
    run = containers.attach(RunRecord.read(run_id), engine)          # the same run, from another process
    containers.scale.apply(run, {"kv": 3})                           # add or drain nodes

``plan`` decides (pure), ``start`` and ``scale`` act, ``faults`` break it, ``victims`` choose
which node.
"""

from topologies.containers.attach import attach
from topologies.containers.node import Node
from topologies.containers.run import TARGET, ContainerRun
from topologies.containers.start import run_image, start

__all__ = ["TARGET", "ContainerRun", "Node", "attach", "run_image", "start"]

"""Where the k8s mode's kubeconfig comes from: a cluster the user has (:mod:`.given`), or one
built here as node containers on an engine (:mod:`.nodes`, laid out by :mod:`.layout`).
Either way the mode is deployed the same way (:func:`topologies.kubernetes.run.deploy`)."""

from topologies.kubernetes.clusters.given import GivenCluster
from topologies.kubernetes.clusters.nodes import NodeCluster

Cluster = GivenCluster | NodeCluster

__all__ = ["Cluster", "GivenCluster", "NodeCluster"]

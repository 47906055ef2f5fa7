"""Discovery: which service nodes exist (:mod:`.base`), from the DB's leases (:mod:`.leases`)
or from Kubernetes' EndpointSlices (:mod:`.endpointslices`, imported where it is used: it
brings the Kubernetes client)."""

from runtime.discovery.base import Endpoint, EndpointSource, parse, record
from runtime.discovery.leases import NAMESPACE, TTL, DbLeaseSource, Registrar

__all__ = ["NAMESPACE", "TTL", "DbLeaseSource", "Endpoint", "EndpointSource", "Registrar", "parse", "record"]

"""The names of the runtime's services and roles, defined once (the configuration, the
certificates' identities and the route table all read them here).

>>> SERVICES, ROUTED_SERVICES, ROLES
(('auth', 'ingress', 'kv', 'queue'), ('auth', 'kv', 'queue'), ('envoy', 'xds'))
"""

from __future__ import annotations

SERVICES = ("auth", "ingress", "kv", "queue")
ROUTED_SERVICES = ("auth", "kv", "queue")
# Roles a node may take besides the services ('all' does not include them): the xDS control
# plane, and the Envoy front door it configures (the runtime supervises the Envoy process).
ROLES = ("envoy", "xds")

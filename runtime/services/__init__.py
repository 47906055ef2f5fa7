"""The services a node can run. ``ingress`` is not here: it is the app's forwarding edge."""

from runtime.services.auth import AuthService
from runtime.services.base import Call, Handler, Service
from runtime.services.kv import KvService
from runtime.services.queue import QueueService

__all__ = ["AuthService", "Call", "Handler", "KvService", "QueueService", "Service"]

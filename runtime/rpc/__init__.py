"""kv and queue over gRPC: ``modematrix.proto``, its generated stubs, and the servicers.

The stubs come from the image build, or, in a checkout, are generated here on first use
(needs grpcio-tools). They load on first use (``from runtime.rpc import pb, pb_grpc``), not
when the package is imported, so ``python -m runtime.rpc.stubs check`` can report stubs that
do not load instead of failing inside this import.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runtime.rpc import modematrix_pb2 as pb
    from runtime.rpc import modematrix_pb2_grpc as pb_grpc

__all__ = ["STREAMS_PER_CONNECTION", "pb", "pb_grpc"]

# Calls one client connection may carry at once to a node's gRPC port (HTTP/2's
# SETTINGS_MAX_CONCURRENT_STREAMS). Envoy's connections to the nodes are sized by it too: a
# proxy that opened more streams than this would have them refused (REFUSED_STREAM) at load.
STREAMS_PER_CONNECTION = 32


def _load() -> tuple[ModuleType, ModuleType]:
    try:
        from runtime.rpc import modematrix_pb2, modematrix_pb2_grpc
    except ImportError:  # a checkout: generate once, then import
        from runtime.rpc import stubs

        stubs.write()
        from runtime.rpc import modematrix_pb2, modematrix_pb2_grpc
    return modematrix_pb2, modematrix_pb2_grpc


def __getattr__(name: str) -> ModuleType:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    messages, services = _load()
    globals().update(pb=messages, pb_grpc=services)
    return messages if name == "pb" else services

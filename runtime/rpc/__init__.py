"""kv and queue over gRPC: ``modematrix.proto``, its generated stubs, and the servicers.

The stubs come from the image build, or, in a checkout, are generated here on first import
(needs grpcio-tools).
"""

from __future__ import annotations

try:
    from runtime.rpc import modematrix_pb2 as pb
    from runtime.rpc import modematrix_pb2_grpc as pb_grpc
except ImportError:  # a checkout: generate once, then import
    from runtime.rpc import stubs

    stubs.write()
    from runtime.rpc import modematrix_pb2 as pb
    from runtime.rpc import modematrix_pb2_grpc as pb_grpc

__all__ = ["pb", "pb_grpc"]

"""The gRPC floor of the benchmark: Kv/Get and Kv/Put answered with fixed replies by grpcio on
the runtime's own stack (TLS, the image's grpcio), nothing else, so that the runtime's gRPC
rows can be read against what the Python server alone costs per call here.

``modematrix bench`` passes this file's text to ``python3 -c`` in a container of the image,
with the server's kind as its argument and the certificate and key (PEM) in the environment:

- ``aio``: ``grpc.aio`` on uvloop, as the runtime serves gRPC;
- ``threads``: grpcio's synchronous server with a pool of 16 threads;
- ``bridge``: the synchronous server whose handlers hand each call to an asyncio (uvloop)
  loop in another thread and wait for it, as the runtime's async services would need.

Replies are encoded by hand (``Entry`` and ``PutReply`` of runtime/rpc/modematrix.proto), so
it imports nothing of the runtime, and no protobuf.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from concurrent import futures
from typing import Any

import grpc
import uvloop

PORT = 8445
SERVICE = "modematrix.v1.Kv"
ENTRY = b"\x0a\x09bench-get" + b"\x12\x40" + b"x" * 64 + b"\x18\x01"  # key, 64-byte value, revision 1
PUT_REPLY = b"\x0a\x05bench" + b"\x10\x01"  # key, revision 1


def credentials() -> grpc.ServerCredentials:
    pair = (os.environ["BASELINE_KEY"].encode(), os.environ["BASELINE_CERT"].encode())
    return grpc.ssl_server_credentials([pair])


def handlers(get: Any, put: Any) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        SERVICE, {"Get": grpc.unary_unary_rpc_method_handler(get), "Put": grpc.unary_unary_rpc_method_handler(put)}
    )


async def serve_aio() -> None:
    async def get(request: bytes, context: Any) -> bytes:
        return ENTRY

    async def put(request: bytes, context: Any) -> bytes:
        return PUT_REPLY

    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((handlers(get, put),))
    server.add_secure_port(f"0.0.0.0:{PORT}", credentials())
    await server.start()
    await server.wait_for_termination()


def serve_threads(bridged: bool) -> None:
    loop = uvloop.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    async def answer(reply: bytes) -> bytes:
        await asyncio.sleep(0)
        return reply

    def get(request: bytes, context: Any) -> bytes:
        return asyncio.run_coroutine_threadsafe(answer(ENTRY), loop).result() if bridged else ENTRY

    def put(request: bytes, context: Any) -> bytes:
        return asyncio.run_coroutine_threadsafe(answer(PUT_REPLY), loop).result() if bridged else PUT_REPLY

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((handlers(get, put),))
    server.add_secure_port(f"0.0.0.0:{PORT}", credentials())
    server.start()
    server.wait_for_termination()


if __name__ == "__main__":
    kind = sys.argv[1] if len(sys.argv) > 1 else "aio"
    if kind == "aio":
        uvloop.run(serve_aio())
    elif kind in ("threads", "bridge"):
        serve_threads(bridged=kind == "bridge")
    else:
        sys.exit(f"baseline_grpc: expected aio, threads or bridge, got {kind!r}")

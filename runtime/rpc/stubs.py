"""Generate the gRPC stubs from ``modematrix.proto`` with grpcio-tools' protoc.

The image generates its own in a build stage, with the grpcio-tools of ``images/build.lock``,
and checks them with :func:`check` before the build may finish; a checkout generates them on
first import when grpcio-tools is installed (the ``tools`` extra). They are never committed:
the .proto is the source.

    python -m runtime.rpc.stubs          # write them next to the .proto
    python -m runtime.rpc.stubs check    # they load with the grpcio installed here, or exit 1
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROTO = "runtime/rpc/modematrix.proto"
# the messages, their types (.pyi, for mypy), the gRPC stubs and servicer bases
OUTPUTS = ("runtime/rpc/modematrix_pb2.py", "runtime/rpc/modematrix_pb2.pyi", "runtime/rpc/modematrix_pb2_grpc.py")


def generate(root: Path = PACKAGE_DIR.parent.parent) -> dict[str, bytes]:
    """root-relative name -> generated source, for the .proto under ``root``."""
    try:
        from grpc_tools import protoc
    except ImportError as exc:
        raise RuntimeError(
            "the gRPC stubs are not generated and grpcio-tools is not installed: "
            "pip install 'modematrix[tools]' (or grpcio-tools), then python -m runtime.rpc.stubs"
        ) from exc
    with tempfile.TemporaryDirectory(prefix="modematrix-stubs-") as out:
        code = protoc.main(
            [
                "protoc",
                f"-I{root}",
                f"--python_out={out}",
                f"--pyi_out={out}",
                f"--grpc_python_out={out}",
                str(root / PROTO),
            ]
        )
        if code != 0:
            raise RuntimeError(f"protoc failed on {PROTO} (exit {code})")
        return {name: (Path(out) / name).read_bytes() for name in OUTPUTS}


def write(root: Path = PACKAGE_DIR.parent.parent) -> list[Path]:
    written = []
    for name, data in generate(root).items():
        target = root / name
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(target)  # another process importing at the same time sees old or new, never half
        written.append(target)
    return written


def check() -> str:
    """Import the stubs with the grpcio installed here. Generated code refuses an older grpcio
    than the grpcio-tools that made it (a RuntimeError at import), which a node would only
    meet when it opens its gRPC port."""
    import grpc

    from runtime.rpc import modematrix_pb2 as _messages  # noqa: F401  (the import is the check)
    from runtime.rpc import modematrix_pb2_grpc as generated

    needs = getattr(generated, "GRPC_GENERATED_VERSION", "?")
    return f"gRPC stubs made for grpcio>={needs} load with grpcio {grpc.__version__}"


def main(argv: list[str]) -> int:
    if argv == ["check"]:
        try:
            print(check())
        except (ImportError, RuntimeError) as exc:
            print(f"runtime.rpc.stubs: the gRPC stubs do not load here: {exc}", file=sys.stderr)
            return 1
        return 0
    if argv:
        print("usage: python -m runtime.rpc.stubs [check]", file=sys.stderr)
        return 2
    for path in write():
        print(path, file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""``runtime`` command line: serve, check-config, routes.

Any reason not to start (bad settings, a data dir or DB of another service set, a secret
that does not open the cluster's keys) prints one line on stderr and exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import uvloop

from runtime import __version__, config, logs, routing
from runtime.exceptions import ConfigError, RefusedToStart, SecurityError

EXIT_REFUSED = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="runtime", description="modematrix runtime: one entry point for every mode")
    parser.add_argument("--version", action="version", version=f"runtime {__version__}")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run the services named by --services / RUNTIME_SERVICES / config")
    serve.add_argument("--services", help="comma-separated: auth,ingress,kv,queue, or all")
    serve.add_argument("--config", type=Path, help="YAML file of settings")
    serve.add_argument("--data-dir", dest="data_dir")
    serve.add_argument("--listen", help="HOST:PORT (default 127.0.0.1:8443)")
    serve.add_argument(
        "--insecure-http",
        dest="insecure_http",
        action="store_const",
        const="true",
        help="serve plain HTTP instead of HTTPS (logs a warning)",
    )
    check = sub.add_parser("check-config", help="validate settings and exit (0: valid, 2: invalid)")
    check.add_argument("--config", type=Path)
    check.add_argument("--services")
    sub.add_parser("routes", help="print the route table as JSON (what proxies are configured from)")
    return parser


def _flags(args: argparse.Namespace) -> dict[str, object]:
    names = ("services", "data_dir", "listen", "insecure_http")
    return {n: getattr(args, n, None) for n in names if getattr(args, n, None) is not None}


def refuse(message: str) -> int:
    print(f"runtime: refusing to start: {message}", file=sys.stderr)
    return EXIT_REFUSED


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "routes":
        print(json.dumps(routing.as_data(), indent=2))
        return 0
    if args.command is None:
        return refuse("no command given; expected 'runtime serve --services LIST' (see runtime --help)")
    try:
        settings = config.load(file=args.config, flags=_flags(args))
    except ConfigError as exc:
        return refuse(str(exc))
    if args.command == "check-config":
        print(f"config ok: services {','.join(settings.services)}, db {settings.db_backend}, mode {settings.mode}")
        return 0
    logs.configure(settings.log_level)
    from runtime.server import serve  # the server stack is only imported to serve

    try:
        return uvloop.run(serve(settings))
    except (RefusedToStart, SecurityError) as exc:
        return refuse(str(exc))
    except OSError as exc:  # a path the runtime was given cannot be used: one line, not a traceback
        print(f"runtime: stopped: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())

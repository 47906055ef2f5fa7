"""``runtime`` command line: serve, check-config, routes, db-init, db-member.

Any reason not to start (bad settings, a data dir or DB of another service set, a secret
that does not open the cluster's keys) prints one line on stderr and exits 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import uvloop

from runtime import __version__, config, logs, routing
from runtime.exceptions import ConfigError, RefusedToStart, SecurityError

if TYPE_CHECKING:  # the DB's client and the certificates load only for the commands that use them
    from runtime.security.certs import Bundle
    from runtime.storage.etcd import ClientTls

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
    sub.add_parser("settings", help="print every setting, its default and meaning (a Markdown table)")
    check = sub.add_parser("check-config", help="validate settings and exit (0: valid, 2: invalid)")
    check.add_argument("--config", type=Path)
    check.add_argument("--services")
    sub.add_parser("routes", help="print the route table as JSON (what proxies are configured from)")
    init = sub.add_parser(
        "db-init",
        help="as the DB's root (certificate in RUNTIME_TLS_BUNDLE_FILE): create a user per service set, "
        "their roles, and switch etcd authentication on; idempotent",
    )
    init.add_argument("--endpoints", required=True, help="https://HOST:2379[,...]")
    init.add_argument(
        "--service-sets", required=True, help="';'-separated service sets, each comma-separated: 'kv;auth,ingress'"
    )
    member = sub.add_parser(
        "db-member",
        help="as the DB's root (as db-init): remove a member by name, or add one by its peer URL, to replace "
        "it (start the new one with db_initial_cluster_state existing); idempotent",
    )
    member.add_argument("action", choices=("add", "remove"))
    member.add_argument("name", help="the member's name (db_member_name)")
    member.add_argument("peer_url", nargs="?", help="add: https://HOST:2380")
    member.add_argument("--endpoints", required=True, help="https://HOST:2379[,...] of the running members")
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
    if args.command == "settings":
        print(config.settings_table(), end="")
        return 0
    if args.command == "db-init":
        return _db_init(args)
    if args.command == "db-member":
        return _db_member(args)
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


def _root_bundle() -> Bundle:
    """The DB root's certificate bundle, from RUNTIME_TLS_BUNDLE_FILE (or RUNTIME_TLS_BUNDLE)."""
    from runtime.security.certs import Bundle

    from_file = os.environ.get("RUNTIME_TLS_BUNDLE_FILE")
    given = config.PARSERS["tls_bundle_file"](from_file) if from_file else os.environ.get("RUNTIME_TLS_BUNDLE", "")
    return Bundle.load(given)


@contextlib.contextmanager
def _root_files(bundle: Bundle) -> Iterator[ClientTls]:
    """Root's certificate as the files a gRPC channel reads, in a private temporary folder."""
    from runtime.storage.etcd import ClientTls

    root = bundle.get("node")
    if root is None:
        raise ValueError("no certificate in the bundle")
    with tempfile.TemporaryDirectory() as directory:
        files = ClientTls(Path(directory, "ca.pem"), Path(directory, "root.pem"), Path(directory, "root-key.pem"))
        files.ca_file.write_bytes(bundle.ca_pem)
        files.cert_file.write_bytes(root[0])
        os.close(os.open(files.key_file, os.O_WRONLY | os.O_CREAT, 0o600))
        files.key_file.write_bytes(root[1])
        yield files


def _db_init(args: argparse.Namespace) -> int:
    from runtime.storage import etcd_auth

    logs.configure("info")
    try:
        endpoints = list(config.parse_urls(args.endpoints))
        sets = [config.parse_services(part) for part in args.service_sets.split(";") if part.strip()]
        bundle = _root_bundle()
    except ValueError as exc:
        return refuse(f"db-init: {exc}")
    if bundle.get("node") is None or not endpoints or not sets:
        return refuse(
            "db-init: expected --endpoints, --service-sets and root's certificate in RUNTIME_TLS_BUNDLE_FILE "
            "(or RUNTIME_TLS_BUNDLE)"
        )
    with _root_files(bundle) as files:
        try:
            uvloop.run(etcd_auth.ensure(endpoints, files, sets))
        except Exception as exc:  # one line: the launcher shows it
            print(f"runtime: db-init failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    print(f"db-init: authentication on; users {', '.join(etcd_auth.user_name(s) for s in sets)}")
    return 0


def _db_member(args: argparse.Namespace) -> int:
    from runtime.storage import etcd_membership

    logs.configure("info")
    try:
        endpoints = list(config.parse_urls(args.endpoints))
        peer = list(config.parse_urls(args.peer_url or ""))
        if args.action == "add" and len(peer) != 1:
            raise ValueError(f"add needs one peer URL (https://HOST:2380), got {args.peer_url!r}")
        bundle = _root_bundle()
    except ValueError as exc:
        return refuse(f"db-member: {exc}")
    if bundle.get("node") is None or not endpoints:
        return refuse("db-member: expected --endpoints and root's certificate in RUNTIME_TLS_BUNDLE_FILE")
    with _root_files(bundle) as files:
        try:
            if args.action == "add":
                done = uvloop.run(etcd_membership.add(endpoints, files, args.name, peer[0]))
            else:
                done = uvloop.run(etcd_membership.remove(endpoints, files, args.name))
        except Exception as exc:  # one line: the launcher shows it
            print(f"runtime: db-member {args.action} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    print(f"db-member: {done}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

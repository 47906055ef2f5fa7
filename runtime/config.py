"""Settings: parse and validate, then hand out one frozen :class:`Config`.

Sources, later ones winning: a YAML file (``--config``), ``RUNTIME_<NAME>`` environment
variables, then command-line flags. Every setting has one name used in all three places::

    services: kv,queue          # YAML
    RUNTIME_SERVICES=kv,queue   # environment
    --services kv,queue         # flag

Nothing here touches the disk or the network except reading the YAML file and secret files
named in settings. Every problem found is reported, each naming its setting, in one line.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from runtime.exceptions import ConfigError
from runtime.names import ROLES, ROUTED_SERVICES, SERVICES

_HOSTPORT = re.compile(r"^(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.\-]+):(?P<port>\d{1,5})$")
_DURATION = re.compile(r"^(?P<n>\d+(?:\.\d+)?)(?P<unit>ms|s|m|h|d)?$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
KUBERNETES_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")  # RFC 1123 label: namespaces, pods

# -- parsers: each takes the raw value (str from env/flags, or YAML types) and returns the
#    typed value, or raises ValueError with "expected ..., got ..." ------------------------


def parse_kubernetes_name(raw: object) -> str:
    """A namespace name (RFC 1123 label).

    >>> parse_kubernetes_name("mm-run-1")
    'mm-run-1'
    """
    text = str(raw).strip()
    if not KUBERNETES_NAME.fullmatch(text):
        raise _expected("a Kubernetes namespace name (lowercase letters, digits, '-', at most 63)", raw)
    return text


def _expected(what: str, raw: object) -> ValueError:
    return ValueError(f"expected {what}, got {raw!r}")


def _words(raw: object) -> list[str]:
    if isinstance(raw, (list, tuple)):
        return [str(w).strip() for w in raw]
    return [w.strip() for w in str(raw).split(",")] if str(raw).strip() else []


def parse_services(raw: object) -> tuple[str, ...]:
    names = _words(raw)
    if not names:
        raise ValueError(f"no services given; expected a comma-separated list of {', '.join(SERVICES)}, or 'all'")
    if any(not n for n in names):
        raise _expected(f"a comma-separated list of {', '.join(SERVICES)}, or 'all'", raw)
    if names == ["all"]:
        return SERVICES
    unknown = [n for n in names if n not in SERVICES + ROLES]
    if unknown:
        raise ValueError(
            f"unknown service {', '.join(map(repr, unknown))}; expected some of {', '.join(SERVICES)}, or 'all' "
            f"(roles: {', '.join(ROLES)})"
        )
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"service {', '.join(map(repr, duplicated))} given more than once")
    return tuple(sorted(names))


def parse_hostport(raw: object) -> tuple[str, int]:
    found = _HOSTPORT.match(str(raw).strip())
    if not found or not 0 < int(found["port"]) < 65536:
        raise _expected("HOST:PORT with a port from 1 to 65535", raw)
    return found["host"].strip("[]"), int(found["port"])


def parse_peers(raw: object) -> dict[str, tuple[str, ...]]:
    """``kv=10.0.0.5:8443,10.0.0.6:8443;auth=a1:8443`` or a YAML mapping of lists."""
    groups: dict[str, list[str]] = {}
    if isinstance(raw, Mapping):
        groups = {str(k): _words(v) for k, v in raw.items()}
    else:
        for part in filter(None, (p.strip() for p in str(raw).split(";"))):
            name, sep, listed = part.partition("=")
            if not sep:
                raise _expected("SERVICE=HOST:PORT[,HOST:PORT...] groups separated by ';'", raw)
            groups[name.strip()] = _words(listed)
    peers: dict[str, tuple[str, ...]] = {}
    for service, addresses in groups.items():
        if service not in ROUTED_SERVICES:
            raise ValueError(f"peers for unknown service {service!r}; expected some of {', '.join(ROUTED_SERVICES)}")
        if not addresses:
            raise ValueError(f"no address given for {service!r}")
        for address in addresses:
            parse_hostport(address)
        peers[service] = tuple(addresses)
    return peers


def parse_urls(raw: object) -> tuple[str, ...]:
    urls = _words(raw)
    bad = [u for u in urls if not re.match(r"^https?://[^/\s]+$", u)]
    if bad:
        raise _expected("comma-separated http(s)://HOST:PORT URLs", ", ".join(bad))
    return tuple(urls)


def parse_tls_bundle(raw: object) -> str:
    """The launcher's JSON of PEMs (see :class:`runtime.security.certs.Bundle`), checked now."""
    from runtime.security.certs import Bundle  # the certificate stack, only when a bundle is given

    text = str(raw)
    Bundle.load(text)
    return text


def parse_addresses(raw: object) -> tuple[str, ...]:
    addresses = _words(raw)
    for address in addresses:
        parse_hostport(address)
    return tuple(addresses)


def parse_networks(raw: object) -> tuple[str, ...]:
    """Addresses or networks (``10.0.0.10``, ``10.0.0.0/24``) whose connections start with a
    PROXY protocol header: the load balancers in front of this node."""
    import ipaddress

    entries = _words(raw)
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise _expected("comma-separated IP addresses or networks (10.0.0.10, 10.0.0.0/24)", entry) from None
    return tuple(entries)


def parse_duration(raw: object) -> float:
    """``"90s"`` -> 90.0, ``"2h"`` -> 7200.0, ``3`` -> 3.0."""
    found = _DURATION.match(str(raw).strip())
    if not found or float(found["n"]) <= 0:
        raise _expected("a positive duration such as 30s, 5m, 24h or 7d", raw)
    return float(found["n"]) * _UNITS[found["unit"]]


def _duration_up_to(limit: float, words: str) -> Callable[[object], float]:
    """A duration no longer than ``limit`` seconds (certificates and tokens are dated, and
    dates end in year 9999: a longer one would pass here and crash a node later)."""

    def parse(raw: object) -> float:
        seconds = parse_duration(raw)
        if seconds > limit:
            raise _expected(f"a duration of at most {words}", raw)
        return seconds

    return parse


def _int_between(low: int, high: int) -> Callable[[object], int]:
    def parse(raw: object) -> int:
        value = _int(raw)
        if not low <= value <= high:
            raise _expected(f"a whole number from {low} to {high}", raw)
        return value

    return parse


def parse_bool(raw: object) -> bool:
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise _expected("true or false", raw)


def _choice(*options: str) -> Callable[[object], str]:
    def parse(raw: object) -> str:
        if str(raw) not in options:
            raise _expected(" or ".join(options), raw)
        return str(raw)

    return parse


def _text(raw: object) -> str:
    text = str(raw).strip()
    if not text:
        raise _expected("a non-empty value", raw)
    return text


def _int(raw: object) -> int:
    try:
        return int(str(raw))
    except ValueError:
        raise _expected("a whole number", raw) from None


def _secret_file(raw: object) -> str:
    path = Path(str(raw))
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None


# -- the settings: one row each, a field of Config with its parser, default and meaning ------

_MISSING: Any = dataclasses.MISSING


def setting(parse: Callable[[object], Any], default: Any = _MISSING, *, help: str, shown: str = "") -> Any:
    """A field of :class:`Config`: ``parse`` turns what the user wrote into its value,
    ``default`` is the value when nothing is written, ``help`` says what it means (docs/runtime.md's
    table is made from these), ``shown`` how the table shows the default when not as written."""
    metadata = {"parse": parse, "help": help, "shown": shown}
    if isinstance(default, dict):
        return dataclasses.field(default_factory=dict, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _path(raw: object) -> Path:
    return Path(_text(raw))


def _optional_text(raw: object) -> str | None:
    return _text(raw)


@dataclass(frozen=True)
class Config:
    services: tuple[str, ...] = setting(
        parse_services, help="`auth,ingress,kv,queue` or `all` (roles: `envoy`, `xds`)", shown="(none: refuses)"
    )
    listen: tuple[str, int] = setting(
        parse_hostport,
        ("127.0.0.1", 8443),
        help="HOST:PORT of the API",
        shown="`127.0.0.1:8443` (image: `0.0.0.0:8443`)",
    )
    data_dir: Path = setting(_path, Path("data"), help="node-local files: SQLite DB, certificates, generated secrets")
    node_name: str = setting(_text, "", help="this node's name", shown="the host name")
    advertise: tuple[str, ...] = setting(
        lambda raw: tuple(_words(raw)), (), help="names and addresses other nodes reach it by (its certificate's)"
    )
    mode: str = setting(
        _choice("standalone", "cluster"),
        "standalone",
        help="`cluster`: the DB is shared, so `db_backend: etcd` is required",
    )
    db_backend: str = setting(_choice("sqlite", "etcd"), "sqlite", help="`sqlite` or `etcd`")
    db_endpoints: tuple[str, ...] = setting(
        parse_urls, (), help="`https://HOST:2379,...` for etcd (TLS, this node's certificate as its DB user)"
    )
    db_member_name: str | None = setting(_optional_text, None, help="host one etcd member beside the runtime: its name")
    db_member_host: str | None = setting(_optional_text, None, help="that member's address")
    db_initial_cluster: str | None = setting(
        _optional_text, None, help="`NAME=https://HOST:2380,...`: every member, this one included"
    )
    db_initial_cluster_state: str = setting(
        _choice("new", "existing"),
        "new",
        help="`existing`: the member joins a running cluster that has added it (`runtime db-member add`), "
        "with an empty data dir; etcd reads it only then",
    )
    db_election_timeout_ms: int = setting(_int_between(100, 50_000), 1000, help="the member's election timeout")
    db_heartbeat_ms: int = setting(_int_between(10, 5_000), 100, help="the member's heartbeat interval")
    peers: Mapping[str, tuple[str, ...]] = setting(
        parse_peers, {}, help="`kv=HOST:PORT,...;auth=...;queue=...`: where ingress forwards what it does not run"
    )
    insecure_http: bool = setting(parse_bool, False, help="plain HTTP (flag `--insecure-http`); logs a warning")
    cluster_secret: str | None = dataclasses.field(
        default=None,
        repr=False,
        metadata={
            "parse": _text,
            "help": "seals the token-signing keys (nodes that run `auth`) and a CA kept in the DB",
            "shown": "generated (standalone only)",
        },
    )
    admin_password: str | None = dataclasses.field(
        default=None,
        repr=False,
        metadata={"parse": _text, "help": "the first admin's password", "shown": "generated into `data_dir`"},
    )
    tls_bundle: str | None = dataclasses.field(
        default=None,
        repr=False,
        metadata={
            "parse": parse_tls_bundle,
            "help": "the launcher's JSON of PEMs: `ca`, `node_cert`, `node_key`, a member's `peer_cert`/`peer_key`, "
            "an issuer's `ca_key`",
            "shown": "",
        },
    )
    issuers: tuple[str, ...] = setting(
        parse_addresses, (), help="`HOST:PORT,...` of nodes holding the CA key, where this node renews its certificates"
    )
    token_ttl: float = setting(_duration_up_to(30 * 86400, "30d"), 3600.0, help="bearer token lifetime", shown="`1h`")
    signing_key_rotation: float = setting(
        _duration_up_to(3650 * 86400, "3650d"), 7 * 86400.0, help="a signing key's age before the next", shown="`7d`"
    )
    cert_lifetime: float = setting(
        _duration_up_to(3650 * 86400, "3650d"), 86400.0, help="node certificate lifetime; renewed at 2/3", shown="`24h`"
    )
    ca_lifetime: float = setting(
        _duration_up_to(36500 * 86400, "36500d"), 3650 * 86400.0, help="a CA this node makes", shown="`3650d`"
    )
    metrics_public: bool = setting(parse_bool, False, help="serve `/metrics` without a token")
    queue_max_attempts: int = setting(
        _int_between(1, 1000), 20, help="claims without an ack after which a job is dead-lettered"
    )
    max_connections: int = setting(
        _int_between(1, 100_000), 1024, help="open connections a node (and Envoy, and the gRPC port) holds"
    )
    idle_timeout: float = setting(
        _duration_up_to(3600, "1h"), 15.0, help="a connection idle this long is closed", shown="`15s`"
    )
    handshake_timeout: float = setting(
        _duration_up_to(60, "60s"), 10.0, help="TLS handshake (and PROXY header) deadline", shown="`10s`"
    )
    header_timeout: float = setting(
        _duration_up_to(60, "60s"), 5.0, help="from a request's first byte to the end of its headers", shown="`5s`"
    )
    body_timeout: float = setting(
        _duration_up_to(600, "10m"), 30.0, help="from the end of the headers to the end of the body", shown="`30s`"
    )
    discovery: bool = setting(parse_bool, False, help="register this node's services under etcd leases")
    endpoint_source: str = setting(
        _choice("db", "kubernetes"), "db", help="where an xds node finds endpoints: DB leases or EndpointSlices"
    )
    kubernetes_namespace: str = setting(
        parse_kubernetes_name, "default", help="the namespace whose EndpointSlices xds watches"
    )
    xds_port: int = setting(_int_between(1, 65535), 18000, help="an xds node's ADS port")
    xds_servers: tuple[str, ...] = setting(parse_addresses, (), help="an envoy node's control planes, HOST:PORT,...")
    envoy_port: int = setting(_int_between(1, 65535), 8443, help="the port Envoy takes client calls on")
    envoy_admin_port: int = setting(_int_between(1, 65535), 9901, help="Envoy's admin API (loopback)")
    proxy_port: int = setting(
        _int_between(0, 65535), 0, help="a port for balancers: PROXY protocol v2 first (with `trusted_proxies`)"
    )
    grpc_port: int = setting(
        _int_between(0, 65535), 8445, help="kv and queue over gRPC (`0`: off); where kv or queue runs"
    )
    trusted_proxies: tuple[str, ...] = setting(parse_networks, (), help="addresses or networks allowed on `proxy_port`")
    log_level: str = setting(_choice("debug", "info", "warning", "error"), "info", help="the log's level")
    clock_skew_file: Path | None = setting(
        _path, None, help="test only: a file whose seconds (`+300`) step this node's wall clock (runtime/clock.py)"
    )
    unsafe_fault: str | None = setting(
        _choice("ack-without-commit", "stale-reads"), None, help="test only: prove the checkers catch these"
    )

    @property
    def listen_host(self) -> str:
        return self.listen[0]

    @property
    def listen_port(self) -> int:
        return self.listen[1]

    @property
    def scheme(self) -> str:
        return "http" if self.insecure_http else "https"

    @property
    def replicated(self) -> bool:
        return self.mode == "cluster"

    @property
    def db_tls(self) -> bool:
        """The DB link is TLS with client certificates (``https://`` endpoints)."""
        return self.db_backend == "etcd" and all(e.startswith("https://") for e in self.db_endpoints)


SETTINGS = tuple(dataclasses.fields(Config))
FILE_ALIASES = {f"{name}_file": name for name in ("cluster_secret", "admin_password", "tls_bundle")}


def _from_file(target: str) -> Callable[[object], Any]:
    """``X_file``: the file's text, parsed as ``X`` is."""

    def parse(raw: object) -> Any:
        return PARSERS[target](_secret_file(raw))

    return parse


PARSERS: dict[str, Callable[[object], Any]] = {
    **{f.name: f.metadata["parse"] for f in SETTINGS},
    **{alias: _from_file(target) for alias, target in FILE_ALIASES.items()},
}
SECRET_SETTINGS = frozenset({f.name for f in SETTINGS if not f.repr} | set(FILE_ALIASES))


def settings_table() -> str:
    """docs/runtime.md's table of settings, made from :class:`Config` (a test keeps them equal).

    >>> settings_table().splitlines()[2].startswith("| `services` | (none: refuses) |")
    True
    """
    aliases = {target: alias for alias, target in FILE_ALIASES.items()}
    rows = ["| setting | default | meaning |", "|---|---|---|"]
    for f in SETTINGS:
        name = f"`{f.name}`" + (f" / `{aliases[f.name]}`" if f.name in aliases else "")
        rows.append(f"| {name} | {f.metadata['shown'] or _shown(f.default)} | {f.metadata['help']} |")
    return "\n".join(rows) + "\n"


def default(name: str) -> Any:
    """A setting's default value (what a node uses when nothing is written)."""
    return next(f.default for f in SETTINGS if f.name == name)


def _shown(value: object) -> str:
    if value is dataclasses.MISSING or value is None or value == ():
        return ""
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def gather(*, file: Path | None, env: Mapping[str, str], flags: Mapping[str, object]) -> dict[str, object]:
    """Merge the three sources into one raw mapping (YAML < env < flags)."""
    raw: dict[str, object] = {}
    if file is not None:
        raw.update(_read_yaml(file))
    for name in PARSERS:
        if f"RUNTIME_{name.upper()}" in env:
            raw[name] = env[f"RUNTIME_{name.upper()}"]
    raw.update({k: v for k, v in flags.items() if v is not None})
    return raw


def _read_yaml(file: Path) -> dict[str, object]:
    try:
        loaded = yaml.safe_load(file.read_text())
    except OSError as exc:
        raise ConfigError([f"config: cannot read {file}: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"config: {file} is not UTF-8 text (byte {exc.start}); save it as UTF-8"]) from None
    except RecursionError:
        raise ConfigError([f"config: {file} is nested too deeply; settings are a flat mapping"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"config: {file} is not valid YAML: {str(exc).splitlines()[0]}"]) from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError([f"config: {file} must hold a mapping of setting: value, found {type(loaded).__name__}"])
    return {str(k): v for k, v in loaded.items()}


def build(raw: Mapping[str, object]) -> Config:
    """Parse every setting, check them together, and return the Config or raise ConfigError."""
    problems: list[str] = []
    values: dict[str, Any] = {}
    for name, value in raw.items():
        parser = PARSERS.get(name)
        if parser is None:
            problems.append(f"{name}: unknown setting; expected one of {', '.join(sorted(PARSERS))}")
            continue
        try:
            values[name] = parser(value)
        except ValueError as exc:
            problems.append(f"{name}: {exc}")
    if "services" not in raw:
        problems.insert(
            0, f"services: no services given; expected a comma-separated list of {', '.join(SERVICES)}, or 'all'"
        )
    if problems:
        raise ConfigError(problems)
    for alias, target in FILE_ALIASES.items():  # a value given directly wins over its file
        from_file = values.pop(alias, None)
        values.setdefault(target, from_file)
    values["node_name"] = values.get("node_name") or socket.gethostname()
    built = Config(**values)
    problems = cross_check(built)
    if problems:
        raise ConfigError(problems)
    return built


def cross_check(c: Config) -> list[str]:
    """What no single setting can say alone: every problem, each naming its setting."""
    problems = _check_db(c) + _check_member(c) + _check_bundle(c) + _check_ports(c)
    if c.peers and not c.replicated:
        problems.append("peers: forwarding to peers needs mode 'cluster' (a shared DB); expected mode: cluster")
    if "ingress" in c.services:
        missing = [s for s in ROUTED_SERVICES if s not in c.services and s not in c.peers]
        if missing:
            problems.append(
                f"peers: ingress routes to {', '.join(missing)}, which this node does not run; "
                f"expected peers for {', '.join(missing)}"
            )
    if "envoy" in c.services and not c.xds_servers:
        problems.append("xds_servers: an envoy node needs its control planes (HOST:PORT,...)")
    if ("envoy" in c.services or "xds" in c.services or c.discovery) and c.db_backend != "etcd":
        problems.append("discovery: registrations live under etcd leases; expected db_backend: etcd")
    if c.signing_key_rotation <= c.token_ttl:
        problems.append("signing_key_rotation: expected longer than token_ttl, so a key outlives the tokens it signed")
    if c.cert_lifetime >= c.ca_lifetime:
        problems.append("cert_lifetime: expected shorter than ca_lifetime; a node certificate cannot outlive its CA")
    if c.db_election_timeout_ms < 5 * c.db_heartbeat_ms:
        problems.append("db_election_timeout_ms: expected at least 5 x db_heartbeat_ms (etcd's rule)")
    return problems


def _check_db(c: Config) -> list[str]:
    problems = []
    if c.replicated and c.db_backend != "etcd":
        problems.append("db_backend: mode 'cluster' shares one DB between nodes; expected 'etcd', got 'sqlite'")
    if c.db_backend == "etcd" and not c.db_endpoints:
        problems.append("db_endpoints: db_backend 'etcd' needs its endpoints; expected https://HOST:2379[,...]")
    if len({e.split(":", 1)[0] for e in c.db_endpoints}) > 1:
        problems.append("db_endpoints: expected every endpoint https:// (or, unsecured, every one http://)")
    if c.replicated and seals(c.services, c.tls_bundle) and not c.cluster_secret:
        problems.append(
            "cluster_secret: in mode 'cluster' a node that runs auth (or has no tls_bundle) needs the "
            "secret every such node shares (cluster_secret_file, or RUNTIME_CLUSTER_SECRET)"
        )
    if c.cluster_secret is not None and len(c.cluster_secret) < 16:
        problems.append(f"cluster_secret: expected at least 16 characters, got {len(c.cluster_secret)}")
    return problems


def _check_ports(c: Config) -> list[str]:
    problems = []
    if bool(c.proxy_port) != bool(c.trusted_proxies):
        problems.append(
            "proxy_port: the balancers' port (PROXY protocol) and trusted_proxies, their addresses, go together"
        )
    taken = [name for name, port in (("listen", c.listen_port), ("proxy_port", c.proxy_port)) if port == c.grpc_port]
    if c.grpc_port and taken:
        problems.append(
            f"grpc_port: {c.grpc_port} is also the {taken[0]} port; expected a port of its own, or 0 (no gRPC)"
        )
    return problems


def seals(services: tuple[str, ...], tls_bundle: str | None) -> bool:
    """Whether a node opens what the cluster secret seals: the token-signing keys (``auth``
    nodes sign), or the CA kept in the DB when no launcher gave it a bundle. No other node
    needs the secret, so none is given it.

    >>> seals(("kv",), "{...}"), seals(("auth", "kv"), "{...}"), seals(("kv",), None)
    (False, True, True)
    """
    return "auth" in services or tls_bundle is None


def _check_bundle(c: Config) -> list[str]:
    if c.tls_bundle is None:
        return []
    from runtime.security.certs import Bundle

    if Bundle.load(c.tls_bundle).ca_key_pem is None and not c.issuers:
        return ["issuers: this node's bundle has no CA key, so it needs issuer addresses (HOST:PORT,...) to renew"]
    return []


def _check_member(c: Config) -> list[str]:
    if c.db_member_name is None and c.db_initial_cluster is None:
        return []
    if c.tls_bundle is not None:
        from runtime.security.certs import Bundle

        if Bundle.load(c.tls_bundle).get("peer") is None:
            return ["tls_bundle: a DB member needs peer_cert and peer_key in its bundle"]
    if c.db_member_name is None or c.db_initial_cluster is None or c.db_member_host is None:
        return [
            "db_member_name: hosting a DB member needs db_member_name, db_member_host and db_initial_cluster together"
        ]
    members = dict(part.split("=", 1) for part in c.db_initial_cluster.split(",") if "=" in part)
    if c.db_member_name not in members:
        return [
            f"db_initial_cluster: expected NAME=https://HOST:2380,... including this member {c.db_member_name!r}, "
            f"got {c.db_initial_cluster!r}"
        ]
    return []


def load(
    *, file: Path | None = None, env: Mapping[str, str] | None = None, flags: Mapping[str, object] | None = None
) -> Config:
    """The one way to get a Config: gather the sources, then :func:`build`."""
    return build(gather(file=file, env=os.environ if env is None else env, flags=flags or {}))

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

import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from runtime.exceptions import ConfigError

SERVICES = ("auth", "ingress", "kv", "queue")
ROUTED_SERVICES = ("auth", "kv", "queue")
# Roles a node may take besides the services ('all' does not include them): the xDS control
# plane, and the Envoy front door it configures (the runtime supervises the Envoy process).
ROLES = ("envoy", "xds")
_HOSTPORT = re.compile(r"^(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.\-]+):(?P<port>\d{1,5})$")
_DURATION = re.compile(r"^(?P<n>\d+(?:\.\d+)?)(?P<unit>ms|s|m|h|d)?$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


@dataclass(frozen=True)
class Config:
    services: tuple[str, ...]
    listen_host: str = "127.0.0.1"
    listen_port: int = 8443
    data_dir: Path = Path("data")
    node_name: str = "node"
    advertise: tuple[str, ...] = ()
    mode: str = "standalone"
    db_backend: str = "sqlite"
    db_endpoints: tuple[str, ...] = ()
    db_member_name: str | None = None
    db_member_host: str | None = None
    db_initial_cluster: str | None = None
    db_election_timeout_ms: int = 1000
    db_heartbeat_ms: int = 100
    peers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    insecure_http: bool = False
    cluster_secret: str | None = field(default=None, repr=False)
    admin_password: str | None = field(default=None, repr=False)
    tls_bundle: str | None = field(default=None, repr=False)
    issuers: tuple[str, ...] = ()
    token_ttl: float = 3600.0
    signing_key_rotation: float = 7 * 86400.0
    cert_lifetime: float = 86400.0
    ca_lifetime: float = 3650 * 86400.0
    metrics_public: bool = False
    queue_max_attempts: int = 20
    max_connections: int = 1024
    idle_timeout: float = 15.0
    handshake_timeout: float = 10.0
    header_timeout: float = 5.0
    body_timeout: float = 30.0
    discovery: bool = False
    endpoint_source: str = "db"
    kubernetes_namespace: str = "default"
    xds_port: int = 18000
    xds_servers: tuple[str, ...] = ()
    envoy_port: int = 8443
    envoy_admin_port: int = 9901
    proxy_port: int = 0
    grpc_port: int = 8445
    trusted_proxies: tuple[str, ...] = ()
    log_level: str = "info"
    unsafe_fault: str | None = None

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


# -- parsers: each takes the raw value (str from env/flags, or YAML types) and returns the
#    typed value, or raises ValueError with "expected ..., got ..." ------------------------


def _kubernetes_name(raw: object) -> str:
    """A namespace name (RFC 1123 label).

    >>> _kubernetes_name("mm-run-1")
    'mm-run-1'
    """
    text = str(raw).strip()
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", text):
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


PARSERS: dict[str, Callable[[object], Any]] = {
    "services": parse_services,
    "listen": parse_hostport,
    "data_dir": lambda raw: Path(_text(raw)),
    "node_name": _text,
    "advertise": lambda raw: tuple(_words(raw)),
    "mode": _choice("standalone", "cluster"),
    "db_backend": _choice("sqlite", "etcd"),
    "db_endpoints": parse_urls,
    "db_member_name": _text,
    "db_member_host": _text,
    "db_initial_cluster": _text,
    "db_election_timeout_ms": _int_between(100, 50_000),  # etcd's own bounds
    "db_heartbeat_ms": _int_between(10, 5_000),
    "peers": parse_peers,
    "insecure_http": parse_bool,
    "cluster_secret": _text,
    "cluster_secret_file": _secret_file,
    "admin_password": _text,
    "admin_password_file": _secret_file,
    "tls_bundle": parse_tls_bundle,
    "tls_bundle_file": lambda raw: parse_tls_bundle(_secret_file(raw)),
    "issuers": parse_addresses,
    "token_ttl": _duration_up_to(30 * 86400, "30d"),
    "signing_key_rotation": _duration_up_to(3650 * 86400, "3650d"),
    "cert_lifetime": _duration_up_to(3650 * 86400, "3650d"),
    "ca_lifetime": _duration_up_to(36500 * 86400, "36500d"),
    "metrics_public": parse_bool,
    "queue_max_attempts": _int_between(1, 1000),
    "max_connections": _int_between(1, 100_000),
    "idle_timeout": _duration_up_to(3600, "1h"),
    "handshake_timeout": _duration_up_to(60, "60s"),
    "header_timeout": _duration_up_to(60, "60s"),
    "body_timeout": _duration_up_to(600, "10m"),
    "proxy_port": _int_between(0, 65535),
    "grpc_port": _int_between(0, 65535),
    "discovery": parse_bool,
    "endpoint_source": _choice("db", "kubernetes"),
    "kubernetes_namespace": _kubernetes_name,
    "xds_port": _int_between(1, 65535),
    "xds_servers": parse_addresses,
    "envoy_port": _int_between(1, 65535),
    "envoy_admin_port": _int_between(1, 65535),
    "trusted_proxies": parse_networks,
    "log_level": _choice("debug", "info", "warning", "error"),
    "unsafe_fault": _choice("ack-without-commit", "stale-reads"),
}
SECRET_SETTINGS = frozenset(
    {"cluster_secret", "cluster_secret_file", "admin_password", "admin_password_file", "tls_bundle", "tls_bundle_file"}
)


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
    _fold_aliases(values)
    problems.extend(_cross_check(values))
    if problems:
        raise ConfigError(problems)
    return Config(**values)


def _fold_aliases(values: dict[str, Any]) -> None:
    if "listen" in values:
        values["listen_host"], values["listen_port"] = values.pop("listen")
    for secret in ("cluster_secret", "admin_password", "tls_bundle"):
        from_file = values.pop(f"{secret}_file", None)
        values.setdefault(secret, from_file)
    values.setdefault("node_name", socket.gethostname())


def _cross_check(values: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    services: tuple[str, ...] = values["services"]
    cluster = values.get("mode") == "cluster"
    backend = values.get("db_backend", "sqlite")
    if cluster and backend != "etcd":
        problems.append("db_backend: mode 'cluster' shares one DB between nodes; expected 'etcd', got 'sqlite'")
    endpoints: tuple[str, ...] = values.get("db_endpoints", ())
    if backend == "etcd" and not endpoints:
        problems.append("db_endpoints: db_backend 'etcd' needs its endpoints; expected https://HOST:2379[,...]")
    schemes = {e.split(":", 1)[0] for e in endpoints}
    if len(schemes) > 1:
        problems.append("db_endpoints: expected every endpoint https:// (or, unsecured, every one http://)")
    if cluster and seals(services, values.get("tls_bundle")) and not values.get("cluster_secret"):
        problems.append(
            "cluster_secret: in mode 'cluster' a node that runs auth (or has no tls_bundle) needs the "
            "secret every such node shares (cluster_secret_file, or RUNTIME_CLUSTER_SECRET)"
        )
    secret = values.get("cluster_secret")
    if secret is not None and len(secret) < 16:
        problems.append(f"cluster_secret: expected at least 16 characters, got {len(secret)}")
    peers: Mapping[str, tuple[str, ...]] = values.get("peers", {})
    if peers and not cluster:
        problems.append("peers: forwarding to peers needs mode 'cluster' (a shared DB); expected mode: cluster")
    if "ingress" in services:
        missing = [s for s in ROUTED_SERVICES if s not in services and s not in peers]
        if missing:
            problems.append(
                f"peers: ingress routes to {', '.join(missing)}, which this node does not run; "
                f"expected peers for {', '.join(missing)}"
            )
    problems.extend(_check_member(values))
    problems.extend(_check_bundle(values))
    if "envoy" in services and not values.get("xds_servers"):
        problems.append("xds_servers: an envoy node needs its control planes (HOST:PORT,...)")
    if ("envoy" in services or "xds" in services or values.get("discovery")) and backend != "etcd":
        problems.append("discovery: registrations live under etcd leases; expected db_backend: etcd")
    if bool(values.get("proxy_port")) != bool(values.get("trusted_proxies")):
        problems.append(
            "proxy_port: the balancers' port (PROXY protocol) and trusted_proxies, their addresses, go together"
        )
    ports = {"listen": values.get("listen_port", 8443), "proxy_port": values.get("proxy_port", 0)}
    grpc_port = values.get("grpc_port", 8445)
    taken = [name for name, port in ports.items() if grpc_port and port == grpc_port]
    if taken:
        problems.append(
            f"grpc_port: {grpc_port} is also the {taken[0]} port; expected a port of its own, or 0 (no gRPC)"
        )
    if values.get("signing_key_rotation", 7 * 86400.0) <= values.get("token_ttl", 3600.0):
        problems.append("signing_key_rotation: expected longer than token_ttl, so a key outlives the tokens it signed")
    if values.get("cert_lifetime", 86400.0) >= values.get("ca_lifetime", 3650 * 86400.0):
        problems.append("cert_lifetime: expected shorter than ca_lifetime; a node certificate cannot outlive its CA")
    if values.get("db_election_timeout_ms", 1000) < 5 * values.get("db_heartbeat_ms", 100):
        problems.append("db_election_timeout_ms: expected at least 5 x db_heartbeat_ms (etcd's rule)")
    return problems


def seals(services: tuple[str, ...], tls_bundle: str | None) -> bool:
    """Whether a node opens what the cluster secret seals: the token-signing keys (``auth``
    nodes sign), or the CA kept in the DB when no launcher gave it a bundle. No other node
    needs the secret, so none is given it.

    >>> seals(("kv",), "{...}"), seals(("auth", "kv"), "{...}"), seals(("kv",), None)
    (False, True, True)
    """
    return "auth" in services or tls_bundle is None


def _check_bundle(values: Mapping[str, Any]) -> list[str]:
    bundle = values.get("tls_bundle")
    if bundle is None:
        return []
    from runtime.security.certs import Bundle

    if Bundle.load(bundle).ca_key_pem is None and not values.get("issuers"):
        return ["issuers: this node's bundle has no CA key, so it needs issuer addresses (HOST:PORT,...) to renew"]
    return []


def _check_member(values: Mapping[str, Any]) -> list[str]:
    name = values.get("db_member_name")
    cluster = values.get("db_initial_cluster")
    if name is None and cluster is None:
        return []
    bundle = values.get("tls_bundle")
    if bundle is not None:
        from runtime.security.certs import Bundle

        if Bundle.load(bundle).get("peer") is None:
            return ["tls_bundle: a DB member needs peer_cert and peer_key in its bundle"]
    if name is None or cluster is None or values.get("db_member_host") is None:
        return [
            "db_member_name: hosting a DB member needs db_member_name, db_member_host and db_initial_cluster together"
        ]
    members = dict(part.split("=", 1) for part in cluster.split(",") if "=" in part)
    if name not in members:
        return [
            f"db_initial_cluster: expected NAME=https://HOST:2380,... including this member {name!r}, got {cluster!r}"
        ]
    return []


def load(
    *, file: Path | None = None, env: Mapping[str, str] | None = None, flags: Mapping[str, object] | None = None
) -> Config:
    """The one way to get a Config: gather the sources, then :func:`build`."""
    return build(gather(file=file, env=os.environ if env is None else env, flags=flags or {}))

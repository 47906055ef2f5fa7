"""Mode files: YAML -> validated, frozen :class:`ModeSpec`. Pure apart from reading the file.

A mode file names its nodes, the services each runs, which nodes host a DB member, an
optional load balancer and per-node resources. Every problem is reported at once, each with
its key::

    scaled.yaml: nodes[3].services: unknown service 'kvv'; expected some of auth, ingress, kv, queue, all
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from topologies.constants import LB_KINDS, ROLES, SERVICES
from topologies.exceptions import NotFound, SpecError

MODES_DIR = Path(__file__).resolve().parent / "modes"
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
_MEMORY = re.compile(r"^\d+[kmg]$")


@dataclass(frozen=True)
class NodeSpec:
    name: str
    services: tuple[str, ...]
    db_member: bool = False

    @property
    def is_edge(self) -> bool:
        return "ingress" in self.services

    @property
    def is_envoy(self) -> bool:
        return "envoy" in self.services


@dataclass(frozen=True)
class LoadBalancerSpec:
    name: str
    kind: str = "haproxy"
    check_interval_ms: int = 500


@dataclass(frozen=True)
class ModeSpec:
    mode: str
    description: str
    db: str
    nodes: tuple[NodeSpec, ...]
    memory: str = "256m"
    load_balancer: LoadBalancerSpec | None = None

    @property
    def members(self) -> tuple[NodeSpec, ...]:
        return tuple(n for n in self.nodes if n.db_member)

    def peers_of(self, service: str) -> tuple[NodeSpec, ...]:
        return tuple(n for n in self.nodes if service in n.services)

    @property
    def edges(self) -> tuple[NodeSpec, ...]:
        return tuple(n for n in self.nodes if n.is_edge)

    def with_nodes(self, nodes: tuple[NodeSpec, ...]) -> ModeSpec:
        """The same mode with these nodes (a scaled run's spec as it runs now)."""
        return ModeSpec(self.mode, self.description, self.db, nodes, self.memory, self.load_balancer)

    def to_dict(self) -> dict[str, Any]:
        """The mode as a mode file says it: ``parse(spec.to_dict())`` gives it back.

        >>> parse(load("ha").to_dict()) == load("ha")
        True
        """
        made: dict[str, Any] = {
            "mode": self.mode,
            "description": self.description,
            "db": self.db,
            "resources": {"memory": self.memory},
            "nodes": [
                {"name": n.name, "services": list(n.services), **({"db_member": True} if n.db_member else {})}
                for n in self.nodes
            ],
        }
        if self.load_balancer is not None:
            lb = self.load_balancer
            made["load_balancer"] = {"name": lb.name, "kind": lb.kind, "check_interval_ms": lb.check_interval_ms}
        return made


def available() -> list[str]:
    return sorted(p.stem for p in MODES_DIR.glob("*.yaml"))


def load(mode: str | Path) -> ModeSpec:
    """Load a mode by name (``ha``) or path (``my/mode.yaml``)."""
    path = Path(mode) if str(mode).endswith((".yaml", ".yml")) else MODES_DIR / f"{mode}.yaml"
    if not path.exists():
        raise NotFound(f"no mode {str(mode)!r}; expected one of {', '.join(available())} or a path to a .yaml file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(path.name, [f"not valid YAML: {str(exc).splitlines()[0]}"]) from None
    return parse(raw, source=path.name)


def parse(raw: Any, *, source: str = "<mode>") -> ModeSpec:
    if not isinstance(raw, dict):
        raise SpecError(source, ["expected a mapping with mode, db and nodes"])
    problems: list[str] = []
    unknown = set(raw) - {"mode", "description", "db", "nodes", "resources", "load_balancer"}
    problems += [f"{key}: unknown key" for key in sorted(unknown)]
    mode = raw.get("mode")
    if not isinstance(mode, str) or not _NAME.match(mode):
        problems.append(f"mode: expected a lower-case name, got {mode!r}")
    db = raw.get("db")
    if db not in ("sqlite", "etcd"):
        problems.append(f"db: expected sqlite or etcd, got {db!r}")
    nodes = _nodes(raw.get("nodes"), problems)
    memory = str((raw.get("resources") or {}).get("memory", "256m"))
    if not _MEMORY.match(memory):
        problems.append(f"resources.memory: expected a size such as 256m, got {memory!r}")
    lb = _load_balancer(raw.get("load_balancer"), problems)
    problems += _check_whole(nodes, db, lb)
    if problems:
        raise SpecError(source, problems)
    return ModeSpec(str(mode), str(raw.get("description", "")), str(db), tuple(nodes), memory, lb)


def _nodes(raw: Any, problems: list[str]) -> list[NodeSpec]:
    if not isinstance(raw, list) or not raw:
        problems.append("nodes: expected a non-empty list")
        return []
    nodes = []
    for i, item in enumerate(raw):
        where = f"nodes[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{where}: expected a mapping with name and services")
            continue
        name = item.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            problems.append(f"{where}.name: expected a lower-case host name, got {name!r}")
            continue
        services = item.get("services")
        if not isinstance(services, list) or not services:
            problems.append(f"{where}.services: expected a non-empty list")
            continue
        expanded = SERVICES if services == ["all"] else tuple(str(s) for s in services)
        bad = [s for s in expanded if s not in SERVICES + ROLES]
        if bad:
            problems.append(
                f"{where}.services: unknown service {bad[0]!r}; expected some of {', '.join(SERVICES)}, all, "
                f"or a role: {', '.join(ROLES)}"
            )
            continue
        extra = set(item) - {"name", "services", "db_member"}
        problems += [f"{where}.{key}: unknown key" for key in sorted(extra)]
        nodes.append(NodeSpec(name, tuple(sorted(set(expanded))), bool(item.get("db_member", False))))
    return nodes


def _load_balancer(raw: Any, problems: list[str]) -> LoadBalancerSpec | None:
    """``kind: haproxy`` (one container the launcher adds, TCP pass-through to the ingress
    nodes) or ``kind: envoy`` (the mode's own ``envoy`` nodes, configured by its ``xds`` node)."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or raw.get("kind", "haproxy") not in LB_KINDS:
        problems.append(f"load_balancer: expected {{name, kind: {' or '.join(LB_KINDS)}, check_interval_ms}}")
        return None
    interval = raw.get("check_interval_ms", 500)
    if not isinstance(interval, int) or not 100 <= interval <= 10_000:
        problems.append(f"load_balancer.check_interval_ms: expected 100..10000, got {interval!r}")
        return None
    return LoadBalancerSpec(str(raw.get("name", "lb")), str(raw.get("kind", "haproxy")), interval)


def _check_whole(nodes: list[NodeSpec], db: Any, lb: LoadBalancerSpec | None) -> list[str]:
    problems = []
    names = [n.name for n in nodes]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        problems.append(f"nodes: name {dupes[0]!r} is used twice")
    members = [n for n in nodes if n.db_member]
    if db == "etcd" and len(members) not in (1, 3, 5):
        problems.append(f"nodes: db etcd needs 1, 3 or 5 db_member nodes, got {len(members)}")
    if db == "sqlite" and (len(nodes) != 1 or members):
        problems.append("db: sqlite is embedded in one node; expected exactly one node and no db_member")
    served = {s for n in nodes for s in n.services}
    envoy = lb is not None and lb.kind == "envoy"
    needed = [s for s in SERVICES if not (envoy and s == "ingress")] + (list(ROLES) if envoy else [])
    missing = [s for s in needed if s not in served]
    if nodes and missing:
        problems.append(f"nodes: no node runs {', '.join(missing)}; every service needs at least one node")
    roles = sorted({s for s in served if s in ROLES})
    if roles and not envoy:
        problems.append(f"nodes: role {roles[0]!r} needs load_balancer: {{kind: envoy}}")
    if lb is not None and lb.name in names:
        problems.append(f"load_balancer.name: {lb.name!r} is also a node name")
    return problems

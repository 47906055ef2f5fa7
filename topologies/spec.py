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
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema

from topologies.constants import LB_KINDS, ROLES, SERVICES
from topologies.exceptions import NotFound, SpecError

MODES_DIR = Path(__file__).resolve().parent / "modes"
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
_MEMORY = re.compile(r"^\d+[kmg]$")
SCHEMA_FILE = "mode.schema.json"  # beside the mode files; each names it for editors (yaml-language-server)


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
    db: str  # sqlite or etcd; SERVICE_DB for a service file's members (the service is its own DB)
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


SERVICE_DB = "service"  # a ModeSpec of a service file's members: no runtime DB, whatever the service
NAME_PATTERN = _NAME.pattern
SERVICE_CHOICES = (*SERVICES, "all", *ROLES)


def _one_of(choices: tuple[str, ...], what: str) -> Any:
    """A string that must be one of ``choices``: an enum in the schema, one line when not."""

    def check(value: str) -> str:
        if value not in choices:
            raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(choices)}")
        return value

    return Annotated[str, AfterValidator(check), WithJsonSchema({"type": "string", "enum": list(choices)})]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class NodeFile(_Strict):
    """One server of the mode."""

    name: str = Field(pattern=NAME_PATTERN, description="a lower-case host name, unique in the mode")
    services: list[_one_of(SERVICE_CHOICES, "service")] = Field(  # type: ignore[valid-type]
        min_length=1,
        description=f"services it runs ({', '.join(SERVICES)}; all), or one role ({', '.join(ROLES)})",
    )
    db_member: bool = Field(False, description="hosts an etcd member (1, 3 or 5 in a mode with db: etcd)")


class LoadBalancerFile(_Strict):
    """The front door: HAProxy (a container added to the mode) or the mode's Envoy nodes."""

    name: str = Field("lb", pattern=NAME_PATTERN)
    kind: _one_of(LB_KINDS, "load balancer kind") = "haproxy"  # type: ignore[valid-type]
    check_interval_ms: int = Field(500, ge=100, le=10_000, description="health checks of the nodes behind it")


class ResourcesFile(_Strict):
    memory: str = Field("256m", pattern=_MEMORY.pattern, description="per node container, e.g. 256m")


class ModeFile(_Strict):
    """A deployment mode of the one image: its nodes, their services, the DB, the front door.
    Beyond this schema: node names are unique, db: etcd needs 1, 3 or 5 db_member nodes,
    db: sqlite exactly one node, every service runs somewhere, roles need kind: envoy."""

    model_config = ConfigDict(title="modematrix mode file")

    mode: str = Field(pattern=NAME_PATTERN, description="the mode's name")
    description: str = ""
    db: _one_of(("sqlite", "etcd"), "db") = Field(  # type: ignore[valid-type]
        description="sqlite: embedded in the one node; etcd: members on the db_member nodes"
    )
    resources: ResourcesFile = ResourcesFile()
    nodes: list[NodeFile] = Field(min_length=1)
    load_balancer: LoadBalancerFile | None = None


def schema() -> dict[str, Any]:
    """The mode file's JSON Schema (``modematrix modes schema``), from the model ``parse``
    validates with; the shipped mode files name it for editors."""
    made = ModeFile.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **made}


def _where(location: tuple[int | str, ...]) -> str:
    """``("nodes", 3, "services", 0)`` -> ``nodes[3].services[0]``."""
    where = ""
    for part in location:
        where += f"[{part}]" if isinstance(part, int) else f".{part}" if where else str(part)
    return where


def _problem(error: Any) -> str:
    where = _where(tuple(error["loc"])) or "(top)"
    kind, message = error["type"], str(error["msg"])
    if kind == "extra_forbidden":
        return f"{where}: unknown key"
    if kind == "missing":
        return f"{where}: required"
    if kind == "value_error":
        message = message.removeprefix("Value error, ")
    elif kind == "string_pattern_mismatch" and where.endswith("memory"):
        message = f"expected a size such as 256m, got {error['input']!r}"
    elif kind == "string_pattern_mismatch":
        message = f"expected a lower-case name (a-z, 0-9 and -, at most 31), got {error['input']!r}"
    elif kind == "too_short":
        message = "expected a non-empty list"
    return f"{where}: {message}"


def parse(raw: Any, *, source: str = "<mode>") -> ModeSpec:
    """Validate ``raw`` (a mode file's data) against :class:`ModeFile`, then as a whole;
    every problem at once, each with its key."""
    if not isinstance(raw, dict):
        raise SpecError(source, ["expected a mapping with mode, db and nodes"])
    try:
        made = ModeFile.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(source, [_problem(e) for e in exc.errors()]) from None
    nodes = [
        NodeSpec(n.name, tuple(sorted(set(SERVICES if n.services == ["all"] else n.services))), n.db_member)
        for n in made.nodes
    ]
    lb = made.load_balancer
    balancer = LoadBalancerSpec(lb.name, lb.kind, lb.check_interval_ms) if lb is not None else None
    problems = _check_whole(nodes, made.db, balancer)
    if problems:
        raise SpecError(source, problems)
    return ModeSpec(made.mode, made.description, made.db, tuple(nodes), made.resources.memory, balancer)


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

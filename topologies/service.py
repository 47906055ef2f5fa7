"""Service files: YAML -> validated, frozen :class:`ServiceSpec`. Pure apart from reading the file.

A service file says how to run a service's image as a cluster of members, whatever the
service is: the image (a tag, or a build context built the content-addressed way), the
member's command and environment, its ports, its data dir, how members find each other,
how to tell that a member is ready and which one leads, the workload that drives it (a
register in :mod:`scenarios.workload`) and its locustfile. The runtime's own file is
``services/runtime.yaml``; ``services/etcd.yaml`` runs etcd alone, from Debian's package.

Templates in ``command``, ``environment``, ``peers`` and ``init`` are filled per member::

    {name} {ip} {index} {run_id} {data_dir} {peers} {ports[client]} {service}

Every problem is reported at once, each with its key::

    etcd.yaml: roles.member.command[2]: unknown placeholder {nmae}; expected one of data_dir, index, ...
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from topologies.exceptions import NotFound, SpecError, UsageError
from topologies.spec import NAME_PATTERN, _problem

SERVICES_DIR = Path(__file__).resolve().parent / "services"
SCHEMA_FILE = "service.schema.json"
PLACEHOLDERS = ("data_dir", "index", "ip", "name", "peers", "ports", "run_id", "service")


@dataclass(frozen=True)
class Probe:
    """How to ask a member something: connect to a port, GET a path, or run a command in it."""

    tcp: str | None = None  # a port's name
    http: str | None = None  # a port's name, with path (and tls)
    path: str = "/"
    tls: bool = False
    exec: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.exec:
            return "exec " + " ".join(self.exec)
        if self.http:
            return f"GET {self.path} over {'https' if self.tls else 'http'} on port {self.http}"
        return f"tcp to port {self.tcp}"


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    description: str
    source: Path  # the file it came from (a build context is relative to it)
    image: str | None  # a tag to run as it is
    build: Path | None  # or a folder with a Dockerfile, FROM ${BASE}: the project's Debian base
    command: tuple[str, ...]
    environment: dict[str, str]
    ports: dict[str, int]
    client_port: str  # the port clients (the workload) use
    data_dir: str
    peer: str  # one member's entry of {peers}
    peer_separator: str
    sizes: tuple[int, ...]
    ready: Probe
    leader: Probe | None
    workload: str
    locustfile: str | None
    memory: str
    init: tuple[str, ...] = ()  # run once in the image on the run's network, once members are up
    # checks the service is documented to fail (check -> why): still run and reported, a
    # finding of one of these is expected (pytest's xfail), of any other a failure
    weaknesses: dict[str, str] | None = None
    path: Path | None = None  # the file itself: a run's record names it, to be attached again

    def context(self, *, name: str, ip: str, index: int, run_id: str, members: list[tuple[str, str]]) -> dict[str, Any]:
        """What a member's templates are filled from; ``members`` is every (name, ip)."""
        return self._filled(run_id, name, ip, index, self.peer_list(members, run_id))

    def peer_list(self, members: Sequence[tuple[str, str]], run_id: str = "") -> str:
        """``{peers}``: how the members find each other, from every (name, address), as the
        file's ``peers`` says (the runtime's: etcd's ``--initial-cluster``)."""
        return self.peer_separator.join(
            self.peer.format(**self._filled(run_id, n, i, k, "")) for k, (n, i) in enumerate(members)
        )

    def _filled(self, run_id: str, name: str, ip: str, index: int, peers: str) -> dict[str, Any]:
        run = {"data_dir": self.data_dir, "ports": self.ports, "run_id": run_id, "service": self.name}
        return run | {"name": name, "ip": ip, "index": index, "peers": peers}

    def member_command(self, context: dict[str, Any]) -> tuple[str, ...]:
        return tuple(part.format(**context) for part in self.command)

    def init_command(self, context: dict[str, Any]) -> tuple[str, ...]:
        """``roles.init``'s command, filled as the first member's (``{peers}``: every member)."""
        return tuple(part.format(**context) for part in self.init)

    def member_environment(self, context: dict[str, Any]) -> dict[str, str]:
        return {key: value.format(**context) for key, value in self.environment.items()}

    def check_size(self, members: int, flag: str = "") -> int:
        """``members``, if this service runs as that many; else a :class:`UsageError`
        naming the sizes it does run as (and ``flag``, the option it came from)."""
        if members not in self.sizes:
            said = f"{flag}: " if flag else ""
            raise UsageError(f"{said}service {self.name} runs as {self._sizes()} members, not {members}")
        return members

    def sizes_from(self, given: str, flag: str) -> tuple[int, ...]:
        """A comma-separated list of sizes (``--members 1,3``), each one this service runs
        as; () for an empty one. The first wrong one is the error."""
        parts = [part.strip() for part in given.split(",") if part.strip()]
        for part in parts:
            if not part.isdigit() or int(part) not in self.sizes:
                raise UsageError(f"{flag}: {part!r}: service {self.name} runs as {self._sizes()} members")
        return tuple(int(part) for part in parts)

    def default_size(self) -> int:
        """The size a run has when none is asked for: 3 if the service allows it."""
        return 3 if 3 in self.sizes else self.sizes[0]

    def _sizes(self) -> str:
        return ", ".join(str(size) for size in self.sizes)

    def no_runtime_api(self, run_id: str) -> NotFound:
        """What asking a run of this service for the runtime's client raises."""
        return NotFound(
            f"run {run_id} runs {self.name}, not the runtime: it has no runtime API; "
            f"its clients are the {self.workload!r} workload's"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "service": self.name,
            "description": self.description,
            "image": self.image,
            "build": str(self.build) if self.build else None,
            "sizes": list(self.sizes),
            "ports": self.ports,
            "client_port": self.client_port,
            "workload": self.workload,
            "locustfile": self.locustfile,
            "ready": self.ready.describe(),
            "leader": self.leader.describe() if self.leader else None,
            "known_weaknesses": self.weaknesses or {},
        }


@cache
def runtime() -> ServiceSpec:
    """The runtime's own service file (``services/runtime.yaml``): the member's command, its
    ports, its data dir and readiness, which both targets start the runtime with."""
    return load("runtime")


def available() -> list[str]:
    return sorted(p.stem for p in SERVICES_DIR.glob("*.yaml"))


def load(service: str | Path) -> ServiceSpec:
    """Load a service by name (``etcd``) or path (``my/service.yaml``)."""
    path = Path(service) if str(service).endswith((".yaml", ".yml")) else SERVICES_DIR / f"{service}.yaml"
    if not path.exists():
        raise NotFound(
            f"no service {str(service)!r}; expected one of {', '.join(available())} or a path to a .yaml file"
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(path.name, [f"not valid YAML: {str(exc).splitlines()[0]}"]) from None
    return replace(parse(raw, source=path.name, where=path.resolve().parent), path=path.resolve())


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ImageFile(_Strict):
    """Exactly one of: an image to run as it is, or a folder to build it from."""

    tag: str | None = Field(None, min_length=1, description="an image reference, e.g. registry.example/team/app:1.2")
    build: str | None = Field(
        None, min_length=1, description="a folder with a Dockerfile (FROM ${BASE}: the project's Debian base)"
    )

    @model_validator(mode="after")
    def _one(self) -> ImageFile:
        if (self.tag is None) == (self.build is None):
            raise ValueError("expected exactly one of tag and build")
        return self


class ProbeFile(_Strict):
    """Exactly one of: tcp (a port's name), http (a port's name, with path and tls), exec."""

    tcp: str | None = None
    http: str | None = None
    path: str = Field("/", pattern=r"^/")
    tls: bool = False
    exec: list[str] | None = Field(None, min_length=1, description="a command run in the member; exit 0: yes")

    @model_validator(mode="after")
    def _one(self) -> ProbeFile:
        if sum(x is not None for x in (self.tcp, self.http, self.exec)) != 1:
            raise ValueError("expected exactly one of tcp, http and exec")
        return self


class RoleFile(_Strict):
    command: list[str] = Field(min_length=1, description="the member's command (after the image's entry point)")
    environment: dict[str, str] = {}


class PeersFile(_Strict):
    """How members find each other: ``{peers}`` is every member's entry, joined."""

    static: str = Field(description="one member's entry, e.g. {name}=http://{ip}:{ports[peer]}")
    separator: str = ","


class ServiceFile(_Strict):
    """A service's image run as a cluster of members, driven by a workload, broken by faults."""

    model_config = ConfigDict(title="modematrix service file")

    service: str = Field(pattern=NAME_PATTERN, description="the service's name")
    description: str = ""
    image: ImageFile
    roles: dict[Literal["member", "init"], RoleFile] = Field(
        description="member: what each member runs; init (optional): run once when the members are up"
    )
    ports: dict[str, int] = Field(min_length=1, description="name -> container port")
    client_port: str = Field(description="the port (a name in ports) the workload's clients use")
    data_dir: str = Field(pattern=r"^/", description="where a member keeps its data (a volume)")
    peers: PeersFile
    sizes: list[Literal[1, 3, 5]] = Field([1, 3, 5], min_length=1, description="cluster sizes it runs as")
    ready: ProbeFile
    leader: ProbeFile | None = Field(None, description="asked of each member: exit 0 / 200 when it leads")
    workload: str = Field(description="the register that drives it (scenarios.workload.WORKLOADS)")
    locustfile: str | None = Field(None, description="its load test, relative to the project")
    memory: str = Field("256m", pattern=r"^\d+[kmg]$")
    known_weaknesses: dict[str, str] = Field(
        {},
        description="checks it is documented to fail (check name -> why, with a reference): run and reported, "
        "a finding of these is expected, of any other a failure",
    )


def schema() -> dict[str, Any]:
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **ServiceFile.model_json_schema()}


def _placeholders(template: str) -> list[str]:
    """The names a template uses (``{ports[client]}`` -> ``ports``); ValueError if malformed."""
    return [field.split("[")[0].split(".")[0] for _, field, _, _ in string.Formatter().parse(template) if field]


def parse(raw: Any, *, source: str = "<service>", where: Path | None = None) -> ServiceSpec:
    """Validate ``raw`` (a service file's data); every problem at once, each with its key."""
    if not isinstance(raw, dict):
        raise SpecError(source, ["expected a mapping with service, image, roles, ports, ready and workload"])
    try:
        made = ServiceFile.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(source, [_problem(e) for e in exc.errors()]) from None
    problems = _check_whole(made)
    if problems:
        raise SpecError(source, problems)
    folder = where or Path.cwd()
    build = (folder / made.image.build).resolve() if made.image.build else None
    if build is not None and not (build / "Dockerfile").is_file():
        raise SpecError(source, [f"image.build: no Dockerfile in {build}"])
    member, init = made.roles["member"], made.roles.get("init")
    return ServiceSpec(
        name=made.service,
        description=made.description,
        source=folder,
        image=made.image.tag,
        build=build,
        command=tuple(member.command),
        environment=dict(member.environment),
        ports=dict(made.ports),
        client_port=made.client_port,
        data_dir=made.data_dir,
        peer=made.peers.static,
        peer_separator=made.peers.separator,
        sizes=tuple(sorted(set(made.sizes))),
        ready=_probe(made.ready),
        leader=_probe(made.leader) if made.leader else None,
        workload=made.workload,
        locustfile=made.locustfile,
        memory=made.memory,
        init=tuple(init.command) if init else (),
        weaknesses=dict(made.known_weaknesses),
    )


def _probe(made: ProbeFile) -> Probe:
    return Probe(made.tcp, made.http, made.path, made.tls, tuple(made.exec or ()))


def _check_whole(made: ServiceFile) -> list[str]:
    problems = []
    if "member" not in made.roles:
        problems.append("roles.member: required")
    names = ", ".join(sorted(made.ports))
    if made.client_port not in made.ports:
        problems.append(f"client_port: {made.client_port!r} is not a port; expected one of {names}")
    for key, port in made.ports.items():
        if not 1 <= port <= 65535:
            problems.append(f"ports.{key}: expected a port (1-65535), got {port}")
    for key, probe in (("ready", made.ready), ("leader", made.leader)):
        named = probe and (probe.tcp or probe.http)
        if named and named not in made.ports:
            problems.append(f"{key}: {named!r} is not a port; expected one of {names}")
    templates = [("peers.static", made.peers.static)]
    for role, spec in made.roles.items():
        templates += [(f"roles.{role}.command[{i}]", part) for i, part in enumerate(spec.command)]
        templates += [(f"roles.{role}.environment.{k}", v) for k, v in spec.environment.items()]
    for key, template in templates:
        try:
            used = _placeholders(template)
        except ValueError as exc:
            problems.append(f"{key}: not a template ({exc}); write {{{{ and }}}} for braces")
            continue
        unknown = [u for u in used if u not in PLACEHOLDERS or u == ""]
        if unknown:
            problems.append(f"{key}: unknown placeholder {{{unknown[0]}}}; expected one of {', '.join(PLACEHOLDERS)}")
    ports_used = {name for _, template in templates for name in _port_names(template)}
    missing = sorted(ports_used - set(made.ports))
    if missing:
        problems.append(f"ports: no port {missing[0]!r}, which a template names; expected one of {names}")
    return problems


def _port_names(template: str) -> list[str]:
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f]
    except ValueError:
        return []
    return [f[len("ports[") : -1] for f in fields if f.startswith("ports[") and f.endswith("]")]

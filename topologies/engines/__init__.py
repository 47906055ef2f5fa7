"""Where containers run, behind one protocol.

    engine = engines.get("docker", reaper=False)

An engine is a class taking ``reaper=`` that implements :class:`Engine`, named in the
``modematrix.engines`` entry point group (``docker = "topologies.engines.docker:DockerEngine"``
in pyproject.toml): another package adds one without a line changed here, and ``--engine``
offers it. ``get`` imports an implementation only when it is asked for, so importing
topologies does not import Docker's SDK.
"""

from __future__ import annotations

import importlib.metadata

from topologies.engines.base import CREATED, EXITED, PAUSED, REMOVED, RUNNING, STOPPED, Engine, Handle, Launch
from topologies.exceptions import NotFound

GROUP = "modematrix.engines"
BUILT_IN = {"docker": "topologies.engines.docker:DockerEngine"}  # when the package's metadata is not installed


def _entries() -> dict[str, importlib.metadata.EntryPoint]:
    found = {name: importlib.metadata.EntryPoint(name, value, GROUP) for name, value in BUILT_IN.items()}
    found.update({entry.name: entry for entry in importlib.metadata.entry_points(group=GROUP)})
    return found


ENGINES = tuple(sorted(_entries()))


def get(name: str = "docker", *, reaper: bool = True) -> Engine:
    """The engine called ``name``; ``reaper`` removes what this process starts if it dies."""
    entry = _entries().get(name)
    if entry is None:
        raise NotFound(f"no engine {name!r}; expected one of {', '.join(ENGINES)}")
    engine: Engine = entry.load()(reaper=reaper)
    return engine


__all__ = [
    "CREATED",
    "ENGINES",
    "EXITED",
    "PAUSED",
    "REMOVED",
    "RUNNING",
    "STOPPED",
    "Engine",
    "Handle",
    "Launch",
    "get",
]

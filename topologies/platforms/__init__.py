"""Where a mode's nodes run, behind one protocol.

    platform = platforms.get("docker", reaper=False)

``get`` imports an implementation only when it is asked for, so importing topologies does
not import Docker's SDK.
"""

from __future__ import annotations

from topologies.constants import PLATFORMS
from topologies.exceptions import NotFound
from topologies.platforms.base import CREATED, EXITED, PAUSED, REMOVED, RUNNING, STOPPED, Handle, Launch, Platform


def get(name: str = "docker", *, reaper: bool = True) -> Platform:
    """The platform called ``name``; ``reaper`` removes what this process starts if it dies."""
    if name == "docker":
        from topologies.platforms.docker import DockerPlatform

        return DockerPlatform(reaper=reaper)
    raise NotFound(f"no platform {name!r}; expected one of {', '.join(PLATFORMS)}")


__all__ = [
    "CREATED",
    "EXITED",
    "PAUSED",
    "REMOVED",
    "RUNNING",
    "STOPPED",
    "Handle",
    "Launch",
    "Platform",
    "get",
]

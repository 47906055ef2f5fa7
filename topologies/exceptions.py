"""Errors of the topology layer.

TopologyError
├── SpecError         a mode file is invalid; lists every offender
├── StartTimeout      a node did not become ready; names it, with its logs and readiness
├── FaultError        a fault could not be applied or healed
└── NotFound          no such run, node or mode
"""

from __future__ import annotations


class TopologyError(Exception):
    """Base of every topology error."""


class SpecError(TopologyError):
    def __init__(self, source: str, problems: list[str]) -> None:
        self.source, self.problems = source, problems
        super().__init__(f"{source}: " + "; ".join(problems))


class StartTimeout(TopologyError):
    pass


class FaultError(TopologyError):
    pass


class NotFound(TopologyError):
    pass

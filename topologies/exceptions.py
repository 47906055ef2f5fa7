"""Errors of the topology layer: one tree, and nothing foreign escapes it.

TopologyError                 exit 1: a run failed
├── UsageError                exit 2: bad input; nothing was started or changed
│   ├── SpecError             a mode file is invalid; lists every offender
│   └── NotFound              no such run, node, mode or engine
├── EngineError               the container engine (Docker) refused or is not there
│   ├── EngineUnavailable     no daemon answers
│   ├── PortInUse             a host port is taken
│   └── ImageFailed           the image could not be built or found
├── StartTimeout              a node did not become ready, or exited while starting
└── FaultError                a fault could not be applied or healed

Docker's, testcontainers' and the image builder's exceptions are translated where they are
raised (``raise X(...) from exc``), so a user sees one line that says what to do.
"""

from __future__ import annotations


class TopologyError(Exception):
    """Base of every topology error. ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class UsageError(TopologyError):
    exit_code = 2


class SpecError(UsageError):
    def __init__(self, source: str, problems: list[str]) -> None:
        self.source, self.problems = source, problems
        super().__init__(f"{source}: " + "; ".join(problems))


class NotFound(UsageError):
    pass


class EngineError(TopologyError):
    pass


class EngineUnavailable(EngineError):
    pass


class PortInUse(EngineError):
    pass


class ImageFailed(EngineError):
    pass


class StartTimeout(TopologyError):
    """``node`` names the node that did not come up; ``logs`` are its last log lines."""

    def __init__(self, message: str, *, node: str = "", logs: str = "") -> None:
        self.node, self.logs = node, logs
        super().__init__(message)


class FaultError(TopologyError):
    pass

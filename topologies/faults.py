"""Faults are values: each says whether it applies to a run, how to apply it, how to heal.

    fault = Partition.isolating("node-2", run)           # topologies.containers.faults
    with faults.injected(run, fault, mark=print):        # health checked before; healed and checked after
        ...traffic...

A fault is typed to the runs it acts on (``Fault[ContainerRun]``, ``Fault[KubeRun]``);
:func:`injected` is the one fault cycle (check, apply, hold, heal, check) used by the pytest
plugin, the scenarios and the load tests; ``mark`` hears ``apply X``, ``heal X``, ``healthy``.
Healing a fault heals it, then everything else the run's target knows of
(:meth:`topologies.run.Run.heal_all`), retrying a failed step, then reports what could not be.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from topologies.exceptions import FaultError, TopologyError
from topologies.run import Run

log = logging.getLogger("topologies.faults")
R = TypeVar("R", bound=Run)
R_contra = TypeVar("R_contra", bound=Run, contravariant=True)


class Fault(Protocol[R_contra]):
    @property
    def name(self) -> str: ...
    def applies_to(self, run: R_contra) -> str | None:
        """None if it applies, else the reason it does not."""

    def apply(self, run: R_contra) -> None: ...
    def heal(self, run: R_contra) -> None: ...


# the largest clock step a clock-skew fault takes, either way (the runtime's failpoint refuses more)
MAX_SKEW_S = 24 * 3600
# the step of `modematrix fault RUN clock-forward|clock-back` and of the catalogue's clock-skew
# scenarios, on containers and on k8s: past a token's 60 s and a lease's seconds, inside a day
SKEW_S = 300


def skew_refusal(seconds: int) -> str | None:
    """Why a clock-skew fault of ``seconds`` does not apply, or None (containers and k8s).

    >>> skew_refusal(300), skew_refusal(0)
    (None, 'clock skew: expected 1 to 86400 seconds either way, got 0')
    """
    if not 0 < abs(seconds) <= MAX_SKEW_S:
        return f"clock skew: expected 1 to {MAX_SKEW_S} seconds either way, got {seconds}"
    return None


@dataclass(frozen=True)
class Both(Generic[R]):
    """Two faults at once (the second applied while the first holds), healed in reverse."""

    first: Fault[R]
    second: Fault[R]

    @property
    def name(self) -> str:
        return f"{self.first.name}+{self.second.name}"

    def applies_to(self, run: R) -> str | None:
        return self.first.applies_to(run) or self.second.applies_to(run)

    def apply(self, run: R) -> None:
        self.first.apply(run)
        self.second.apply(run)

    def heal(self, run: R) -> None:
        try:
            self.second.heal(run)
        finally:
            self.first.heal(run)


def heal(run: R, fault: Fault[R], *, tries: int = 3, backoff: float = 1.0) -> None:
    """Heal ``fault`` and then everything else; a failed step is retried, then reported."""
    last: TopologyError | None = None
    for attempt in range(tries):
        try:
            fault.heal(run)
            run.heal_all()
            return
        except TopologyError as exc:
            last = exc
            log.warning("healing %s failed (try %d of %d): %s", fault.name, attempt + 1, tries, exc)
            time.sleep(backoff * (attempt + 1))  # the engine may need a moment (a container still stopping)
    raise FaultError(f"could not heal {fault.name} after {tries} tries: {last}") from last


def _ignore(event: str) -> None:
    pass


@contextmanager
def injected(
    run: R,
    fault: Fault[R],
    *,
    timeout: float = 120.0,
    mark: Callable[[str], None] = _ignore,
    heal_tries: int = 3,
) -> Iterator[Fault[R]]:
    """The fault cycle: refuse a fault that does not apply, check health, apply, yield; on
    every way out (an exception, KeyboardInterrupt) heal everything, retrying a failed heal
    step, then check health again."""
    reason = fault.applies_to(run)
    if reason:
        raise FaultError(f"{fault.name} does not apply: {reason}")
    run.wait_healthy(timeout=timeout)
    log.info("applying %s", fault.name)
    mark(f"apply {fault.name}")
    try:
        fault.apply(run)
        yield fault
    finally:
        heal(run, fault, tries=heal_tries)
        mark(f"heal {fault.name}")
        run.wait_healthy(timeout=timeout)
        mark("healthy")

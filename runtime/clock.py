"""The wall clock every time-based decision of a node reads: token expiry, queue leases, login
throttling, signing-key rotation, certificate issue and renewal.

It is ``time.time()`` unless ``clock_skew_file`` is set: then plus the seconds that file holds
(``+300``, ``-120``, ``0``; re-read at most once a second). That file is a failpoint, as etcd's
gofail ones are: the clock-skew fault of ``topologies`` writes it to step one node's clock as a
bad NTP step would. The clock is not namespaced, and libfaketime, the usual way to fake it for
one process, breaks CPython 3.11 here (``time.sleep`` fails with EINVAL and GIL hand-offs
stall: docs/measurements.md), so the step is taken at this seam instead. Timers and timeouts
use the monotonic clock and are not affected, as a real step would not affect them.

    >>> clock = WallClock(None)
    >>> abs(clock() - time.time()) < 1, clock.skew
    (True, 0.0)
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

MAX_SKEW_S = 24 * 3600.0
REREAD_S = 1.0
log = logging.getLogger("runtime.clock")


class WallClock:
    def __init__(
        self,
        skew_file: Path | None,
        *,
        base: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._file, self._base, self._monotonic = skew_file, base, monotonic
        self._skew, self._read_at = 0.0, -math.inf
        self._complained = ""

    def __call__(self) -> float:
        return self._base() + self.skew

    @property
    def skew(self) -> float:
        """The offset now in force, in seconds."""
        if self._file is not None and self._monotonic() - self._read_at >= REREAD_S:
            self._read_at = self._monotonic()
            self._skew = self._read(self._file)
        return self._skew

    def _read(self, file: Path) -> float:
        """The file's offset; a missing file is 0; one that says something else keeps the last
        offset and says so once (a fault must not crash the node it steps)."""
        try:
            text = file.read_text().strip()
        except FileNotFoundError:
            return 0.0
        except OSError as exc:
            return self._keep(f"{file}: {exc.strerror}")
        try:
            seconds = float(text)
        except ValueError:
            return self._keep(f"{file}: expected seconds such as +300 or -120, got {text[:40]!r}")
        if not math.isfinite(seconds) or abs(seconds) > MAX_SKEW_S:
            return self._keep(f"{file}: a skew of at most {MAX_SKEW_S:g} seconds either way, got {text[:40]!r}")
        if seconds != self._skew:
            log.warning("wall clock stepped", extra={"fields": {"skew_s": seconds, "file": str(file)}})
        self._complained = ""
        return seconds

    def _keep(self, problem: str) -> float:
        if problem != self._complained:
            log.error("clock skew file ignored", extra={"fields": {"problem": problem, "skew_s": self._skew}})
            self._complained = problem
        return self._skew

"""The one way to wait: poll a condition until it holds, or fail with the evidence.

>>> wait_until(lambda: 3, timeout=1, interval=0.01, message="never")
3
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal, TypeVar

T = TypeVar("T")


class WaitTimeout(TimeoutError):
    """The condition did not hold in time. ``last_error`` is the last exception it raised."""

    def __init__(self, message: str, last_error: BaseException | None, last_value: object) -> None:
        self.last_error, self.last_value = last_error, last_value
        evidence = (
            f"last error: {type(last_error).__name__}: {last_error}" if last_error else f"last value: {last_value!r}"
        )
        super().__init__(f"{message} ({evidence})")


def wait_until(
    condition: Callable[[], T | Literal[False] | None],
    *,
    timeout: float,
    interval: float = 0.1,
    message: str,
    ignore: tuple[type[BaseException], ...] = (Exception,),
) -> T:
    """Call ``condition`` every ``interval`` s until it returns a truthy value, and return it.

    Exceptions in ``ignore`` count as "not yet"; after ``timeout`` s raise :class:`WaitTimeout`
    naming ``message`` and the last error or value seen.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    value: T | Literal[False] | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
            last_error = None
        except ignore as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            raise WaitTimeout(message, last_error, value)
        time.sleep(interval)


def tried(
    action: Callable[[], T],
    *,
    tries: int,
    again: Callable[[Exception], bool],
    between: Callable[[Exception], None] = lambda exc: None,
) -> T:
    """``action()``, called again while it raises an error that ``again`` accepts, at most
    ``tries`` calls in all; ``between(error)`` runs before each new call (free what the failed
    one held, pick other ports, pause). Any other error, or the last one, is raised.

    >>> answers = iter([OSError("busy"), OSError("busy"), 7])
    >>> def action() -> int:
    ...     answer = next(answers)
    ...     if isinstance(answer, Exception):
    ...         raise answer
    ...     return answer
    >>> tried(action, tries=3, again=lambda exc: "busy" in str(exc))
    7
    >>> tried(lambda: 1 // 0, tries=3, again=lambda exc: False)
    Traceback (most recent call last):
    ZeroDivisionError: integer division or modulo by zero
    """
    for attempt in range(1, tries + 1):
        try:
            return action()
        except Exception as exc:
            if attempt == tries or not again(exc):
                raise
            between(exc)
    raise AssertionError("unreachable: the last call returns or raises")

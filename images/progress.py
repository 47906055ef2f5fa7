"""Progress for long steps: a rich status line on a terminal, plain lines elsewhere (CI, logs)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Progress(Protocol):
    def update(self, text: str) -> None: ...


class _Plain:
    def __init__(self, title: str) -> None:
        self.title, self._last = title, 0.0

    def update(self, text: str) -> None:
        if time.monotonic() - self._last > 5:  # at most one line every 5 s
            print(f"  {self.title}: {text[:150]}", file=sys.stderr, flush=True)
            self._last = time.monotonic()


class _Rich:
    def __init__(self, title: str, status: object) -> None:
        self.title, self._status = title, status

    def update(self, text: str) -> None:
        self._status.update(f"[bold]{self.title}[/bold]: {text[:150]}")  # type: ignore[attr-defined]


@contextmanager
def step(title: str, *, quiet: bool = False) -> Iterator[Progress]:
    """Show ``title`` with the latest line of output until the step ends; then print its time."""
    started = time.monotonic()
    if quiet:
        yield _Silent()
        return
    try:
        from rich.console import Console

        console = Console(stderr=True)
        if console.is_terminal:
            with console.status(f"[bold]{title}[/bold]") as status:
                yield _Rich(title, status)
            console.print(f"[green]✓[/green] {title} ({time.monotonic() - started:.1f} s)")
            return
    except ImportError:
        pass
    print(f"> {title}", file=sys.stderr, flush=True)
    yield _Plain(title)
    print(f"  {title}: done in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)


class _Silent:
    def update(self, text: str) -> None:
        return None

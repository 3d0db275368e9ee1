"""Progress for long steps (training, calibration, conversion, timing), on stderr via Rich."""
from __future__ import annotations

import contextlib
import sys
import time
from typing import Callable, Iterator, Optional


class Progress:
    """One line per step: a live bar on a terminal, plain start/finish lines in CI logs."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._live = enabled and sys.stderr.isatty()
        if enabled:
            from rich.console import Console

            self.console = Console(stderr=True, highlight=False)

    @contextlib.contextmanager
    def task(self, description: str, total: Optional[int] = None) -> Iterator[Callable[..., None]]:
        """Yield ``advance(n=1, detail='')``; prints the step and its duration when done.

        The step is also the stage an internal error names (enabled or not).
        """
        from .runner.internal_error import stage

        with stage(description):
            if not self.enabled:
                yield lambda n=1, detail="": None
                return
            yield from self._task(description, total)

    def _task(self, description: str, total: Optional[int]) -> Iterator[Callable[..., None]]:
        t0 = time.perf_counter()
        if self._live:
            from rich.progress import BarColumn, Progress as RichProgress, SpinnerColumn, TextColumn, TimeElapsedColumn

            columns = [SpinnerColumn(), TextColumn("{task.description}")]
            if total:
                columns.append(BarColumn())
            columns += [TextColumn("{task.fields[detail]}"), TimeElapsedColumn()]
            with RichProgress(*columns, console=self.console, transient=True) as bar:
                tid = bar.add_task(description, total=total, detail="")
                yield lambda n=1, detail="": bar.update(tid, advance=n, detail=detail)
        else:
            self.console.print(f"[dim]…[/dim] {description}")
            yield lambda n=1, detail="": None
        self.console.print(f"[green]✓[/green] {description} [dim]({time.perf_counter() - t0:.1f} s)[/dim]")

    def note(self, message: str, style: str = "") -> None:
        if self.enabled:
            self.console.print(f"[{style}]{message}[/{style}]" if style else message)

    def warn(self, message: str) -> None:
        if self.enabled:
            self.console.print(f"[bold yellow]warning:[/bold yellow] {message}")

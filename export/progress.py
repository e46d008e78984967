"""Rich progress for long library work, the CLI's one adapter: library functions take an `aarm.progress.Progress`
callback, `progress(phase, done, total)`.

On a terminal a live bar; into a log or a pipe, where a live bar shows nothing until the end, plain lines at a
steady interval (`aarm.progress.plain_progress`, at most every PLAIN_PROGRESS_INTERVAL_S seconds).
"""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich import progress as rich_progress
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

import aarm.progress
from aarm.progress import Progress, plain_progress
from export.console import console


@contextmanager
def progress_callback(transient: bool = True) -> Iterator[Progress]:
    """Yields `report(phase, done, total)`: on a terminal one bar per phase, updated in place; otherwise
    plain lines."""
    if not console.is_terminal:
        yield plain_progress(lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True))
        return
    with rich_progress.Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), console=console, transient=transient,
    ) as bar:
        tasks: dict[str, Any] = {}

        def report(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done, total=total)
            if done >= total and transient:
                bar.remove_task(tasks.pop(phase))

        yield report


class LoggedProgress(rich_progress.Progress):
    """rich's Progress for commands that drive one bar themselves (bench, predict, parity): when its console is
    not a terminal, it also prints "what: done/total (elapsed s)" at most every PLAIN_PROGRESS_INTERVAL_S."""

    _last_line = 0.0

    def update(self, task_id: Any, **kwargs: Any) -> None:  # type: ignore[override]
        super().update(task_id, **kwargs)
        now = time.monotonic()
        if not self.console.is_terminal and now - self._last_line >= aarm.progress.PLAIN_PROGRESS_INTERVAL_S:
            self._last_line = now
            task = self._tasks[task_id]
            total = f"/{task.total:.0f}" if task.total is not None else ""
            self.console.print(f"{task.description}: {task.completed:.0f}{total} ({task.elapsed or 0:.0f} s)",
                               highlight=False, markup=False)


def progress_bar() -> rich_progress.Progress:
    """One transient bar that the caller adds its task to and advances."""
    return LoggedProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          console=console, transient=True)

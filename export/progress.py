"""Rich progress for long library work, the CLI's one adapter: library functions take an `aarm.progress.Progress`
callback, `progress(phase, done, total)`.

On a terminal a live bar; into a log or a pipe, where a live bar shows nothing until the end, plain lines at a
steady interval (`aarm.progress.plain_progress`, at most every PLAIN_PROGRESS_INTERVAL_S seconds).
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich import progress as rich_progress
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

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

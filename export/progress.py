"""Rich progress for long library work: library functions take a `progress(phase, done, total)` callback."""

from collections.abc import Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from export.console import console


@contextmanager
def progress_callback(transient: bool = True) -> Iterator:
    """Yields `report(phase, done, total)`: one bar per phase, updated in place."""
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), console=console, transient=transient,
    ) as bar:
        tasks: dict[str, int] = {}

        def report(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done, total=total)
            if done >= total and transient:
                bar.remove_task(tasks.pop(phase))

        yield report

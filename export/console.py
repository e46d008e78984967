"""Shared terminal output for the CLI: one rich console, tables from rows."""

from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A table: on a terminal as wide as it is; into a pipe or file at its natural width, columns unsqueezed."""
    table = Table(title=title)
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right", no_wrap=not console.is_terminal)
    for row in rows:
        table.add_row(*(str(v) for v in row))
    if console.is_terminal:
        console.print(table)
    else:
        Console(file=console.file, width=400).print(table)

"""`aarm-export models`: the registered models and their parameter counts (the paper's Table 6)."""

from pathlib import Path
from typing import Annotated

import typer

from aarm.fileio import check_writable, write_json
from aarm.models.summary import parameter_table
from export.console import console, print_table
from export.options import at_least


def models(
    num_classes: Annotated[int, typer.Option(help="Classes of the classifier (UCF101: 101).",
                                             callback=at_least(1))] = 101,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the table as JSON.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite the --json file.")] = False,
) -> None:
    """List every model in every attention variant with its parameter count, RGB and flow stream."""
    if json_out:
        check_writable(json_out, force)
    with console.status("building every model to count its parameters"):
        rows = parameter_table(num_classes)
    print_table(
        f"Parameters, {num_classes} classes (M)",
        ["model", "attention", "RGB", "flow"],
        [(r["model"], r["attention"], f"{r['rgb'] / 1e6:.2f}", f"{r['flow'] / 1e6:.2f}") for r in rows],
    )
    if json_out:
        write_json(json_out, rows)


def register(app: typer.Typer) -> None:
    app.command("models")(models)

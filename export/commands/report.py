"""`aarm-export report`: an HTML page and a Markdown file from bench / parity / regress results."""

from pathlib import Path
from typing import Annotated

import typer

from export.console import console


def report(
    results: Annotated[list[Path], typer.Argument(help="Result JSONs from bench, parity or regress, in any mix.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="HTML file to write; the .md goes beside it.")] = Path(
        "report.html"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing report.")] = False,
) -> None:
    """HTML and Markdown report from bench, parity and regress results.

    Tables and plots (latency distributions, throughput by batch, parity and accuracy per precision) as one
    self-contained HTML file with embedded images, and the same as Markdown with PNGs beside it.
    """
    from runtime.report import build_report

    with console.status("drawing the report"):
        html_path, md_path = build_report(results, out, force=force)
    console.print(f"wrote {html_path} and {md_path}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("report")(report)

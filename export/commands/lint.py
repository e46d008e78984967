"""`aarm-export lint`: what TensorRT's ONNX parser would reject or restrict in a graph."""

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from aarm.fileio import write_json
from export.console import console, err_console


def lint(
    model: Annotated[Path, typer.Argument(help="ONNX graph to check.")],
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the findings as JSON.")] = None,
) -> None:
    """Check an ONNX graph against TensorRT's ONNX parser; exit 1 when any finding is an error."""
    from export.lint import lint_onnx

    findings = lint_onnx(model)
    errors = sum(f.severity == "error" for f in findings)
    if findings:
        table = Table(title=f"TensorRT compatibility: {model}")
        for col in ("severity", "rule", "node", "op", "problem", "fix"):
            table.add_column(col, overflow="fold")
        for f in findings:
            style = "bold red" if f.severity == "error" else "yellow"
            table.add_row(f"[{style}]{f.severity}[/]", f.rule, f.node, f.op, f.message, f.fix)
        console.print(table)
    if json_out:
        write_json(
            json_out,
            {
                "model": str(model),
                "errors": errors,
                "warnings": len(findings) - errors,
                "findings": [f.to_dict() for f in findings],
            },
        )
    summary = f"{model}: {errors} error(s), {len(findings) - errors} warning(s)"
    if errors:
        err_console.print(
            f"[bold red]error:[/] {summary}; TensorRT will not build this graph as it is",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)
    console.print(f"{summary}; TensorRT's parser should accept it", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("lint")(lint)

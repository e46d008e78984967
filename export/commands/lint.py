"""`aarm-export lint`: what TensorRT's ONNX parser would reject or restrict in a graph."""

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from aarm.errors import ConfigError
from aarm.fileio import check_writable, write_json
from export.console import console, err_console

EXAMPLE_NODES = 3  # node names shown per group without --verbose


def _print(table: Table) -> None:
    """On a terminal as wide as it is; into a pipe or file wide enough that rows are not folded to slivers."""
    (console if console.is_terminal else Console(file=console.file, width=200)).print(table)


def _severity(severity: str) -> str:
    style = "bold red" if severity == "error" else "yellow"
    return f"[{style}]{severity}[/]"


def lint(
    model: Annotated[Path, typer.Argument(help="ONNX graph to check.")],
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write every finding as JSON.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="One row per finding instead of one per rule and "
                                                                   "op type.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite the --json file.")] = False,
) -> None:
    """Check an ONNX graph against TensorRT's ONNX parser; exit 1 when any finding is an error.

    Findings are grouped by rule and op type, with a count and a few example nodes; --verbose lists each one.
    """
    from export.lint import group_findings, lint_onnx

    if json_out:
        if json_out.resolve() == model.resolve():
            raise ConfigError(f"--json {json_out} is the graph being checked; give the findings their own file")
        check_writable(json_out, force)
    findings = lint_onnx(model)
    errors = sum(f.severity == "error" for f in findings)
    groups = group_findings(findings)
    if findings and verbose:
        table = Table(title=f"TensorRT compatibility: {model}")
        for col in ("severity", "rule", "node", "op", "problem", "fix"):
            table.add_column(col, overflow="fold")
        for f in findings:
            table.add_row(_severity(f.severity), f.rule, f.node, f.op, f.message, f.fix)
        _print(table)
    elif findings:
        table = Table(title=f"TensorRT compatibility: {model} ({len(findings)} findings in {len(groups)} groups; "
                            "--verbose lists each)")
        for col in ("severity", "rule", "op", "count", "nodes", "problem", "fix"):
            table.add_column(col, overflow="fold", justify="right" if col == "count" else "left")
        for g in groups:
            nodes = ", ".join(g.nodes[:EXAMPLE_NODES])
            if g.count > EXAMPLE_NODES:
                nodes += f", ... (+{g.count - EXAMPLE_NODES} more)"
            problem = g.message if g.same_message or g.count == 1 else f"e.g. {g.message}"
            table.add_row(_severity(g.severity), g.rule, g.op, str(g.count), nodes, problem, g.fix)
        _print(table)
    if json_out:
        write_json(
            json_out,
            {
                "model": str(model),
                "errors": errors,
                "warnings": len(findings) - errors,
                "findings": [f.to_dict() for f in findings],
                "groups": [g.to_dict() for g in groups],
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

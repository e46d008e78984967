"""The `aarm-export` command line: each module of COMMANDS (export/commands) registers its commands here.
Errors from the library print as one line and exit 1; set AARM_DEBUG=1 to see the traceback."""

import os
import sys

import typer

from aarm.errors import AarmError
from export.commands import (
    bench,
    build,
    calibrate,
    data,
    explain,
    export,
    lint,
    models,
    parity,
    pipeline,
    predict,
    regress,
    report,
    stream,
    train,
    triton,
)
from export.console import err_console
from export.help_format import FlagHelpCommand, FlagHelpGroup

app = typer.Typer(
    name="aarm-export",
    help="AARM action recognition: train, export, optimise, quantise, build, verify and benchmark.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    cls=FlagHelpGroup,
)


@app.callback()
def _root() -> None:
    """AARM action recognition: train, export, optimise, quantise, build, verify and benchmark."""


COMMANDS = (bench, build, calibrate, data, explain, export, lint, models, parity, pipeline, predict, regress, report,
            stream, train, triton)
for _module in COMMANDS:
    _module.register(app)
for _command in app.registered_commands:
    if _command.cls in (None, typer.core.TyperCommand):  # flags show as flags in --help, not `--force <bool>`
        _command.cls = FlagHelpCommand


def main() -> None:
    try:
        app()
    except (AarmError, OSError) as exc:
        if os.environ.get("AARM_DEBUG") == "1":
            raise
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()

"""The `aarm-export` command line. Errors from the library print as one line and exit 1;
set AARM_DEBUG=1 to see the traceback."""

import os
import sys

import typer

from aarm.errors import AarmError
from export.commands import models
from export.console import err_console

app = typer.Typer(
    name="aarm-export",
    help="AARM action recognition: train, export, optimise, quantise, build, verify and benchmark.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """AARM action recognition: train, export, optimise, quantise, build, verify and benchmark."""


for module in (models,):
    module.register(app)


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

"""The `aarm-export` command line. Every module in export/commands registers its commands here.
Errors from the library print as one line and exit 1; set AARM_DEBUG=1 to see the traceback."""

import importlib
import os
import pkgutil
import sys

import typer

import export.commands
from aarm.errors import AarmError
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


for _info in sorted(pkgutil.iter_modules(export.commands.__path__), key=lambda m: m.name):
    if not _info.name.startswith("_"):
        importlib.import_module(f"export.commands.{_info.name}").register(app)
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

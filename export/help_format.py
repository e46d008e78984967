"""Help screens that read as usual: bare flags, upper-case arguments in the usage line.

typer's rich help prints a value type beside every option, flags included (`--force <bool>`, even
`--help <bool>`), as if the flag took a value; its plain help leaves flags bare. And its usage line writes
arguments as `{model}` / `[data]`. These command classes give every flag an empty metavar and write
arguments the usual way (`MODEL`, `[DATA]`, `VIDEOS...`). `export.cli` uses them for the app and every
sub-command.
"""

import re
from typing import Any

import typer.core


def _bare_flags(params: list[Any]) -> list[Any]:
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


def _usage_argument(piece: str) -> str:
    """`{model}` -> `MODEL`, `[data]` -> `[DATA]`, `{videos}...` -> `VIDEOS...`."""
    piece = re.sub(r"^\{(\w+)\}", lambda m: m.group(1).upper(), piece)
    return re.sub(r"^\[([a-z_]\w*)\]", lambda m: f"[{m.group(1).upper()}]", piece)


class FlagHelpCommand(typer.core.TyperCommand):
    """A sub-command whose help shows flags without a value type and arguments in upper case."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _bare_flags(super().get_params(ctx))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [_usage_argument(p) for p in super().collect_usage_pieces(ctx)]


class FlagHelpGroup(typer.core.TyperGroup):
    """The command group (`aarm-export --help`), with the same flag rendering."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _bare_flags(super().get_params(ctx))

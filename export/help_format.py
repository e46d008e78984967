"""Help screens and errors that read as usual: bare flags, upper-case arguments in the usage line, flags named.

typer's rich help prints a value type beside every option, flags included (`--force <bool>`, even
`--help <bool>`), as if the flag took a value; its plain help leaves flags bare. And its usage line writes
arguments as `{model}` / `[data]`. These command classes give every flag an empty metavar and write
arguments the usual way (`MODEL`, `[DATA]`, `VIDEOS...`). `export.cli` uses them for the app and every
sub-command.

Library errors name a parameter by its Python name in backquotes ("pass `force` to overwrite it"); a command
re-words each one that is its own option as the flag ("pass --force to overwrite it"). Where the library's name
differs from the option's, LIBRARY_NAMES says which option it is. A hint may name what another command sets
(opening a graph: "export it with `attention_outputs`"); where the running command has no such option, ELSEWHERE
gives the CLI words for it. Notes a command prints rather than raises go through `command_words`.
"""

import re
from contextvars import ContextVar
from typing import Any

import typer.core

from aarm.errors import AarmError

# library parameter -> the CLI option that sets it, where the two names differ
LIBRARY_NAMES = {"num_clips": "clips", "record_baseline": "update", "max_abs": "atol", "max_rel": "rtol",
                 "graph_passes": "passes"}
# library name -> the CLI words for it, where another command sets it or is it (a parameter of another command's
# function, or the function itself); used where the running command has no option of that name
ELSEWHERE = {
    "attention_outputs": "--attention-outputs",  # export
    "kernels": "--kernels",  # optimize
    "hardware_compat": "--hardware-compat",  # build
    "version_compat": "--version-compat",  # build
    "capture_attention": "aarm-export explain",
    "extract_flow": "aarm-export extract-flow",
    "benchmark": "aarm-export bench",
    "export_onnx": "aarm-export export",
    "build_engine": "aarm-export build",
    "optimize_onnx": "aarm-export optimize",
}


def _bare_flags(params: list[Any]) -> list[Any]:
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


def flag_words(message: str, flags: dict[str, str]) -> str:
    """`message` with each backquoted library parameter that is one of `flags` ({option name: flag}) as its
    flag (an option of its own name first, then the one LIBRARY_NAMES gives), else as its ELSEWHERE words; other
    backquoted words stay as they are."""

    def words(m: re.Match[str]) -> str:
        name = m[1]
        return flags.get(name) or flags.get(LIBRARY_NAMES.get(name, "")) or ELSEWHERE.get(name, m[0])

    return re.sub(r"`(\w+)`", words, message)


def _own_flags(command: Any) -> dict[str, str]:
    """{option name: its longest flag} of a click command."""
    return {p.name: max(p.opts, key=len) for p in command.params if p.param_type_name == "option"}


_RUNNING_FLAGS: ContextVar[dict[str, str] | None] = ContextVar("running_flags", default=None)  # while a command runs


def command_words(message: str) -> str:
    """A library note that the running command prints (not raises), in that command's words (`flag_words`)."""
    return flag_words(message, _RUNNING_FLAGS.get() or {})


def _usage_argument(piece: str) -> str:
    """`{model}` -> `MODEL`, `[data]` -> `[DATA]`, `{videos}...` -> `VIDEOS...`."""
    piece = re.sub(r"^\{(\w+)\}", lambda m: m.group(1).upper(), piece)
    return re.sub(r"^\[([a-z_]\w*)\]", lambda m: f"[{m.group(1).upper()}]", piece)


class FlagHelpCommand(typer.core.TyperCommand):
    """A sub-command whose help shows flags without a value type and arguments in upper case, and whose
    library errors name its flags (see the module docstring)."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _bare_flags(super().get_params(ctx))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [_usage_argument(p) for p in super().collect_usage_pieces(ctx)]

    def invoke(self, ctx: Any) -> Any:
        flags = _own_flags(self)
        running = _RUNNING_FLAGS.set(flags)
        try:
            return super().invoke(ctx)
        except AarmError as exc:
            if exc.args and isinstance(exc.args[0], str):
                exc.args = (flag_words(exc.args[0], flags), *exc.args[1:])
            raise
        finally:
            _RUNNING_FLAGS.reset(running)


class FlagHelpGroup(typer.core.TyperGroup):
    """The command group (`aarm-export --help`), with the same flag rendering."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _bare_flags(super().get_params(ctx))

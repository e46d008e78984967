"""Run `aarm-export` in-process through its real entry point (`export.cli.main`, which maps library errors to
one line and exit 1), for the CLI tests of every package."""

import sys
from pathlib import Path

import pytest

from export.cli import main


def run_cli(args: list[str | Path], capsys: pytest.CaptureFixture[str],
            monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `aarm-export ARGS`."""
    monkeypatch.setattr(sys, "argv", ["aarm-export", *map(str, args)])
    monkeypatch.delenv("AARM_DEBUG", raising=False)
    capsys.readouterr()
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str) -> str:
    """The error line of a failed command: exit code 1, exactly one line, no traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]

"""Atomic file writes: write to a temporary file beside the target, then rename over it."""

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aarm.errors import AarmError

_UMASK = os.umask(0o022)
os.umask(_UMASK)


def check_writable(path: str | Path, force: bool) -> Path:
    """Refuse to overwrite an existing file unless `force`; returns the path."""
    path = Path(path)
    if path.exists() and not force:
        raise AarmError(f"{path} exists; pass `force` to overwrite it")
    return path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success rename it to `path`, else delete it.

    The temporary name keeps the target's suffix so writers that infer a format from it keep working.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")

"""Dataclass configs from three sources: defaults, then a TOML file's table, then non-None overrides (flags)."""

import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

from aarm.errors import ConfigError

T = TypeVar("T")


def config_from_sources(cls: type[T], table: str, file: Path | None, overrides: dict[str, Any]) -> T:
    """Build dataclass `cls` from its defaults, the `[table]` of TOML `file` (or its top level when the
    table is absent), then the overrides that are not None. Unknown keys are a ConfigError naming them."""
    values: dict[str, Any] = {}
    if file is not None:
        try:
            loaded = tomllib.loads(Path(file).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{file}: cannot read {table} config ({exc})") from None
        values.update(loaded.get(table, loaded))
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = set(values) - {f.name for f in fields(cls)}
    if unknown:
        raise ConfigError(f"unknown {table} option(s) {', '.join(sorted(unknown))}")
    return cls(**values)

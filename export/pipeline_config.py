"""Pipeline configuration: defaults, then a TOML file's [pipeline] table, then flags."""

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aarm.config_sources import config_from_sources
from aarm.errors import ConfigError
from runtime.graph_precision import PRECISIONS

# Integer options and their ranges (inclusive; None: no upper bound), checked before any stage runs.
INT_RANGES: dict[str, tuple[int, int | None]] = {
    "split": (1, 3), "opset": (17, None), "calibration_clips": (1, None), "eval_clips": (1, None),
    "parity_samples": (0, None), "bench_iterations": (1, None), "triton_max_batch": (1, None),
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class PipelineConfig:
    """What `aarm-export pipeline` makes from one checkpoint, into one folder.

    data: a labelled dataset (UCF101/HMDB51/folder layout): its train subset calibrates INT8, its test subset
    measures accuracy in parity. Without it INT8 is skipped and parity uses random inputs only.
    """

    checkpoint: str = ""
    out: str = "deploy"
    data: str | None = None
    split: int = 1
    precisions: list[str] = field(default_factory=lambda: list(PRECISIONS))
    opset: int = 17
    calibration_clips: int = 64
    calibration_method: str = "percentile"
    calibration_target: str = "cpu"
    max_drop: float = 1.0
    eval_clips: int = 256
    parity_samples: int = 32
    bench_batches: list[int] = field(default_factory=lambda: [1, 8])
    bench_iterations: int = 20
    threads: int | None = None
    tensorrt: str = "auto"  # auto: build engines where TensorRT is importable | off
    kernels: str = "auto"  # auto: the CPU kernel graph (optimize --kernels) where its kernels build here | off
    trt_batch: str = "1:8:32"
    triton: bool = True
    triton_max_batch: int = 32

    def __post_init__(self) -> None:
        unknown = [p for p in self.precisions if p not in PRECISIONS]
        if unknown or not self.precisions:
            allowed = ", ".join(PRECISIONS)
            raise ConfigError(f"precisions must be a non-empty subset of {allowed}, got {self.precisions}")
        if "fp32" not in self.precisions:
            self.precisions.insert(0, "fp32")  # every other precision derives from the fp32 graph
        for name in ("tensorrt", "kernels"):
            if getattr(self, name) not in ("auto", "off"):
                raise ConfigError(f"pipeline option {name} must be auto or off, got {getattr(self, name)!r}")
        self._check_values()

    def _check_values(self) -> None:
        """Every numeric and named option, so a bad one stops the run before its first stage, not after the
        stages before the one that reads it."""
        from calibration.quantize import METHODS, TARGETS
        from export.tensorrt_build import parse_batch

        for name, (low, high) in INT_RANGES.items():
            value = getattr(self, name)
            if not _is_int(value) or value < low or (high is not None and value > high):
                bound = f"{low}..{high}" if high is not None else f">= {low}"
                raise ConfigError(f"pipeline option {name} must be an integer {bound}, got {value!r}")
        if self.threads is not None and (not _is_int(self.threads) or self.threads < 1):
            raise ConfigError(f"pipeline option threads must be an integer >= 1, got {self.threads!r}")
        if not self.bench_batches or not all(_is_int(b) and b >= 1 for b in self.bench_batches):
            raise ConfigError(f"pipeline option bench_batches must be integers >= 1, got {self.bench_batches!r}")
        if not isinstance(self.max_drop, int | float) or not math.isfinite(self.max_drop) or self.max_drop < 0:
            raise ConfigError(f"pipeline option max_drop must be a number >= 0, got {self.max_drop!r}")
        if self.calibration_method not in METHODS:
            raise ConfigError(f"pipeline option calibration_method must be one of {', '.join(METHODS)}, "
                              f"got {self.calibration_method!r}")
        if self.calibration_target not in TARGETS:
            raise ConfigError(f"pipeline option calibration_target must be one of {', '.join(TARGETS)}, "
                              f"got {self.calibration_target!r}")
        if not isinstance(self.trt_batch, str):
            raise ConfigError(f"pipeline option trt_batch must be a string MIN:OPT:MAX, got {self.trt_batch!r}")
        parse_batch(self.trt_batch)
        if not isinstance(self.triton, bool):
            raise ConfigError(f"pipeline option triton must be true or false, got {self.triton!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_sources(cls, file: Path | None = None, **overrides: Any) -> "PipelineConfig":
        """Defaults, then a TOML file's keys (a [pipeline] table or top level), then non-None overrides."""
        return config_from_sources(cls, "pipeline", file, overrides)

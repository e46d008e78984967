"""Pipeline configuration: defaults, then a TOML file's [pipeline] table, then flags."""

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aarm.config_sources import config_from_sources
from aarm.errors import ConfigError

PRECISIONS = ("fp32", "fp16", "int8")


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
        if self.tensorrt not in ("auto", "off"):
            raise ConfigError(f"tensorrt must be auto or off, got {self.tensorrt!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_sources(cls, file: Path | None = None, **overrides: Any) -> "PipelineConfig":
        """Defaults, then a TOML file's keys (a [pipeline] table or top level), then non-None overrides."""
        return config_from_sources(cls, "pipeline", file, overrides)

"""Training configuration: the paper's defaults (section 4.1), overridable from a TOML file and flags."""

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aarm.config_sources import config_from_sources
from aarm.errors import ConfigError

SCHEDULES = ("none", "step", "cosine")
OPTIMIZERS = ("sgd", "adamw")


def check_number(
    name: str, value: Any, minimum: float, *, strict: bool = False, below: float | None = None, integer: bool = False
) -> None:
    """Refuse a value that is not a finite number (a whole one when `integer`), is below `minimum` (or equal
    to it when `strict`) or not below `below`: a ConfigError naming the option."""
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise ConfigError(f"{name} must be {'a whole number' if integer else 'a number'}, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value}")
    if value <= minimum if strict else value < minimum:
        raise ConfigError(f"{name} must be {'>' if strict else '>='} {minimum:g}, got {value}")
    if below is not None and value >= below:
        raise ConfigError(f"{name} must be < {below:g}, got {value}")


@dataclass
class TrainConfig:
    """Everything a training run needs. Defaults follow the paper: SGD, momentum 0.9, lr 0.001, batch 50,
    224x224 crops; TSN with K = 3 segments for 2D models, 16-frame clips for 3D ones."""

    data: str = ""
    out: str = "runs/train"
    model: str = "resnet50"
    attention: str = "aarm"
    modality: str = "rgb"  # rgb | flow (flow reads TSN frame folders made by `aarm-export extract-flow`)
    dataset_format: str = "auto"  # auto | ucf101 | hmdb51 | folder
    split: int = 1
    videos: str | None = None  # the folder of <class>/<video>, when not found under `data`
    annotations: str | None = None  # the folder of the split files, when not found under `data`
    allow_overlap: bool = False  # train even when the split's train and test subsets share videos
    model_options: dict[str, Any] = field(default_factory=dict)  # alpha, eta, chi, reduction, fusion, vcm, dropout
    pretrained: str | None = None  # ImageNet weights in torchvision layout, a local file
    epochs: int = 10
    batch_size: int = 50  # the global batch: under torchrun each of N processes takes batch_size / N
    lr: float = 0.001
    optimizer: str = "sgd"  # sgd (the paper's) | adamw (trains from scratch in far fewer steps)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # none | step | cosine
    lr_steps: list[int] = field(default_factory=list)  # epochs where step schedule divides lr by 10
    size: int = 224
    scale_size: int | None = None  # short side before cropping; default size * 8 / 7
    segments: int = 3
    frames: int = 16
    stride: int = 1
    eval_clips: int = 1
    flip: bool | None = None  # horizontal flip in training; None: the dataset's dataset.json decides (default on)
    workers: int = 2
    seed: int = 0
    device: str = "cpu"  # under torchrun, `cuda` means cuda:LOCAL_RANK in each process
    sync_bn: bool = False  # several processes: batch norm over the global batch (SyncBatchNorm, CUDA only)
    freeze_bn: bool = False  # batch norm keeps its running statistics in training; scale and shift still learn
    world_size: int = 1  # processes in the run; set by train() from torchrun's WORLD_SIZE and recorded

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        for name in ("epochs", "batch_size", "size", "segments", "frames", "stride", "eval_clips", "world_size"):
            check_number(name, getattr(self, name), 1, integer=True)
        check_number("split", self.split, 1, integer=True)
        check_number("workers", self.workers, 0, integer=True)
        check_number("seed", self.seed, 0, integer=True)
        if self.scale_size is not None:
            check_number("scale_size", self.scale_size, 1, integer=True)
        for step in self.lr_steps:
            check_number("lr_steps", step, 1, integer=True)
        check_number("lr", self.lr, 0, strict=True)
        check_number("momentum", self.momentum, 0, below=1)
        check_number("weight_decay", self.weight_decay, 0)
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.modality not in ("rgb", "flow"):
            raise ConfigError(f"modality must be rgb or flow, got {self.modality!r}")
        if self.sync_bn and self.freeze_bn:
            raise ConfigError("sync_bn and freeze_bn exclude each other: frozen batch norm has nothing to synchronise")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def dataset_paths(self) -> dict[str, Any]:
        """load_split's keyword arguments for where this run's videos and annotation files are."""
        return {
            "format": self.dataset_format, "split": self.split,
            "videos": Path(self.videos) if self.videos else None,
            "annotations": Path(self.annotations) if self.annotations else None,
        }

    @classmethod
    def from_sources(cls, file: Path | None = None, **overrides: Any) -> "TrainConfig":
        """Defaults, then a TOML file's keys (a [train] table or top level), then non-None overrides."""
        return config_from_sources(cls, "train", file, overrides)

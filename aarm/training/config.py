"""Training configuration: the paper's defaults (section 4.1), overridable from a TOML file and flags."""

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aarm.config_sources import config_from_sources
from aarm.errors import ConfigError

SCHEDULES = ("none", "step", "cosine")
OPTIMIZERS = ("sgd", "adamw")


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
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.modality not in ("rgb", "flow"):
            raise ConfigError(f"modality must be rgb or flow, got {self.modality!r}")
        if self.sync_bn and self.freeze_bn:
            raise ConfigError("sync_bn and freeze_bn exclude each other: frozen batch norm has nothing to synchronise")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_sources(cls, file: Path | None = None, **overrides: Any) -> "TrainConfig":
        """Defaults, then a TOML file's keys (a [train] table or top level), then non-None overrides."""
        return config_from_sources(cls, "train", file, overrides)

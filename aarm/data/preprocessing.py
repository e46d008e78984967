"""How a model's input is made from video: recorded in checkpoints and artifact sidecars, read by every
later step (export, calibration, prediction) so nobody has to repeat the flags."""

from dataclasses import asdict, dataclass, field
from typing import Any

from aarm.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FLOW_MEAN = 0.5  # TSN-quantised flow JPEGs scaled to [0, 1] are centred at 0.5 (128 / 255)
FLOW_STD = 0.226

MODALITIES = ("rgb", "flow")
LAYOUTS = ("NKCHW", "NCTHW")


@dataclass(frozen=True)
class Preprocessing:
    """Sampling and normalisation of one model input.

    layout NKCHW (2D TSN): K = `segments` snippets, each one RGB frame (C = 3) or a stack of `flow_stack`
    x/y flow fields (C = 2 * flow_stack), interleaved x0, y0, x1, y1, ...
    layout NCTHW (3D): one clip of `frames` frames taken every `stride` frames (C = 3 or 2 for flow).
    Pixels are scaled to [0, 1], resized so the short side is `scale_size`, centre-cropped to `size`
    (evaluation), then normalised per channel with `mean` / `std` (per-channel lists, repeated over a
    flow stack).
    """

    modality: str = "rgb"
    layout: str = "NKCHW"
    size: int = 224
    scale_size: int = 256
    segments: int = 3
    frames: int = 1
    stride: int = 1
    flow_stack: int = 10
    mean: tuple[float, ...] = field(default=IMAGENET_MEAN)
    std: tuple[float, ...] = field(default=IMAGENET_STD)

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ConfigError(f"modality must be one of {', '.join(MODALITIES)}, got {self.modality!r}")
        if self.layout not in LAYOUTS:
            raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if self.size < 1 or self.scale_size < self.size:
            raise ConfigError(f"need 1 <= size <= scale_size, got size={self.size}, scale_size={self.scale_size}")
        if len(self.mean) != len(self.std):
            raise ConfigError("mean and std must have the same length")

    @property
    def channels(self) -> int:
        """Input channels C of one snippet or clip frame."""
        if self.modality == "rgb":
            return 3
        return 2 * self.flow_stack if self.layout == "NKCHW" else 2

    def input_shape(self, batch: int = 1) -> tuple[int, ...]:
        if self.layout == "NKCHW":
            return (batch, self.segments, self.channels, self.size, self.size)
        return (batch, self.channels, self.frames, self.size, self.size)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocessing":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown preprocessing field(s) {', '.join(sorted(unknown))}")
        d = dict(d)
        for key in ("mean", "std"):
            if key in d:
                d[key] = tuple(float(v) for v in d[key])
        return cls(**d)

    @classmethod
    def for_model(
        cls, config: dict[str, Any], *, size: int | None = None, frames: int | None = None
    ) -> "Preprocessing":
        """The default preprocessing for a model config (as `aarm.create_model` records it)."""
        from aarm.models.registry import FLOW_STACK, get_spec

        spec = get_spec(config["name"])
        flow = int(config["in_channels"]) != 3
        size = size or spec.size
        mean, std = ((FLOW_MEAN, FLOW_MEAN), (FLOW_STD, FLOW_STD)) if flow else (IMAGENET_MEAN, IMAGENET_STD)
        if spec.dims == 2:
            return cls(
                modality="flow" if flow else "rgb", layout="NKCHW", size=size, scale_size=size * 8 // 7,
                segments=int(config["options"].get("segments", 3)), frames=1, flow_stack=FLOW_STACK,
                mean=mean, std=std,
            )
        return cls(
            modality="flow" if flow else "rgb", layout="NCTHW", size=size, scale_size=size * 8 // 7, segments=1,
            frames=frames or spec.frames, mean=mean, std=std,
        )

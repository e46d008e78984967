"""Model registry: `create_model(name, ...)` and `list_models()`.

2D backbones come wrapped in TSN and take (N, K, C, H, W); 3D models take (N, C, T, H, W). Every model
carries `model.aarm_config`, a JSON-serialisable dict from which `model_from_config` rebuilds it.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from aarm.attention import ATTENTION_OPTIONS, ATTENTIONS, VCM, attention_factory
from aarm.backbones import C3D, RESNET_LAYOUTS, VGG16, ResNet, ResNet3D18
from aarm.errors import ConfigError
from aarm.models.tsn import TSN


@dataclass(frozen=True)
class ModelSpec:
    """What a registered name builds and the input it expects by default."""

    name: str
    dims: int  # 2: TSN over a 2D backbone, input (N, K, C, H, W); 3: clip model, input (N, C, T, H, W)
    frames: int  # default clip length T for 3D models; 1 (one frame per snippet) for 2D RGB
    size: int  # default crop size H = W
    min_size: int  # smallest H = W (and T for 3D) that the architecture accepts
    build: Callable[..., nn.Module]
    fixed_frames: bool = False  # 3D: the clip length T is fixed by the architecture (C3D's fc6 takes 512x1x4x4)


def _resnet(name: str) -> Callable[..., nn.Module]:
    block, layers = RESNET_LAYOUTS[name]

    def build(**kw: Any) -> nn.Module:
        return ResNet(block, layers, **kw)

    return build


_SPECS = [ModelSpec(n, 2, 1, 224, 32, _resnet(n)) for n in RESNET_LAYOUTS] + [
    ModelSpec("vgg16", 2, 1, 224, 32, VGG16),
    ModelSpec("c3d", 3, 16, 112, 112, C3D, fixed_frames=True),
    ModelSpec("resnet3d18", 3, 16, 112, 32, ResNet3D18),
]
MODELS: dict[str, ModelSpec] = {s.name: s for s in _SPECS}

# Options every model takes besides the attention's own (see aarm.attention.ATTENTION_OPTIONS), with their types.
MODEL_OPTIONS: dict[str, type] = {"segments": int, "dropout": float, "vcm": bool}
_TYPE_NAMES = {int: "a whole number (int)", float: "a number (float)", bool: "true or false (bool)", str: "a string"}
FLOW_STACK = 10  # optical-flow fields per snippet; x and y give 2 * 10 = 20 input channels


def list_models() -> list[str]:
    """Registered model names, in the order the paper's tables use."""
    return list(MODELS)


def get_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name]


def option_types(attention: str) -> dict[str, type]:
    """The options a model with this attention takes and the type of each: the model's own (MODEL_OPTIONS)
    and the attention's, typed by their defaults (aarm.attention.ATTENTION_OPTIONS)."""
    return {**MODEL_OPTIONS, **{k: type(v) for k, v in ATTENTION_OPTIONS[attention].items()}}


def _check_type(option: str, value: Any, expected: type) -> None:
    """A ConfigError naming the option and its type unless `value` has it (an int passes for a float; a bool
    passes for no number)."""
    if isinstance(value, bool):
        fits = expected is bool
    else:
        fits = isinstance(value, int | float) if expected is float else isinstance(value, expected)
    if not fits:
        raise ConfigError(f"model option {option} must be {_TYPE_NAMES[expected]}, got {value!r}")


def create_model(
    name: str, *, num_classes: int, attention: str = "aarm", in_channels: int = 3, **options: Any
) -> nn.Module:
    """Build a registered model, randomly initialised.

    name: one of `list_models()`. attention: none | se | cbam | aarm. in_channels: 3 (RGB) or 20 (a
    10-frame x/y flow stack). options: `segments` (2D only, default 3), `dropout` (before the last FC),
    `vcm` (VCM after the last FC; default on for aarm), and the attention's own: `reduction` (r = 16),
    and for aarm `alpha` (0.5), `eta` (0.9), `chi` (0.25), `fusion` (parallel | sequential).
    """
    spec = get_spec(name)
    if attention not in ATTENTIONS:
        raise ConfigError(f"unknown attention {attention!r}; choose one of {', '.join(ATTENTIONS)}")
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
    if in_channels < 1:
        raise ConfigError(f"in_channels must be >= 1, got {in_channels}")
    types = option_types(attention)
    unknown = set(options) - set(types)
    if unknown:
        names = ", ".join(sorted(unknown))
        raise ConfigError(f"model {name!r} with attention {attention!r} takes no option(s) {names}")
    for option, value in options.items():
        _check_type(option, value, types[option])
    segments = options.pop("segments", 3 if spec.dims == 2 else None)
    if spec.dims == 3 and segments is not None:
        raise ConfigError(f"{name} is a 3D clip model; `segments` applies to 2D (TSN) models only")
    if spec.dims == 2 and segments < 1:
        raise ConfigError(f"segments must be a positive integer, got {segments!r}")
    vcm = bool(options.pop("vcm", attention == "aarm"))
    backbone_kw: dict[str, Any] = {}
    if "dropout" in options:
        backbone_kw["dropout"] = float(options.pop("dropout"))
    attn_options = {k: options[k] for k in ATTENTION_OPTIONS[attention] if k in options}
    factory = attention_factory(attention, dims=2 if spec.dims == 2 else 3, **attn_options)
    head = VCM(num_classes) if vcm else nn.Identity()
    model = spec.build(num_classes=num_classes, in_channels=in_channels, attention=factory, head=head, **backbone_kw)
    if spec.dims == 2:
        model = TSN(model, segments=segments)
    model.aarm_config = {
        "name": name,
        "num_classes": num_classes,
        "attention": attention,
        "in_channels": in_channels,
        "options": {**attn_options, **backbone_kw, "vcm": vcm, **({"segments": segments} if spec.dims == 2 else {})},
    }
    return model


def model_from_config(config: dict[str, Any]) -> nn.Module:
    """Rebuild a model from its `aarm_config` (as stored in checkpoints and sidecars)."""
    try:
        return create_model(
            config["name"],
            num_classes=int(config["num_classes"]),
            attention=config["attention"],
            in_channels=int(config["in_channels"]),
            **dict(config.get("options", {})),
        )
    except KeyError as exc:
        raise ConfigError(f"model config lacks the field {exc.args[0]!r}") from None


def example_input_shape(
    config: dict[str, Any], batch: int = 1, *, size: int | None = None, frames: int | None = None
) -> tuple[int, ...]:
    """The input shape a model built from `config` takes: (N, K, C, H, W) for 2D, (N, C, T, H, W) for 3D."""
    spec = get_spec(config["name"])
    size = size or spec.size
    if spec.dims == 2:
        return (batch, int(config["options"].get("segments", 3)), int(config["in_channels"]), size, size)
    return (batch, int(config["in_channels"]), frames or spec.frames, size, size)

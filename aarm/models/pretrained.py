"""Load ImageNet-format (torchvision-layout) weights from a local file into any attention variant."""

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from aarm.errors import CheckpointError
from aarm.models.tsn import TSN, TwoStream


@dataclass
class LoadReport:
    """What `load_pretrained` did, key by key (keys relative to the backbone)."""

    loaded: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)  # in the model, not in the file: attention, VCM, ...
    adapted: list[str] = field(default_factory=list)  # first conv, averaged over input channels
    skipped: list[str] = field(default_factory=list)  # classifier of another class count, left fresh


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A tensor dict from a file saved by torch.save; refuses files that need arbitrary code to load.

    Accepts a plain state dict or one nested under `state_dict` / `model` (an aarm checkpoint), with an
    optional `module.` prefix (DataParallel) or `backbone.` prefix (an aarm TSN).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError or EOFError here
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(f"{path}: not a safe weights file ({type(exc).__name__}: {first_line[:160]})") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: holds no state dict of tensors")
    state = {k.removeprefix("module."): v for k, v in obj.items()}
    if state and all(k.startswith("backbone.") for k in state):  # an aarm TSN checkpoint's backbone
        state = {k.removeprefix("backbone."): v for k, v in state.items()}
    return state


def _backbone(model: nn.Module) -> nn.Module:
    if isinstance(model, TwoStream):
        raise CheckpointError("load ImageNet weights into each stream (model.rgb, model.flow) separately")
    return model.backbone if isinstance(model, TSN) else model


def _first_conv_and_head(backbone: nn.Module) -> tuple[str, list[str]]:
    convs = [n for n, m in backbone.named_modules() if isinstance(m, nn.Conv2d | nn.Conv3d)]
    linears = [n for n, m in backbone.named_modules() if isinstance(m, nn.Linear) and not n.startswith("vcm")]
    return f"{convs[0]}.weight", [f"{linears[-1]}.weight", f"{linears[-1]}.bias"]


def load_pretrained(model: nn.Module, path: str | Path) -> LoadReport:
    """Load a torchvision-layout state dict (e.g. ImageNet ResNet-50) into `model`'s backbone.

    Attention modules and VCM are not in such a file and stay freshly initialised (`fresh`). A classifier
    of another class count is skipped (`skipped`). When the model's first conv takes another number of
    input channels (a 20-channel flow stream), the RGB kernel is averaged over its input channels and
    replicated (TSN's cross-modality initialisation; `adapted`). Keys the model does not have, or other
    shape mismatches, raise CheckpointError: the file is for another architecture.
    """
    backbone = _backbone(model)
    source = read_state_dict(path)
    target = backbone.state_dict()
    first_conv, head = _first_conv_and_head(backbone)
    report = LoadReport()
    unexpected = [k for k in source if k not in target]
    if unexpected:
        raise CheckpointError(
            f"{path}: {len(unexpected)} key(s) not in this model, e.g. {', '.join(unexpected[:3])}"
        )
    to_load: dict[str, torch.Tensor] = {}
    for key, value in source.items():
        want = target[key].shape
        if value.shape == want:
            to_load[key] = value
            report.loaded.append(key)
        elif key == first_conv and value.shape[0] == want[0] and value.shape[2:] == want[2:]:
            to_load[key] = value.mean(dim=1, keepdim=True).expand(want).contiguous()
            report.adapted.append(key)
        elif key in head:
            report.skipped.append(key)
        else:
            raise CheckpointError(f"{path}: {key} has shape {tuple(value.shape)}, this model needs {tuple(want)}")
    backbone.load_state_dict(to_load, strict=False)
    report.fresh = [k for k in target if k not in to_load and k not in report.skipped]
    return report

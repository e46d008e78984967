"""Checkpoints: weights plus everything needed to rebuild and feed the model.

A checkpoint is a plain dict of tensors, strings and numbers, so `torch.load(weights_only=True)` loads
it and a file that needs arbitrary code to unpickle is refused:

    {"format": "aarm-checkpoint", "version": 1, "config": model.aarm_config, "classes": [...],
     "preprocessing": Preprocessing.to_dict(), "state_dict": {...}, "trained": bool, "meta": {...}}
"""

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aarm.data.preprocessing import Preprocessing
from aarm.errors import CheckpointError
from aarm.fileio import atomic_path
from aarm.models.registry import model_from_config

FORMAT = "aarm-checkpoint"
VERSION = 1


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (eval mode) and what it was trained with."""

    model: nn.Module
    classes: list[str]
    preprocessing: Preprocessing
    trained: bool = True
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> dict[str, Any]:
        return self.model.aarm_config


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    classes: list[str],
    preprocessing: Preprocessing,
    trained: bool = True,
    meta: dict[str, Any] | None = None,
    extra_state: dict[str, Any] | None = None,
) -> Path:
    """Write atomically. `extra_state` (optimizer, scheduler, epoch) is stored as given; keep it to
    tensors, numbers, strings, lists and dicts so the file stays loadable with weights_only=True."""
    config = getattr(model, "aarm_config", None)
    if config is None:
        raise CheckpointError("model has no aarm_config; build it with aarm.create_model")
    if len(classes) != config["num_classes"]:
        raise CheckpointError(f"{len(classes)} class names for a model with {config['num_classes']} classes")
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": config,
        "classes": list(classes),
        "preprocessing": preprocessing.to_dict(),
        "trained": trained,
        "meta": meta or {},
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **({"extra_state": extra_state} if extra_state else {}),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict, loaded with weights_only=True and checked for its format."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, KeyError, RuntimeError, EOFError: torch.load's many ways to fail
        if isinstance(exc, pickle.UnpicklingError):  # a pickle, but not one of tensors, numbers and strings
            text = str(exc)
            reason = text.split("WeightsUnpickler error:", 1)[-1].strip().splitlines()[0] if text.strip() else ""
            raise CheckpointError(f"{path}: refused, not a weights-only PyTorch checkpoint ({reason[:120]})") from None
        raise CheckpointError(f"{path} is not a PyTorch checkpoint") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an aarm checkpoint (no format tag {FORMAT!r})")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {payload.get('version')} (this aarm reads {VERSION})")
    return payload


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the model from the checkpoint's config, load its weights strictly, put it in eval mode."""
    payload = read_checkpoint(path)
    model = model_from_config(payload["config"])
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the model config ({str(exc).splitlines()[0]})") from None
    model.to(map_location).eval()
    return Checkpoint(
        model=model,
        classes=list(payload["classes"]),
        preprocessing=Preprocessing.from_dict(payload["preprocessing"]),
        trained=bool(payload.get("trained", True)),
        meta=dict(payload.get("meta", {})),
    )

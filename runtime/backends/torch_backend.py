"""PyTorch eager backend: the reference every exported artifact is compared against."""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from aarm.checkpoint import load_checkpoint
from aarm.data.preprocessing import Preprocessing
from aarm.errors import BackendUnavailable, ConfigError
from runtime.runner import InputSpec, Runner

_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def _check_device(device: str) -> torch.device:
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown torch device {device!r}; use cpu or cuda[:i]") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise BackendUnavailable(f"device {device!r} requested but this PyTorch build or machine has no CUDA")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise BackendUnavailable(
                f"device {device!r} requested; this machine has {torch.cuda.device_count()} GPU(s)")
    elif dev.type != "cpu":
        raise ConfigError(f"unsupported torch device {device!r}; use cpu or cuda[:i]")
    return dev


class TorchRunner(Runner):
    """Runs an `nn.Module` in eval mode under `torch.inference_mode`, one call at a time (lock).

    Single input "input" (N, K, C, H, W) for 2D TSN models, (N, C, T, H, W) for 3D; output "scores"
    (N, num_classes). threads sets torch's intra-op threads while the runner is active; that setting is
    process-wide.
    """

    backend = "torch"

    def __init__(
        self,
        model: nn.Module,
        *,
        preprocessing: Preprocessing,
        classes: Sequence[str] = (),
        name: str = "torch",
        device: str = "cpu",
        threads: int | None = None,
        path: Path | None = None,
    ) -> None:
        shape = preprocessing.input_shape(1)
        super().__init__(
            name=name,
            inputs=[InputSpec("input", ("N", *shape[1:]), "float32")],
            outputs=["scores"],
            classes=classes,
            preprocessing=[preprocessing],
            precision="fp32",
            path=path,
        )
        self._device = _check_device(device)
        if threads is not None and threads < 1:
            raise ConfigError(f"threads must be >= 1, got {threads}")
        self.threads = threads
        self.model = model.eval()

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, device: str = "cpu", threads: int | None = None) -> "TorchRunner":
        """Load a checkpoint written by `aarm.checkpoint.save_checkpoint`."""
        dev = _check_device(device)
        ckpt = load_checkpoint(path, map_location="cpu")
        return cls(ckpt.model, preprocessing=ckpt.preprocessing, classes=ckpt.classes, name=Path(path).name,
                   device=str(dev), threads=threads, path=Path(path))

    @property
    def config(self) -> dict | None:
        """The model's aarm_config (None for a module not built by aarm.create_model)."""
        return getattr(self.model, "aarm_config", None)

    @property
    def provider(self) -> str:
        return f"torch-{self._device.type}"

    @property
    def device(self) -> str:
        if self._device.type == "cuda":
            return f"cuda:{self._device.index if self._device.index is not None else torch.cuda.current_device()}"
        return "cpu"

    def activate_impl(self) -> None:
        self._threads_before = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        self.model.to(self._device)

    def deactivate_impl(self) -> None:
        torch.set_num_threads(self._threads_before)
        if self._device.type == "cuda":
            self.model.to("cpu")
            torch.cuda.empty_cache()

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = torch.from_numpy(feed["input"]).to(self._device, _TORCH_DTYPES.get(str(feed["input"].dtype)))
        with self.lock, torch.inference_mode():
            scores = self.model(x)
        return {"scores": scores.float().cpu().numpy()}

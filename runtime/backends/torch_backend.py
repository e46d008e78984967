"""PyTorch eager backend: the FP32 reference every exported artifact is compared against, and fast GPU
inference where TensorRT is absent.

    runner = TorchRunner.from_checkpoint("model.pt", device="cuda:0", precision="fp16", channels_last=True,
                                         cuda_graphs=True)

precision: fp32 | fp16 | bf16, the dtype of weights and activations (the module is cast, as `model.half()`
does); inputs and scores stay float32 numpy arrays. fp32 on CUDA is strict FP32: TF32 convolutions and
matmuls are switched off during each call (those flags are process-wide). channels_last: weights and
activations in NHWC (NDHWC for 3D convolutions), the layout tensor cores read fastest. cuda_graphs: each
input shape (one graph per batch size) is captured once as a CUDA graph and replayed, which removes the
per-kernel launch cost that dominates small batches. The reference `model` is never modified: the runner
runs a copy in the requested device, dtype and layout while active.
"""

import contextlib
import copy
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from aarm.checkpoint import load_checkpoint
from aarm.data.preprocessing import Preprocessing
from aarm.errors import BackendUnavailable, ConfigError
from runtime.runner import InputSpec, Runner

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_WARMUP_BEFORE_CAPTURE = 3  # eager calls on a side stream before a graph is captured (cuDNN picks kernels)


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
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    elif dev.type != "cpu":
        raise ConfigError(f"unsupported torch device {device!r}; use cpu or cuda[:i]")
    return dev


def check_torch_options(device: torch.device, precision: str, cuda_graphs: bool) -> torch.dtype:
    """The torch dtype of `precision`; ConfigError / BackendUnavailable (one line) for a combination that
    cannot run on `device` (CUDA graphs on the CPU, bf16 on a GPU without it)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r} for PyTorch; choose one of {', '.join(PRECISIONS)}")
    if cuda_graphs and device.type != "cuda":
        raise ConfigError(f"CUDA graphs need a CUDA device; this runner is on {device.type}")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise BackendUnavailable(f"bf16 requested but {torch.cuda.get_device_name(device)} has no bf16 support")
    return PRECISIONS[precision]


def to_channels_last(module: nn.Module) -> nn.Module:
    """Every 4D parameter and buffer in channels_last (NHWC), every 5D one in channels_last_3d; in place."""
    for t in [*module.parameters(), *module.buffers()]:
        if t.dim() in (4, 5):
            t.data = t.data.contiguous(memory_format=torch.channels_last if t.dim() == 4 else torch.channels_last_3d)
    return module


@contextlib.contextmanager
def strict_fp32(enabled: bool) -> Iterator[None]:
    """TF32 off for cuDNN convolutions and CUDA matmuls inside the block (process-wide flags, restored after)."""
    if not enabled:
        yield
        return
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


class TorchRunner(Runner):
    """Runs an `nn.Module` in eval mode under `torch.inference_mode`, one call at a time (lock).

    Single input "input" (N, K, C, H, W) for 2D TSN models, (N, C, T, H, W) for 3D, float32; output "scores"
    (N, num_classes) float32. threads sets torch's intra-op threads while the runner is active; that setting
    is process-wide. precision / channels_last / cuda_graphs: see the module docstring.
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
        precision: str = "fp32",
        channels_last: bool = False,
        cuda_graphs: bool = False,
    ) -> None:
        shape = preprocessing.input_shape(1)
        super().__init__(
            name=name,
            inputs=[InputSpec("input", ("N", *shape[1:]), "float32")],
            outputs=["scores"],
            classes=classes,
            preprocessing=[preprocessing],
            precision=precision,
            path=path,
        )
        self._device = _check_device(device)
        self._dtype = check_torch_options(self._device, precision, cuda_graphs)
        if threads is not None and threads < 1:
            raise ConfigError(f"threads must be >= 1, got {threads}")
        self.threads = threads
        self.channels_last = channels_last
        self.cuda_graphs = cuda_graphs
        self.model = model.eval()
        self._module: nn.Module | None = None
        self._graphs: dict[tuple[int, ...], tuple[Any, torch.Tensor, torch.Tensor]] = {}
        self._pool: Any = None

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, *, device: str = "cpu", threads: int | None = None, precision: str = "fp32",
        channels_last: bool = False, cuda_graphs: bool = False,
    ) -> "TorchRunner":
        """Load a checkpoint written by `aarm.checkpoint.save_checkpoint`."""
        dev = _check_device(device)
        check_torch_options(dev, precision, cuda_graphs)
        ckpt = load_checkpoint(path, map_location="cpu")
        return cls(ckpt.model, preprocessing=ckpt.preprocessing, classes=ckpt.classes, name=Path(path).name,
                   device=str(dev), threads=threads, path=Path(path), precision=precision,
                   channels_last=channels_last, cuda_graphs=cuda_graphs)

    @property
    def config(self) -> dict | None:
        """The model's aarm_config (None for a module not built by aarm.create_model)."""
        return getattr(self.model, "aarm_config", None)

    @property
    def provider(self) -> str:
        return f"torch-{self._device.type}"

    @property
    def device(self) -> str:
        return f"cuda:{self._device.index}" if self._device.type == "cuda" else "cpu"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "channels_last": self.channels_last, "cuda_graphs": self.cuda_graphs,
                "graphs_captured": sorted(s[0] for s in self._graphs)}

    def _device_scope(self) -> contextlib.AbstractContextManager:
        return torch.cuda.device(self._device) if self._device.type == "cuda" else contextlib.nullcontext()

    def activate_impl(self) -> None:
        self._threads_before = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        plain = self._device.type == "cpu" and self._dtype == torch.float32 and not self.channels_last
        module = self.model if plain else copy.deepcopy(self.model).to(self._device, self._dtype)
        self._module = to_channels_last(module) if self.channels_last else module
        if self.cuda_graphs:
            self._pool = torch.cuda.graph_pool_handle()

    def deactivate_impl(self) -> None:
        torch.set_num_threads(self._threads_before)
        self._graphs.clear()
        self._module = self._pool = None
        if self._device.type == "cuda":
            torch.cuda.empty_cache()

    def to_device(self, x: np.ndarray) -> torch.Tensor:
        """(N, ...) float32 numpy -> a tensor on the runner's device, in its dtype and layout, for `forward`."""
        t = torch.from_numpy(x).to(self._device, self._dtype)
        if self.channels_last and t.dim() == 5 and self.preprocessing[0].layout == "NCTHW":
            t = t.contiguous(memory_format=torch.channels_last_3d)
        return t

    def _replay(self, x: torch.Tensor) -> torch.Tensor:
        """Scores of `x` from the CUDA graph captured for its shape (captured on first use)."""
        entry = self._graphs.get(tuple(x.shape))
        if entry is None:
            static_in = x.clone()
            side = torch.cuda.Stream(self._device)
            side.wait_stream(torch.cuda.current_stream(self._device))
            with torch.cuda.stream(side):
                for _ in range(_WARMUP_BEFORE_CAPTURE):
                    self._module(static_in)
            torch.cuda.current_stream(self._device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool):
                static_out = self._module(static_in)
            entry = self._graphs[tuple(x.shape)] = (graph, static_in, static_out)
        graph, static_in, static_out = entry
        static_in.copy_(x)
        graph.replay()
        return static_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scores (N, num_classes) on the device, in the runner's dtype, of a tensor from `to_device`: the model's
        work without the host copies `infer` adds (what a device-side timer should time). With cuda_graphs the
        result is the graph's static output, overwritten by the next call: copy it to keep it."""
        strict = self._device.type == "cuda" and self._dtype == torch.float32
        with self.lock, torch.inference_mode(), self._device_scope(), strict_fp32(strict):
            return self._replay(x) if self.cuda_graphs else self._module(x)

    def enable_attention_outputs(self) -> list[str]:
        """From now on also return each stage's STAM maps and CAM weights after "scores", named and shaped as a
        graph exported with --attention-outputs returns them (`aarm.explain.record_attention`: forward hooks).
        Returns their names; ConfigError for a model without AARM blocks or with cuda_graphs (a replayed graph
        runs no hooks)."""
        from aarm.explain import attention_output_names

        if self.cuda_graphs:
            raise ConfigError("attention outputs come from forward hooks, which a replayed CUDA graph does not run")
        names = attention_output_names(self.model)
        self.output_names = ["scores", *names]
        return names

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self.lock, torch.inference_mode():
            x = self.to_device(feed["input"])
            if len(self.output_names) == 1:
                return {"scores": self.forward(x).float().cpu().numpy()}
            from aarm.explain import record_attention

            views = x.shape[1] if self.preprocessing[0].layout == "NKCHW" else 1
            with record_attention(self._module, views) as found:
                scores = self.forward(x)
            return {"scores": scores.float().cpu().numpy(),
                    **{n: found[n].float().cpu().numpy() for n in self.output_names[1:]}}

"""Options and helpers the commands share: the `at_least` check, the runtime options (provider, device,
threads, PyTorch precision and layout, K / T) and opening an artifact with them, the stage-split table."""

import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from aarm.errors import ConfigError
from export.console import print_table
from runtime.backends import open_runner, resolve_backend
from runtime.runner import Runner


def at_least(minimum: float, *, strict: bool = False) -> Callable[[Any, Any, Any], Any]:
    """A typer callback refusing a value below `minimum` (or equal to it when `strict`), as a one-line
    ConfigError naming the option; None (not given) passes."""

    def check(ctx: Any, param: Any, value: Any) -> Any:
        if value is None:
            return value
        if not math.isfinite(value) or (value <= minimum if strict else value < minimum):
            name = max(param.opts, key=len) if param.opts else param.name
            raise ConfigError(f"{name} must be {'>' if strict else '>='} {minimum:g}, got {value}")
        return value

    return check


ProviderOpt = Annotated[
    list[str] | None,
    typer.Option("--provider", help="onnxruntime execution provider (cpu, cuda, tensorrt); repeat for a priority "
                 "list. A provider that cannot start is an error, never a silent fallback."),
]
DeviceOpt = Annotated[
    str | None, typer.Option(help="Device: cpu or cuda[:i] (PyTorch checkpoints, TensorRT engines, onnxruntime).")]
ThreadsOpt = Annotated[
    int | None, typer.Option(help="Intra-op threads (default: the backend's).", callback=at_least(1))]
PrecisionOpt = Annotated[str, typer.Option(
    help="PyTorch checkpoints: run in fp32, fp16 or bf16 (ONNX graphs and engines carry their own).")]
ChannelsLastOpt = Annotated[bool, typer.Option(
    "--channels-last", help="PyTorch checkpoints: channels-last (NHWC) weights and activations.")]
CudaGraphsOpt = Annotated[bool, typer.Option(
    "--cuda-graphs", help="PyTorch checkpoints on CUDA: capture one CUDA graph per batch size, then replay it.")]
SegmentsOpt = Annotated[int | None, typer.Option(
    help="2D (TSN) models: segments K per clip, within the range the graph records (default: its sidecar's).",
    callback=at_least(1))]
FramesOpt = Annotated[int | None, typer.Option(
    help="3D models: frames T per clip, within the range the graph records (default: its sidecar's).",
    callback=at_least(1))]


def torch_options(precision: str = "fp32", channels_last: bool = False, cuda_graphs: bool = False) -> dict[str, Any]:
    """The PyTorch runner options the CLI asked for beyond the defaults (see runtime.backends.torch_backend)."""
    given = {"precision": precision, "channels_last": channels_last, "cuda_graphs": cuda_graphs}
    return {k: v for k, v in given.items() if v not in (False, "fp32")}


def open_cli_runner(path: Path, provider: list[str] | None, device: str | None, threads: int | None,
                    torch_opts: dict[str, Any] | None = None, *, segments: int | None = None,
                    frames: int | None = None) -> Runner:
    """Open an artifact with the CLI's runtime options; providers go to ONNX graphs, device to the rest,
    torch_opts (`torch_options`) to PyTorch checkpoints only; segments / frames set its K or T
    (`runtime.temporal.choose_temporal`)."""
    from runtime.temporal import choose_temporal

    backend = resolve_backend(path)
    if torch_opts and backend != "torch":
        flags = ", ".join("--" + k.replace("_", "-") for k in torch_opts)
        raise ConfigError(f"{path}: {flags} apply to PyTorch checkpoints; a {backend} artifact carries its own")
    if backend == "onnxruntime":
        runner = open_runner(path, providers=provider, device=None if provider else device, threads=threads)
    elif backend == "torch":
        runner = open_runner(path, device=device, threads=threads, **(torch_opts or {}))
    else:
        runner = open_runner(path, device=device)
    return choose_temporal(runner, segments=segments, frames=frames)


def print_stage_split(title: str, summary: dict[str, Any]) -> None:
    """A `runtime.timings.summarise` result as a table: p50 / p99 ms and share of each stage."""
    from runtime.timings import STAGE_COLUMNS, stage_rows

    print_table(title, STAGE_COLUMNS, stage_rows(summary))

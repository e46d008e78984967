"""`aarm-export bench`: latency, throughput, memory and FLOP efficiency of artifacts, interleaved."""

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from aarm.errors import ConfigError
from aarm.fileio import check_writable, write_json
from export.console import console, print_table
from runtime.runner import Runner, open_runner, resolve_backend

ProviderOpt = Annotated[
    list[str] | None,
    typer.Option("--provider", help="onnxruntime execution provider (cpu, cuda, tensorrt); repeat for a priority "
                 "list. A provider that cannot start is an error, never a silent fallback."),
]
DeviceOpt = Annotated[
    str | None, typer.Option(help="Device: cpu or cuda[:i] (PyTorch checkpoints, TensorRT engines, onnxruntime).")]
ThreadsOpt = Annotated[int | None, typer.Option(help="Intra-op threads (default: the backend's).")]
PrecisionOpt = Annotated[str, typer.Option(
    help="PyTorch checkpoints: run in fp32, fp16 or bf16 (ONNX graphs and engines carry their own).")]
ChannelsLastOpt = Annotated[bool, typer.Option(
    "--channels-last", help="PyTorch checkpoints: channels-last (NHWC) weights and activations.")]
CudaGraphsOpt = Annotated[bool, typer.Option(
    "--cuda-graphs", help="PyTorch checkpoints on CUDA: capture one CUDA graph per batch size, then replay it.")]


def torch_options(precision: str = "fp32", channels_last: bool = False, cuda_graphs: bool = False) -> dict[str, Any]:
    """The PyTorch runner options the CLI asked for beyond the defaults (see runtime.backends.torch_backend)."""
    given = {"precision": precision, "channels_last": channels_last, "cuda_graphs": cuda_graphs}
    return {k: v for k, v in given.items() if v not in (False, "fp32")}


def open_cli_runner(path: Path, provider: list[str] | None, device: str | None, threads: int | None,
                    torch_opts: dict[str, Any] | None = None) -> Runner:
    """Open an artifact with the CLI's runtime options; providers go to ONNX graphs, device to the rest,
    torch_opts (`torch_options`) to PyTorch checkpoints only."""
    backend = resolve_backend(path)
    if torch_opts and backend != "torch":
        flags = ", ".join("--" + k.replace("_", "-") for k in torch_opts)
        raise ConfigError(f"{path}: {flags} apply to PyTorch checkpoints; a {backend} artifact carries its own")
    if backend == "onnxruntime":
        return open_runner(path, providers=provider, device=None if provider else device, threads=threads)
    if backend == "torch":
        return open_runner(path, device=device, threads=threads, **(torch_opts or {}))
    return open_runner(path, device=device)


def progress_bar() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True)


def parse_batches(text: str) -> list[int]:
    try:
        batches = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise ConfigError(f"--batch takes comma-separated integers, got {text!r}") from None
    if not batches or any(b < 1 for b in batches):
        raise ConfigError(f"--batch takes positive integers, got {text!r}")
    return batches


def bench(
    artifacts: Annotated[list[Path], typer.Argument(help="Artifacts (.onnx, .engine, .pt); ratios are to the first.")],
    batch: Annotated[str, typer.Option(help="Batch sizes, comma-separated.")] = "1",
    iterations: Annotated[int | None, typer.Option(help="Timed calls per artifact and batch [default: 50].")] = None,
    duration: Annotated[
        float | None, typer.Option(help="Seconds per artifact and batch, instead of --iterations.")
    ] = None,
    warmup: Annotated[int, typer.Option(help="Untimed calls first (peak memory is measured here).")] = 5,
    rounds: Annotated[int, typer.Option(help="Round-robin rounds the timed calls are split into.")] = 5,
    provider: ProviderOpt = None,
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
    precision: PrecisionOpt = "fp32",
    channels_last: ChannelsLastOpt = False,
    cuda_graphs: CudaGraphsOpt = False,
    flops: Annotated[bool, typer.Option(help="Count FLOPs and time a matmul for the efficiency column.")] = True,
    seed: Annotated[int, typer.Option(help="Seed of the random inputs.")] = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the full result (raw samples too).")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite the --json file.")] = False,
) -> None:
    """Benchmark artifacts side by side in one process, interleaved.

    Latency percentiles, clips/s and frames/s, peak memory, and achieved FLOP/s as a share of a matmul timed
    in the same run; each artifact's ratio to the first.
    """
    from runtime.bench import BENCH_COLUMNS, bench_rows, benchmark

    if iterations is not None and duration is not None:
        raise ConfigError("give --iterations or --duration, not both")
    if json_out:
        check_writable(json_out, force)
    batches = parse_batches(batch)
    opts = torch_options(precision, channels_last, cuda_graphs)
    runners = [open_cli_runner(p, provider, device, threads, opts) for p in artifacts]
    if iterations is None and duration is None:
        iterations = 50
    with progress_bar() as bar:
        task = bar.add_task("benchmarking", total=len(batches) * min(rounds, iterations or rounds) * len(runners))
        result = benchmark(runners, batches=batches, iterations=iterations, duration=duration, warmup=warmup,
                           rounds=rounds, flops=flops, reference=flops, seed=seed,
                           progress=lambda what: bar.update(task, advance=1, description=what))
    print_table("Benchmark (latency per call; ratios of p50 to the first artifact)", BENCH_COLUMNS,
                     bench_rows(result))
    for ref in result["reference"]:
        console.print(f"matmul reference on {ref['device']} ({ref['dtype']}): "
                      f"{ref['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s", highlight=False)
    if json_out:
        write_json(json_out, result)
        console.print(f"wrote {json_out}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)

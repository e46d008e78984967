"""`aarm-export bench`: latency, throughput, memory and FLOP efficiency of artifacts, interleaved."""

from pathlib import Path
from typing import Annotated

import typer

from aarm.errors import ConfigError
from aarm.fileio import check_writable, write_json
from export.console import console, print_table
from export.options import (
    ChannelsLastOpt,
    CudaGraphsOpt,
    DeviceOpt,
    FramesOpt,
    PrecisionOpt,
    ProviderOpt,
    SegmentsOpt,
    ThreadsOpt,
    at_least,
    open_cli_runner,
    print_stage_split,
    torch_options,
)
from export.progress import progress_callback


def parse_batches(text: str) -> list[int]:
    try:
        batches = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise ConfigError(f"--batch takes comma-separated integers, got {text!r}") from None
    if not batches or any(b < 1 for b in batches):
        raise ConfigError(f"--batch takes positive integers, got {text!r}")
    return batches


def bench(
    artifacts: Annotated[list[Path], typer.Argument(
        help="Artifacts (.onnx, .engine, .pt); speed-ups are over the first.")],
    batch: Annotated[str, typer.Option(help="Batch sizes, comma-separated.")] = "1",
    iterations: Annotated[int | None, typer.Option(
        help="Timed calls per artifact and batch (default: 50).", callback=at_least(1))] = None,
    duration: Annotated[float | None, typer.Option(
        help="Seconds of timed calls per artifact and batch, instead of --iterations.",
        callback=at_least(0, strict=True))] = None,
    warmup: Annotated[int, typer.Option(help="Untimed calls per artifact before the first round.",
                                        callback=at_least(1))] = 5,
    rounds: Annotated[int, typer.Option(help="Interleaved rounds the timed calls are split into.",
                                        callback=at_least(1))] = 10,
    switch_warmup: Annotated[int, typer.Option(
        help="Untimed calls each time a round switches artifact, at least; they go on for 100 ms "
             "(the first is reported as the switch cost).",
        callback=at_least(1))] = 1,
    provider: ProviderOpt = None,
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
    precision: PrecisionOpt = "fp32",
    channels_last: ChannelsLastOpt = False,
    cuda_graphs: CudaGraphsOpt = False,
    segments: SegmentsOpt = None,
    frames: FramesOpt = None,
    flops: Annotated[bool, typer.Option(help="Count FLOPs and time a matmul for the efficiency column.")] = True,
    memory: Annotated[bool, typer.Option(help="Measure each artifact's peak memory in a fresh process.")] = True,
    videos: Annotated[Path | None, typer.Option(
        help="Video file or folder (any depth): also time the whole pipeline on each video, per stage (decode, "
             "sampling, preprocessing, host-to-device copy, inference, post-processing), --rounds times.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random inputs and of the bootstrap.")] = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the full result (raw samples too).")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite the --json file.")] = False,
) -> None:
    """Benchmark artifacts side by side in one process, in interleaved rounds.

    Median latency per call, clips/s and frames/s from it, each artifact's speed-up over the first with a 95%
    bootstrap interval (flagged WIDE past 10%), peak memory, achieved FLOP/s as a share of a matmul timed in
    the same run; the host, threads and load are printed and saved.
    """
    from runtime.bench import benchmark
    from runtime.bench_result import bench_columns, bench_notes, bench_rows

    if iterations is not None and duration is not None:
        raise ConfigError("give --iterations or --duration, not both")
    if json_out:
        check_writable(json_out, force)
    batches = parse_batches(batch)
    video_files = find_video_files(videos) if videos is not None else []
    opts = torch_options(precision, channels_last, cuda_graphs)
    runners = [open_cli_runner(p, provider, device, threads, opts, segments=segments, frames=frames)
               for p in artifacts]
    with progress_callback() as report:
        result = benchmark(runners, batches=batches, iterations=iterations, duration=duration, warmup=warmup,
                           rounds=rounds, switch_warmup=switch_warmup, flops=flops, reference=flops, memory=memory,
                           seed=seed, progress=report)
    print_table("Benchmark (median latency per call; every column from the median)", bench_columns(result),
                bench_rows(result))
    for line in bench_notes(result):
        console.print(line, highlight=False, markup=False, soft_wrap=True,
                      style="bold red" if line.startswith("BUSY") else None)
    for ref in result.reference:
        console.print(f"matmul reference on {ref.device} ({ref.dtype}): {ref.matmul_flops_per_s / 1e9:.1f} GFLOP/s",
                      highlight=False)
    if video_files:
        from runtime.timings import video_stage_bench

        with progress_callback() as report:
            result.video_stages = video_stage_bench(runners, video_files, rounds=rounds, progress=report)
        for split in result.video_stages:
            print_stage_split(f"{split['name']} ({split['provider']}) on {split['videos']} video(s) x "
                              f"{split['rounds']} rounds: end-to-end per video, batch = its views", split)
    if json_out:
        write_json(json_out, result.to_json())
        console.print(f"wrote {json_out}", highlight=False, markup=False)


def find_video_files(path: Path) -> list[Path]:
    """The video files of --videos: one file, or every video under a folder; none found is a DataError."""
    from aarm.data.flow import find_videos
    from aarm.errors import DataError

    found = find_videos(path)
    if not found:
        raise DataError(f"--videos {path}: no video files found")
    return found


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)

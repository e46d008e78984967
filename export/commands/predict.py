"""`aarm-export predict`: action labels for video files from any artifact."""

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


def predict(
    videos: Annotated[list[Path], typer.Argument(help="Video files (or frame folders).")],
    artifact: Annotated[Path, typer.Option(help="Model to run (.onnx, .engine, .pt).")],
    top_k: Annotated[int, typer.Option(help="Labels to show per video.", callback=at_least(1))] = 5,
    batch: Annotated[int, typer.Option(help="Clips per inference call.", callback=at_least(1))] = 8,
    clips: Annotated[int, typer.Option(help="Views per video, averaged (evaluation sampling).",
                                       callback=at_least(1))] = 1,
    workers: Annotated[int, typer.Option(help="Threads decoding videos.", callback=at_least(1))] = 2,
    provider: ProviderOpt = None,
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
    precision: PrecisionOpt = "fp32",
    channels_last: ChannelsLastOpt = False,
    cuda_graphs: CudaGraphsOpt = False,
    segments: SegmentsOpt = None,
    frames: FramesOpt = None,
    timings: Annotated[bool, typer.Option(
        "--timings", help="Time each stage (decode, sampling, preprocessing, host-to-device copy, inference, "
                          "post-processing) and print p50/p99 and shares; videos then run one at a time.")] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the predictions as JSON.")] = None,
    explain: Annotated[Path | None, typer.Option(
        "--explain", help="Draw the STAM maps and CAM weights of the (one) video to this PNG, from the artifact's "
        "attention outputs (export --attention-outputs); no PyTorch involved.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite the --json and --explain files.")] = False,
) -> None:
    """Top-k action labels with probabilities for video files.

    Each video is decoded, sampled and preprocessed as the model was trained (from its sidecar or
    checkpoint) and run in batches.
    """
    from runtime.predict import predict_videos, predictions_to_json

    if json_out:
        check_writable(json_out, force)
    if explain is not None:
        if explain.suffix.lower() != ".png" or len(videos) != 1:
            raise ConfigError(f"--explain {explain}: give one video and a .png file to draw its attention maps to")
        check_writable(explain, force)
    runner = open_cli_runner(artifact, provider, device, threads,
                             torch_options(precision, channels_last, cuda_graphs), segments=segments, frames=frames)
    if explain is not None:
        from runtime.explain import require_attention

        require_attention(runner)  # before any decoding: a graph without attention outputs is a one-line error
    split = None
    with progress_callback() as report:
        if timings:
            from runtime.timings import predict_videos_timed, summarise

            predictions, times = predict_videos_timed(runner, videos, top_k=top_k, num_clips=clips, progress=report)
            split = summarise(times)
        else:
            predictions = predict_videos(runner, videos, top_k=top_k, batch=batch, num_clips=clips,
                                         workers=workers, progress=report)
    k = max((len(p.labels) for p in predictions), default=0)
    print_table(
        f"Predictions of {artifact.name} ({runner.provider})",
        ["video", *[f"#{i + 1}" for i in range(k)]],
        [(Path(p.path).name, *[f"{lab} {s:.3f}" for lab, s in zip(p.labels, p.scores, strict=True)])
         for p in predictions],
    )
    if split is not None:
        print_stage_split(f"Stage split over {len(videos)} video(s), one at a time (ms per video)", split)
    if json_out:
        out = predictions_to_json(runner, predictions)
        if split is not None:
            out["timings"] = {**split, "per_video": [t.to_json() for t in times]}
        write_json(json_out, out)
        console.print(f"wrote {json_out}", highlight=False, markup=False)
    if explain is not None:
        from runtime.explain import explain_video

        with runner:
            maps = explain_video(runner, videos[0], explain)
        console.print(f"attention maps of {videos[0].name} ({', '.join(maps.stages)}) in {explain}",
                      highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)

"""`aarm-export stream`: action labels for a video file, URL or camera, window by window."""

import json
import sys
from collections import deque
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer

from aarm.fileio import atomic_path, check_writable
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
    torch_options,
)

TABLE_ROWS = 12
COLUMNS = ("window", "time", "top-1", "lag ms", "total ms", "dropped")


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_summary(summary: dict[str, Any]) -> None:
    """The closing table: stage split p50/p99 and share, then windows, drops and lag."""
    from runtime.timings import STAGE_COLUMNS, stage_rows

    rows = stage_rows(summary) if summary["windows"] else []
    lag = summary["lag_ms"]
    rows.append(("lag", _fmt(lag["p50"], 2), _fmt(lag["p99"], 2), "", "last frame in to result out"))
    print_table(f"Stream: {summary['windows']} windows classified, {summary['dropped']} dropped, "
                f"{summary['frames']} frames in {summary['wall_s']:.1f} s", STAGE_COLUMNS, rows)


def _live_table(rows: deque[tuple[str, ...]], title: str) -> Any:
    from rich.table import Table

    table = Table(title=title)
    for i, col in enumerate(COLUMNS):
        table.add_column(col, justify="left" if i < 3 else "right")
    for row in rows:
        table.add_row(*row)
    return table


def stream(
    source: Annotated[str, typer.Argument(
        help="Video file, rtsp:// or http(s):// URL, or camera device (/dev/video0).")],
    artifact: Annotated[Path, typer.Option(help="Model to run (.onnx, .engine, .pt).")],
    window: Annotated[str, typer.Option(help="Window length: seconds (2s) or frames (64f).")] = "2s",
    stride: Annotated[str, typer.Option(help="Step between window starts: seconds (1s) or frames (16f).")] = "1s",
    top_k: Annotated[int, typer.Option(help="Labels per window.", callback=at_least(1))] = 5,
    smooth: Annotated[int, typer.Option(
        help="Report the mean softmax of the last N classified windows (1: none).", callback=at_least(1))] = 1,
    realtime: Annotated[bool, typer.Option(
        "--realtime", help="Pace a video file at its frame rate, as a live stream (windows may be dropped).")] = False,
    max_windows: Annotated[int | None, typer.Option(
        help="Stop after this many classified windows.", callback=at_least(1))] = None,
    input_format: Annotated[str | None, typer.Option(
        help="FFmpeg input format for devices (default v4l2 for /dev/*; avfoundation, dshow elsewhere).")] = None,
    timeout: Annotated[float, typer.Option(
        help="Seconds to wait when opening or reading a URL (or for a publisher, with --listen).",
        callback=at_least(0, strict=True))] = 10.0,
    listen: Annotated[bool, typer.Option(
        "--listen", help="rtsp:// SOURCE: wait (up to --timeout s) for a publisher to push the stream here.")] = False,
    prep_threads: Annotated[int, typer.Option(
        help="PyTorch threads for crop, resize and normalisation (ONNX graphs and engines; a .pt model's "
             "preprocessing shares its --threads).", callback=at_least(1))] = 1,
    provider: ProviderOpt = None,
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
    precision: PrecisionOpt = "fp32",
    channels_last: ChannelsLastOpt = False,
    cuda_graphs: CudaGraphsOpt = False,
    segments: SegmentsOpt = None,
    frames: FramesOpt = None,
    jsonl: Annotated[Path | None, typer.Option(
        help="Write the JSON lines here (atomically, when the stream ends) instead of stdout.")] = None,
    explain: Annotated[Path | None, typer.Option(
        "--explain", help="Draw each window's STAM maps and CAM weights to DIR/window_NNNNN.png, from the artifact's "
        "attention outputs (export --attention-outputs). Slow: the graph runs again and a figure is drawn per window.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite the --jsonl file and an --explain folder.")] = False,
) -> None:
    """Classify a video stream window by window: one JSON line per window, a live table on a terminal.

    Each window is sampled as the model was trained (TSN segments or a 3D clip, from the sidecar) and
    classified while the next frames decode. A file is read as fast as possible with every window
    classified; a URL, a camera or a --realtime file never waits for the model: a window the model had
    no time for is dropped and counted. Lines: a "stream" header, one "window" per result, a "summary".
    """
    from runtime.stream import VideoStream, parse_span, result_row

    span_w, span_s = parse_span(window, "window"), parse_span(stride, "stride")
    if jsonl:
        check_writable(jsonl, force)
    if explain is not None:
        check_writable(explain, force)
    runner = open_cli_runner(artifact, provider, device, threads, torch_options(precision, channels_last, cuda_graphs),
                             segments=segments, frames=frames)
    if runner.backend != "torch":
        import torch

        torch.set_num_threads(prep_threads)  # a few small frames per window: more threads only contend
    terminal = console.is_terminal
    with ExitStack() as stack:
        out: TextIO | None = None
        if jsonl:
            tmp = stack.enter_context(atomic_path(jsonl))
            out = stack.enter_context(tmp.open("w", buffering=1))
        elif not terminal:
            out = sys.stdout
        stack.enter_context(runner)
        vstream = stack.enter_context(VideoStream(
            runner, source, window=span_w, stride=span_s, top_k=top_k, smooth=smooth, realtime=realtime,
            max_windows=max_windows, input_format=input_format, timeout=timeout, listen=listen, explain=explain))

        def emit(obj: dict[str, Any]) -> None:
            if out is not None:
                out.write(json.dumps(obj) + "\n")
                out.flush()

        emit(vstream.describe())
        title = (f"{Path(source).name if vstream.info.kind == 'file' else source} · {artifact.name} · "
                 f"window {vstream.window_frames} f, stride {vstream.stride_frames} f")
        rows: deque[tuple[str, ...]] = deque(maxlen=TABLE_ROWS)
        update: Callable[[], None] = lambda: None  # noqa: E731
        if terminal:
            from rich.live import Live

            live = stack.enter_context(Live(_live_table(rows, title), console=console, refresh_per_second=4))
            update = lambda: live.update(_live_table(rows, title))  # noqa: E731
        try:
            for result in vstream:
                emit(result.to_json())
                rows.append(result_row(result))
                update()
        except KeyboardInterrupt:
            vstream.close()  # Ctrl-C ends a live stream: the summary still goes out and the file is kept
        summary = vstream.summary.to_json()
        summary["smoothing"] = vstream.describe()["smoothing"]
        emit(summary)
    if terminal or jsonl:
        print_summary(summary)
    if jsonl:
        console.print(f"wrote {jsonl}", highlight=False, markup=False)
    if explain is not None and (terminal or jsonl):  # stdout otherwise carries JSON lines only
        console.print(f"attention maps of {summary['windows']} windows in {explain}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.command("stream")(stream)

"""`aarm-export make-synthetic` (a synthetic action dataset of real videos) and `aarm-export extract-flow`
(TSN-style frame and optical-flow folders from videos)."""

from pathlib import Path
from typing import Annotated

import typer

from aarm.data.flow import extract_flow as _extract_flow
from aarm.data.synthetic import list_classes
from aarm.data.synthetic import make_synthetic as _make_synthetic
from aarm.fileio import write_json
from export.console import console, print_table
from export.options import at_least
from export.progress import progress_callback


def make_synthetic(
    out: Annotated[Path, typer.Argument(help="Folder to create (UCF101 layout).")],
    classes: Annotated[int, typer.Option(
        help=f"Number of classes, the first N of: {', '.join(list_classes())}.", callback=at_least(1))] = 8,
    videos_per_class: Annotated[int, typer.Option(
        help="Videos per class (about 4 per group).", callback=at_least(2))] = 30,
    seed: Annotated[int, typer.Option(
        help="Random seed; the same seed gives byte-identical files.", callback=at_least(0))] = 0,
    frames: Annotated[int, typer.Option(help="Frames per video.", callback=at_least(2))] = 32,
    size: Annotated[int, typer.Option(help="Frame height and width in pixels (even).", callback=at_least(16))] = 112,
    trails: Annotated[
        bool, typer.Option("--trails/--no-trails", help="Draw fading trails of the object's recent past.")
    ] = True,
    codec: Annotated[str, typer.Option(help="auto (libx264, else mpeg4), libx264, h264 or mpeg4.")] = "auto",
    workers: Annotated[int, typer.Option(help="Processes synthesising videos in parallel.", callback=at_least(1))] = 1,
    force: Annotated[bool, typer.Option("--force", help="Replace a non-empty OUT.")] = False,
) -> None:
    """Write a synthetic action dataset whose classes differ only over time (see aarm.data.synthetic)."""
    with progress_callback() as report:
        summary = _make_synthetic(
            out, classes=classes, videos_per_class=videos_per_class, seed=seed, frames=frames, size=size,
            trails=trails, force=force, codec=codec, workers=workers, progress=report,
        )
    print_table(
        f"Synthetic dataset {summary.root}",
        ["classes", "train videos", "test videos", "frames", "size", "trails", "codec", "seconds"],
        [(len(summary.classes), summary.train, summary.test, frames, size, trails, summary.codec,
          f"{summary.seconds:.1f}")],
    )
    console.print(f"read it with load_split({str(summary.root)!r}); metadata in {summary.root / 'dataset.json'}")


def extract_flow(
    video_root: Annotated[Path, typer.Argument(help="Folder of videos (any depth), or one video file.")],
    out: Annotated[Path, typer.Argument(help="Output root: OUT/<relative folder>/<video stem>/.")],
    method: Annotated[str, typer.Option(help="auto (TV-L1 if OpenCV has it, else Farneback), tvl1, farneback.")] = (
        "auto"
    ),
    bound: Annotated[float, typer.Option(
        help="Flow clipped to +-bound pixels before quantising to 0..255.", callback=at_least(0, strict=True))] = 20.0,
    workers: Annotated[int, typer.Option(help="Videos processed in parallel.", callback=at_least(1))] = 1,
) -> None:
    """Extract RGB frames and optical flow as TSN JPEG folders; resumable (finished videos are skipped)."""
    with progress_callback() as report:
        summary = _extract_flow(video_root, out, method=method, bound=bound, workers=workers, progress=report)
    print_table(
        f"Optical flow in {out}",
        ["method", "bound", "extracted", "skipped", "frames", "flow fields", "seconds"],
        [(summary.method, summary.bound, len(summary.extracted), len(summary.skipped), summary.frames,
          summary.flows, f"{summary.seconds:.1f}")],
    )
    write_json(Path(out) / "extract_flow.json", summary.to_dict())


def register(app: typer.Typer) -> None:
    app.command("make-synthetic")(make_synthetic)
    app.command("extract-flow")(extract_flow)

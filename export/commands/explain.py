"""`aarm-export explain`: STAM heatmaps and CAM channel weights for one video."""

from pathlib import Path
from typing import Annotated

import typer

from aarm.checkpoint import load_checkpoint
from aarm.data.clips import load_video_input
from aarm.errors import ConfigError
from aarm.explain import capture_attention, render_gif, render_png
from aarm.fileio import check_writable
from export.console import console


def explain(
    video: Annotated[Path, typer.Argument(help="A video file (or frame folder) to explain.")],
    checkpoint: Annotated[Path, typer.Option("--checkpoint", "-c", help="A trained AARM checkpoint.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="out.png (grid) or out.gif (animation).")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing output.")] = False,
) -> None:
    """Show where (STAM) and on which channels (CAM) the model attends, with its predicted class."""
    if out.suffix.lower() not in (".png", ".gif"):
        raise ConfigError(f"{out}: output must end in .png or .gif")
    if checkpoint.suffix.lower() in (".onnx", ".engine"):
        raise ConfigError(f"{checkpoint}: explain reads the attention maps of the PyTorch checkpoint (.pt) it was "
                          "exported from; an ONNX graph or engine returns scores only")
    check_writable(out, force)
    ckpt = load_checkpoint(checkpoint)
    x = load_video_input(video, ckpt.preprocessing)[:1]
    maps = capture_attention(ckpt.model, x)
    render = render_gif if out.suffix.lower() == ".gif" else render_png
    render(maps, x, ckpt.preprocessing, ckpt.classes, out)
    top = int(maps.scores.argmax())
    console.print(f"{video.name}: predicted [bold]{ckpt.classes[top]}[/]; attention maps in {out}")


def register(app: typer.Typer) -> None:
    app.command("explain")(explain)

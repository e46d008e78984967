"""Attention maps for one video: STAM heatmaps per stage and CAM weights, as PNG and GIF."""

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import aarm
from aarm.checkpoint import save_checkpoint
from aarm.data.preprocessing import Preprocessing
from aarm.data.synthetic import make_synthetic
from aarm.explain import capture_attention
from export.cli import app


def test_capture_2d_and_3d_shapes():
    model = aarm.create_model("resnet18", num_classes=4, segments=3).eval()
    maps = capture_attention(model, torch.randn(1, 3, 3, 64, 64))
    assert len(maps.stages) == 4
    assert [m.shape for m in maps.stam] == [(3, 1, 16, 16), (3, 1, 8, 8), (3, 1, 4, 4), (3, 1, 2, 2)]
    assert [m.shape for m in maps.cam] == [(3, 64), (3, 128), (3, 256), (3, 512)]
    assert all(((m > 0) & (m < 1)).all() for m in maps.stam + maps.cam)
    x = torch.randn(1, 3, 3, 64, 64)
    with torch.no_grad():
        np.testing.assert_allclose(capture_attention(model, x).scores, model(x)[0].numpy(), atol=1e-5)
    model3d = aarm.create_model("resnet3d18", num_classes=4).eval()
    maps3d = capture_attention(model3d, torch.randn(1, 3, 8, 32, 32))
    assert maps3d.stam[0].shape == (1, 4, 8, 8)


def test_plain_model_has_nothing_to_explain():
    with pytest.raises(aarm.ConfigError, match="no AARM blocks"):
        capture_attention(aarm.create_model("resnet18", num_classes=4, attention="se").eval(),
                          torch.randn(1, 3, 3, 32, 32))


def test_explain_command_writes_png_and_gif(tmp_path):
    root = tmp_path / "data"
    make_synthetic(root, classes=2, videos_per_class=2, frames=8, size=48)
    video = next((root / "videos").rglob("*.*4"))
    model = aarm.create_model("resnet18", num_classes=2, segments=3)
    ckpt = save_checkpoint(tmp_path / "m.pt", model, classes=["MoveLeft", "MoveRight"],
                           preprocessing=Preprocessing.for_model(model.aarm_config, size=48))
    for suffix in ("png", "gif"):
        out = tmp_path / f"maps.{suffix}"
        result = CliRunner().invoke(app, ["explain", str(video), "-c", str(ckpt), "-o", str(out)])
        assert result.exit_code == 0, result.output
        image = Image.open(out)
        assert image.format == suffix.upper()
    assert Image.open(tmp_path / "maps.gif").n_frames == 3  # one per sampled snippet
    again = CliRunner().invoke(app, ["explain", str(video), "-c", str(ckpt), "-o", str(tmp_path / "maps.png")])
    assert again.exit_code != 0 and "--force" in str(again.exception)


def test_png_heading_is_not_cut_off(tmp_path, monkeypatch):
    """The demo's picture (K=3, so a narrow figure) once had its heading cut off at both ends."""
    import matplotlib.figure

    from aarm.explain import render_png

    saved = []
    original = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda fig, *a, **k: (saved.append(fig), original(fig, *a, **k))[1])
    model = aarm.create_model("resnet18", num_classes=2, segments=3).eval()
    x = torch.randn(1, 3, 3, 48, 48)
    preprocessing = Preprocessing.for_model(model.aarm_config, size=48)
    render_png(capture_attention(model, x), x, preprocessing, ["MoveLeftAndThenRightAgain", "MoveRight"],
               tmp_path / "maps.png", title="v_MoveLeftAndThenRightAgain_g01_c01.mp4")
    fig = saved[0]
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()  # the figure is closed after saving
    box, page = fig._suptitle.get_window_extent(renderer), fig.bbox
    assert page.x0 <= box.x0 and box.x1 <= page.x1 and box.y1 <= page.y1, (box, page)
    for ax in fig.axes:  # and the heading does not run into the top row's titles
        assert not ax.get_title() or ax.title.get_window_extent(renderer).y1 <= box.y0

"""Attention pictures from a deployed artifact: the STAM maps and CAM weights that a graph exported with
`--attention-outputs` returns beside its scores, drawn over the frames it was fed (`aarm.attention_picture`).

    with open_runner("model.onnx") as runner:
        maps = explain_feed(runner, feed, Path("out.png"))     # feed: {input: (1, K, C, H, W)}

Nothing here imports PyTorch: the maps come out of the artifact's forward pass (onnxruntime or TensorRT), the
picture from numpy, Pillow and matplotlib.
"""

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from aarm.attention_picture import CAM_LAYOUT, STAM_LAYOUT, AttentionMaps, maps_from_outputs, render_png
from aarm.errors import ConfigError
from runtime.runner import Runner
from runtime.scoring import load_inputs

ATTENTION_LAYOUTS = (STAM_LAYOUT, CAM_LAYOUT)


def attention_outputs(runner: Runner) -> dict[str, str]:
    """{output name: layout} of a runner's attention outputs, from its sidecar (empty without them)."""
    if runner.sidecar is None:
        return {}
    return {t.name: t.layout for t in runner.sidecar.outputs if t.layout in ATTENTION_LAYOUTS}


def require_attention(runner: Runner) -> dict[str, str]:
    """`attention_outputs(runner)`, or a one-line ConfigError saying how to get them."""
    found = attention_outputs(runner)
    if not any(layout == STAM_LAYOUT for layout in found.values()):
        what = runner.path or runner.name
        if runner.sidecar is None:
            raise ConfigError(f"{what}: attention pictures come from the attention outputs of an ONNX graph or "
                              "engine; for a checkpoint use `capture_attention`")
        raise ConfigError(f"{what} has no attention outputs; export it with `attention_outputs`")
    return found


def explain_feed(runner: Runner, feed: Mapping[str, np.ndarray], out: Path, *, title: str = "") -> AttentionMaps:
    """Run the first clip of `feed` ({input name: (V, ...)}) through the (active) runner and draw its maps to
    `out` (PNG, atomic). Single-input artifacts; returns the maps (stages in output order)."""
    layouts = require_attention(runner)
    if len(runner.input_specs) != 1:
        raise ConfigError(f"{runner.name}: attention pictures need a single-input model")
    first = {name: np.ascontiguousarray(x[:1]) for name, x in feed.items()}
    outputs = runner.infer(first)
    maps = maps_from_outputs(outputs, layouts)
    render_png(maps, first[runner.input_specs[0].name], runner.preprocessing[0], runner.classes, out, title=title)
    return maps


def explain_video(runner: Runner, path: str | Path, out: Path) -> AttentionMaps:
    """Decode and preprocess one video as the artifact was trained (its first view) and draw its maps to `out`."""
    require_attention(runner)
    return explain_feed(runner, load_inputs(runner, path, 1), out, title=Path(path).name)

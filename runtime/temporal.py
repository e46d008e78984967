"""Choosing the temporal size of a model input: TSN segments K (2D, NKCHW) or clip frames T (3D, NCTHW).

An exported graph may leave K or T dynamic (named "K" / "T" like the batch "N"); its sidecar records the
valid range per input (`TensorSpec.ranges`, min:opt:max). `choose_temporal` sets a runner to one size inside
that range: its input shapes and its preprocessing (so videos are sampled with that many segments or frames).
A size outside the range, or other than the fixed one of a graph without a dynamic axis, is a ConfigError
(the fixed size itself is accepted).

    runner = choose_temporal(open_runner("model.onnx"), segments=7)   # feeds (N, 7, C, H, W)
"""

import dataclasses

from aarm.errors import ConfigError
from runtime.runner import InputSpec, Runner

# layout -> (axis index, axis name, Preprocessing field: also the parameter that sets it)
AXES = {"NKCHW": (1, "K", "segments"), "NCTHW": (2, "T", "frames")}


def parse_range(text: str, option: str) -> tuple[int, int, int]:
    """'1:8:25' -> (1, 8, 25) (min:opt:max); a single number 'K' means a fixed size (K, K, K)."""
    try:
        values = [int(v) for v in text.split(":")]
    except ValueError:
        raise ConfigError(f"{option}: unreadable range {text!r}; use MIN:OPT:MAX, e.g. 1:8:25") from None
    if len(values) == 1:
        values *= 3
    if len(values) != 3:
        raise ConfigError(f"{option}: range {text!r} needs three values MIN:OPT:MAX")
    lo, opt, hi = values
    if not 1 <= lo <= opt <= hi:
        raise ConfigError(f"{option}: range needs 1 <= min <= opt <= max, got {lo}:{opt}:{hi}")
    return lo, opt, hi


def _model_range(runner: Runner, layout: str) -> tuple[int, int, int] | None:
    """What a PyTorch model accepts: any K for TSN, any T for a 3D model with global pooling, only its own T
    for a model with fixed-size fully connected layers (C3D): None there."""
    config = getattr(runner, "config", None)
    if layout == "NCTHW" and config is not None:
        from aarm.models.registry import get_spec

        if get_spec(config["name"]).fixed_frames:
            return None
    return (1, 1, 1 << 30)


def _ranges(runner: Runner, index: int, axis: str, layout: str) -> tuple[int, int, int] | None:
    """The valid (min, opt, max) of input `index`'s temporal axis; None when the axis is fixed."""
    if runner.sidecar is None:
        return _model_range(runner, layout)
    r = (runner.sidecar.inputs[index].ranges or {}).get(axis)
    return None if r is None else (r["min"], r["opt"], r["max"])


def _requested(segments: int | None, frames: int | None, layouts: list[str], where: str) -> tuple[str, int] | None:
    """(layout, size) that the flags ask for, checked against the layouts the model takes; None: neither."""
    if segments is None and frames is None:
        return None
    if segments is not None and frames is not None:
        raise ConfigError("give `segments` (2D TSN models) or `frames` (3D models), not both")
    layout, size = ("NKCHW", segments) if segments is not None else ("NCTHW", frames)
    assert size is not None
    param = f"`{AXES[layout][2]}`"
    if not layouts:
        raise ConfigError(f"{param} needs the input layout a sidecar or checkpoint records; {where} has none")
    if layout not in layouts:
        other = "`frames` (a 3D clip model, NCTHW)" if layout == "NKCHW" else "`segments` (a 2D TSN model, NKCHW)"
        raise ConfigError(f"{param} does not apply to {where}: it takes {other}")
    if size < 1:
        raise ConfigError(f"{param} must be >= 1, got {size}")
    return layout, size


def choose_temporal(runner: Runner, *, segments: int | None = None, frames: int | None = None) -> Runner:
    """Set `runner` to `segments` K (2D) or `frames` T (3D) on every input of that layout; returns it.

    None for both leaves the runner as its sidecar or checkpoint set it. Refused (ConfigError, one line): a
    size for the other layout, a size outside the recorded range, a size other than the fixed one of a graph
    exported without a dynamic K / T or of a model whose architecture fixes T (C3D).
    """
    asked = _requested(segments, frames, [p.layout for p in runner.preprocessing], runner.name)
    if asked is None:
        return runner
    layout, size = asked
    index, axis, field = AXES[layout]
    param = f"`{field}`"
    specs, preps = list(runner.input_specs), list(runner.preprocessing)
    for i, (spec, prep) in enumerate(zip(specs, preps, strict=True)):
        if prep.layout != layout:
            continue
        current = getattr(prep, field)
        valid = _ranges(runner, i, axis, layout)
        if valid is None and size != current:
            why = "its architecture fixes it" if runner.sidecar is None else f"export it again with a dynamic {axis}"
            raise ConfigError(f"{param} {size}: {runner.name} has a fixed {axis} = {current} (input {spec.name!r}); "
                              f"{why}")
        if valid is not None and not valid[0] <= size <= valid[2]:
            raise ConfigError(f"{param} {size} is outside the range {valid[0]}..{valid[2]} that {runner.name} "
                              f"records for {axis} (input {spec.name!r})")
        shape = list(spec.shape)
        shape[index] = size
        specs[i] = InputSpec(spec.name, tuple(shape), spec.dtype)
        preps[i] = dataclasses.replace(prep, **{field: size})
    runner.input_specs = specs
    runner.preprocessing = preps
    return runner


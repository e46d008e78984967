"""PyTorch -> ONNX: an eval-mode graph with a dynamic batch axis "N", labels and preprocessing inside.

    sidecar = export_onnx(model, Path("model.onnx"), classes=labels, preprocessing=prep, trained=True)
    sidecar = export_checkpoint("checkpoint.pt", Path("model.onnx"))

Exporter: torch.onnx's dynamo exporter (`torch.onnx.export(..., dynamo=True)`, torch.export underneath).
On torch 2.13 it is the one that exports every registered model: the TorchScript exporter loses the
static spatial sizes once the batch axis is dynamic and then refuses VGG-16's adaptive 7x7 pool, and it
is deprecated. The dynamo graph is also the cleaner one (no Constant / Identity / Shape-Gather-Concat
chains, BatchNorm folded into the convolutions by its optimizer), and the batch stays a symbolic "N"
through the whole graph. It emits opset 18 at least; a lower requested opset (the default 17, which
TensorRT 10 and older runtimes take) is reached with onnx's version converter, checked afterwards; so is a
higher one than the exporter wrote (up to the newest opset the installed onnx knows).

Models: a TSN-wrapped 2D model takes (N, K, C, H, W) and gives consensus scores (N, classes); a 3D model
takes (N, C, T, H, W). K is dynamic too (the consensus is an average over segments), and so is T where the
architecture allows it (3D ResNet pools globally; C3D's fully connected layers fix T); the valid range is
recorded in the sidecar (`TensorSpec.ranges`, see `temporal_axes`). `aarm.TwoStream(rgb, flow)` becomes one
graph with the two inputs "rgb" and "flow". Single-stream graphs have the input "input"; every graph has the
output "scores", first; with `attention_outputs=True` each stage's STAM maps and CAM weights follow it
(docs/attention-outputs.md).
"""

import contextlib
import io
import json
import logging
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from aarm.data.preprocessing import Preprocessing
from aarm.errors import ConfigError
from aarm.fileio import atomic_path, check_writable
from aarm.models.tsn import TwoStream
from runtime.artifact import Sidecar, TensorSpec, write_sidecar
from runtime.bisect import record_module_outputs
from runtime.errors import ArtifactError
from runtime.graph_precision import RANDOM_OPS, consumers, producers

DEFAULT_OPSET = 17
MIN_OPSET = 17
EXPORTER_OPSET = 18  # the lowest opset torch 2.13's dynamo exporter writes
TRACE_BATCH = 2  # torch.export specialises batch 0/1; trace with 2 and keep N symbolic

# Ops an eval graph has none of: random ones, and Dropout, which torch leaves only in a graph traced in training
# mode (an eval export drops it), so here it marks a training graph even though an inference Dropout is an identity.
TRAINING_OPS = RANDOM_OPS | {"Dropout"}
_COMPARISONS = frozenset({"Greater", "GreaterOrEqual", "Less", "LessOrEqual"})
# Ops a highlighted-map branch threads its max or its mask through (scaling, reshaping, casting).
_PASS_THROUGH = frozenset(
    {"Mul", "Div", "Add", "Sub", "Reshape", "Flatten", "Unsqueeze", "Squeeze", "Expand", "Cast", "Identity", "Not",
     "And", "Or", "Transpose"}
)
METADATA_KEYS = ("aarm.model", "aarm.classes", "aarm.preprocessing", "aarm.trained", "aarm.inputs")


# --------------------------------------------------------------------------------------------------- eval check


def _graphs(model: onnx.ModelProto) -> Iterable[tuple[str, Sequence[onnx.NodeProto]]]:
    """The main graph, every subgraph (If / Loop / Scan bodies) and every local function, as node lists."""
    stack: list[tuple[str, onnx.GraphProto]] = [("main graph", model.graph)]
    while stack:
        where, graph = stack.pop()
        yield where, graph.node
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    stack.append((f"subgraph of {node.name or node.op_type}", attr.g))
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    stack.extend((f"subgraph of {node.name or node.op_type}", g) for g in attr.graphs)
    for fn in model.functions:
        yield f"function {fn.domain}:{fn.name}", fn.node


def _node_label(node: onnx.NodeProto) -> str:
    return f"{node.op_type} node {node.name!r}" if node.name else f"{node.op_type} node producing {node.output[0]!r}"


def _ancestors(name: str, producer: dict[str, onnx.NodeProto], depth: int = 8) -> tuple[set[str], list[onnx.NodeProto]]:
    """Tensor names reachable backwards from `name` through pass-through ops, and the non-pass-through
    producers met at the boundary (e.g. a ReduceMax)."""
    names, boundary, frontier = {name}, [], [name]
    for _ in range(depth):
        nxt = []
        for t in frontier:
            node = producer.get(t)
            if node is None:
                continue
            if node.op_type in _PASS_THROUGH:
                data_only = node.op_type in ("Reshape", "Unsqueeze", "Squeeze", "Expand")
                for i in node.input[:1] if data_only else node.input:
                    if i and i not in names:
                        names.add(i)
                        nxt.append(i)
            else:
                boundary.append(node)
        frontier = nxt
    return names, boundary


def _feeds_mask_consumer(name: str, readers: dict[str, list[onnx.NodeProto]], depth: int = 4) -> bool:
    frontier = [name]
    for _ in range(depth):
        nxt = []
        for t in frontier:
            for node in readers.get(t, []):
                if node.op_type in ("Where", "Cast"):
                    return True
                if node.op_type in ("Not", "And", "Or", "Unsqueeze", "Reshape", "Expand"):
                    nxt.extend(node.output)
        frontier = nxt
    return False


def check_eval_graph(model: onnx.ModelProto) -> None:
    """Refuse a graph that is not a deterministic inference graph, naming the offending node.

    Refused, wherever they sit (main graph, subgraphs, functions):
    - random ops: RandomUniform(Like), RandomNormal(Like), Bernoulli, Dropout, Multinomial;
    - STAM's highlighted-map branch, matched by op pattern: a comparison (Greater / GreaterOrEqual / Less /
      LessOrEqual) of a tensor against (a scaled) ReduceMax of that same tensor, whose result feeds a
      Where or Cast, i.e. H = 1[A >= eta * max(A)].
    Raises ArtifactError.
    """
    for where, nodes in _graphs(model):
        producer, readers = producers(nodes), consumers(nodes)
        for node in nodes:
            if node.op_type in TRAINING_OPS and node.domain in ("", "ai.onnx"):
                raise ArtifactError(f"not an eval graph: random op {_node_label(node)} in the {where}")
        for node in nodes:
            if node.op_type not in _COMPARISONS or len(node.input) != 2:
                continue
            lineages = [_ancestors(i, producer) for i in node.input]
            for side in (0, 1):
                names_other = lineages[1 - side][0]
                for reduce in lineages[side][1]:
                    if reduce.op_type != "ReduceMax":
                        continue
                    reduced, _ = _ancestors(reduce.input[0], producer)
                    if reduced & names_other and _feeds_mask_consumer(node.output[0], readers):
                        raise ArtifactError(
                            f"not an eval graph: highlighted-map branch in the {where} ({_node_label(node)} "
                            f"thresholds a tensor against {_node_label(reduce)}); export STAM in eval mode"
                        )


# ------------------------------------------------------------------------------------------------- describing


def _as_list(preprocessing: Preprocessing | Sequence[Preprocessing]) -> list[Preprocessing]:
    items = [preprocessing] if isinstance(preprocessing, Preprocessing) else list(preprocessing)
    if not items or not all(isinstance(p, Preprocessing) for p in items):
        raise ConfigError("preprocessing must be a Preprocessing or a list of them, one per model input")
    return items


def model_config(model: nn.Module) -> dict[str, Any]:
    """The sidecar's `model` entry: `aarm_config`, or for a two-stream model both streams' configs."""
    if isinstance(model, TwoStream):
        streams = {k: getattr(getattr(model, k), "aarm_config", None) for k in ("rgb", "flow")}
        if any(v is None for v in streams.values()):
            raise ConfigError("both streams of a TwoStream model need an aarm_config (build them with create_model)")
        return {
            "name": "two_stream",
            "num_classes": streams["rgb"]["num_classes"],
            "weights": list(model.weights),
            "streams": streams,
        }
    config = getattr(model, "aarm_config", None)
    if config is None:
        raise ConfigError("model has no aarm_config; build it with aarm.create_model")
    return dict(config)


def input_names(model: nn.Module) -> list[str]:
    return ["rgb", "flow"] if isinstance(model, TwoStream) else ["input"]


def _check_inputs(model: nn.Module, preps: list[Preprocessing], config: dict[str, Any]) -> None:
    names = input_names(model)
    if len(preps) != len(names):
        raise ConfigError(f"{len(preps)} preprocessing(s) for a model with {len(names)} input(s) ({', '.join(names)})")
    configs = [config["streams"]["rgb"], config["streams"]["flow"]] if "streams" in config else [config]
    for name, prep, cfg in zip(names, preps, configs, strict=True):
        if prep.channels != int(cfg["in_channels"]):
            raise ConfigError(
                f"input {name!r}: preprocessing gives {prep.channels} channels ({prep.modality}, {prep.layout}), "
                f"the model takes {cfg['in_channels']}"
            )


# ---------------------------------------------------------------------------------------------------- export


@contextlib.contextmanager
def _quiet_exporter() -> Any:
    """Silence the dynamo exporter's progress prints and warnings; yields the captured text."""
    buffer = io.StringIO()
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "torch")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            warnings.simplefilter("ignore")
            yield buffer
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _convert_opset(proto: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """Convert the default-domain opset (down, or up) with onnx's converter, then drop the attributes it leaves on
    reductions that moved `axes` back from an input to an attribute (noop_with_empty_axes is opset 18+)."""
    try:
        converted = onnx.version_converter.convert_version(proto, opset)
    except Exception as exc:  # the converter raises RuntimeError / ValidationError for unsupported adapters
        raise ArtifactError(f"cannot convert the exported graph to opset {opset}: {str(exc).splitlines()[0]}") from None
    reductions = {"ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum",
                  "ReduceLogSumExp", "ReduceSumSquare"}
    for node in converted.graph.node:
        if node.op_type in reductions and opset < 18:
            keep = [a for a in node.attribute if a.name != "noop_with_empty_axes"]
            if len(keep) != len(node.attribute):
                if any(a.name == "noop_with_empty_axes" and a.i for a in node.attribute):
                    raise ArtifactError(f"{_node_label(node)} uses noop_with_empty_axes, which opset {opset} lacks")
                del node.attribute[:]
                node.attribute.extend(keep)
    return converted


@dataclass(frozen=True)
class TemporalAxis:
    """A dynamic K (axis 1 of NKCHW) or T (axis 2 of NCTHW) of one graph input, valid over min..max."""

    index: int
    name: str
    min: int
    opt: int
    max: int


DEFAULT_MAX_SEGMENTS = 25  # the paper's test protocol samples 25 segments
_FIELD = {"K": "segments", "T": "frames"}  # axis name -> Preprocessing field


def temporal_axes(
    preps: list[Preprocessing], names: list[str], config: dict[str, Any],
    temporal_range: tuple[int, int, int] | None = None,
) -> tuple[dict[str, TemporalAxis], str | None]:
    """Which inputs get a dynamic K / T and over what range; returns (axes by input name, why T stays fixed).

    2D (NKCHW): K is dynamic (TSN's consensus is an average over segments), default range 1:K:max(K, 25).
    3D (NCTHW): T is dynamic for models that pool globally (3D ResNet), default 1:T:4T; C3D's fully connected
    layers take a fixed-size pool5 output, so its T stays fixed (the reason is returned). A range with
    min == max keeps the axis fixed at that size. The preprocessing's K / T must lie in the range.
    """
    from aarm.models.registry import get_spec

    stream = config["streams"]["rgb"] if "streams" in config else config
    axes: dict[str, TemporalAxis] = {}
    fixed_reason = None
    for name, prep in zip(names, preps, strict=True):
        index, axis, current = (1, "K", prep.segments) if prep.layout == "NKCHW" else (2, "T", prep.frames)
        if axis == "T" and get_spec(stream["name"]).fixed_frames:
            fixed_reason = f"{stream['name']} has fully connected layers sized for T = {current}: T stays fixed"
            if temporal_range is not None and temporal_range != (current,) * 3:
                raise ConfigError(f"{fixed_reason}; a T range {':'.join(map(str, temporal_range))} cannot apply")
            continue
        default_max = max(current, DEFAULT_MAX_SEGMENTS) if axis == "K" else 4 * current
        lo, opt, hi = temporal_range or (1, current, default_max)
        if not 1 <= lo <= opt <= hi:
            raise ConfigError(f"a {axis} range needs 1 <= min <= opt <= max, got {lo}:{opt}:{hi}")
        if not lo <= current <= hi:
            raise ConfigError(f"input {name!r} samples {axis} = {current}, outside the range {lo}:{opt}:{hi}")
        if lo != hi:
            axes[name] = TemporalAxis(index, axis, lo, opt, hi)
    sizes = {(a.name, getattr(p, _FIELD[a.name])) for n, p in zip(names, preps, strict=True) if (a := axes.get(n))}
    if len({a for a, _ in sizes}) != len(sizes):
        raise ConfigError(f"the inputs sample different sizes of one dynamic axis ({sorted(sizes)}); "
                          "export them with a fixed size")
    return axes, fixed_reason


def _narrowed(axes: dict[str, TemporalAxis], proved: dict[str, tuple[int, int] | None], preps: list[Preprocessing],
              names: list[str]) -> dict[str, TemporalAxis]:
    """The axes narrowed to the range torch.export proved for the traced graph (the opt clamped into it); an
    axis it specialised, or narrowed away from the preprocessing's own K / T, is an ArtifactError."""
    out = {}
    for name, a in axes.items():
        bounds = proved.get(name, (a.min, a.max))
        current = getattr(dict(zip(names, preps, strict=True))[name], _FIELD[a.name])
        if bounds is None or not bounds[0] <= current <= bounds[1]:
            got = "fixed it" if bounds is None else f"proved only {bounds[0]}..{bounds[1]}"
            raise ArtifactError(f"input {name!r}: torch.export {got} for a dynamic {a.name}; export with "
                                f"--temporal-range {current} to keep {a.name} = {current} fixed")
        lo, hi = bounds
        out[name] = replace(a, min=lo, max=hi, opt=min(max(a.opt, lo), hi))
    return out


def _trace_size(axis: TemporalAxis, current: int) -> int:
    """torch.export specialises sizes 0 and 1: trace a dynamic axis with a size >= 2 inside its range."""
    return current if current >= 2 else min(2, axis.max)


def _name_temporal_axes(proto: onnx.ModelProto, axes: dict[str, TemporalAxis]) -> None:
    """Name each dynamic K / T of a graph input ("K", "T") as the batch axis is named "N"."""
    for value in proto.graph.input:
        if value.name in axes:
            dim = value.type.tensor_type.shape.dim[axes[value.name].index]
            dim.ClearField("dim_value")
            dim.dim_param = axes[value.name].name


def _dynamic_axes(axes: dict[str, TemporalAxis]) -> dict[str, str]:
    """The sidecar's `extra.dynamic_axes`: {"batch": "N"} plus {"segments": "K"} or {"frames": "T"}."""
    named = {"batch": "N"}
    for a in axes.values():
        named["segments" if a.name == "K" else "frames"] = a.name
    return named


def _name_batch_axis(proto: onnx.ModelProto) -> None:
    """Every graph input/output gets "N" as its first axis (the exporter may name it otherwise)."""
    for value in [*proto.graph.input, *proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "N"


def _set_metadata(proto: onnx.ModelProto, entries: dict[str, Any]) -> None:
    kept = [p for p in proto.metadata_props if p.key not in entries]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in entries.items():
        proto.metadata_props.add(key=key, value=json.dumps(value))


def _attention_specs(proto: onnx.ModelProto, names: Sequence[str]) -> list[TensorSpec]:
    """Sidecar entries of the attention outputs `names`, shaped as the graph declares them (a dynamic axis by
    its name): "stam.*" layout NVTHW, "cam.*" layout NVC."""
    from aarm.attention_picture import CAM_LAYOUT, STAM_LAYOUT, STAM_PREFIX

    declared = {v.name: v for v in proto.graph.output}
    specs = []
    for name in names:
        dims = declared[name].type.tensor_type.shape.dim
        shape: list[int | str] = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0
                                  else (d.dim_param or f"d{i}") for i, d in enumerate(dims)]
        specs.append(TensorSpec(name, shape, layout=STAM_LAYOUT if name.startswith(STAM_PREFIX) else CAM_LAYOUT))
    return specs


def _trace_to_onnx(
    model: nn.Module, example: tuple[torch.Tensor, ...], names: list[str], opset: int,
    temporal: dict[str, "TemporalAxis"] | None = None, outputs: Sequence[str] = ("scores",),
    proved: dict[str, tuple[int, int] | None] | None = None,
) -> onnx.ModelProto:
    """temporal: input name -> its dynamic K or T axis; inputs that share K share one Dim. A T is `Dim.AUTO`
    over its range: torch.export specialises sizes of 1 deep in a 3D network (a clip downsampled to one frame),
    so it narrows the range to what the traced graph holds for instead of refusing the export. proved: filled
    with each temporal input's (min, max) as torch.export proved it, None where it fixed the axis.
    outputs: the graph's output names, one per value the model returns."""
    batch = torch.export.Dim("N", min=1, max=4096)
    dims = {a.name: torch.export.Dim(a.name, min=a.min, max=a.max) for a in (temporal or {}).values()
            if a.name == "K"}

    def temporal_dim(a: TemporalAxis) -> Any:
        return dims[a.name] if a.name in dims else torch.export.Dim.AUTO(min=a.min, max=a.max)

    dynamic_shapes = tuple(  # positional, one per forward argument
        {0: batch, **({temporal[n].index: temporal_dim(temporal[n])} if temporal and n in temporal else {})}
        for n in names
    )
    with _quiet_exporter() as captured:
        try:
            program = torch.onnx.export(
                model, example, None, dynamo=True, input_names=names, output_names=list(outputs),
                opset_version=max(opset, EXPORTER_OPSET), dynamic_shapes=dynamic_shapes, external_data=False,
                optimize=True, verify=False, report=False,
            )
        except Exception as exc:  # torch.export / onnxscript raise many types; report the first line
            text = str(exc).strip().splitlines()
            tail = captured.getvalue().strip().splitlines()
            detail = text[0] if text else (tail[-1] if tail else type(exc).__name__)
            raise ArtifactError(f"torch.onnx export failed: {type(exc).__name__}: {detail[:300]}") from None
    if program is None:
        raise ArtifactError("torch.onnx export returned no program")
    if proved is not None and temporal:
        proved.update(_proved_ranges(program.exported_program, names, temporal))
    return program.model_proto


def _proved_ranges(program: Any, names: list[str], temporal: dict[str, TemporalAxis]) -> dict[str, Any]:
    """Input name -> (min, max) of its temporal axis in torch.export's range constraints; None if specialised."""
    user_inputs = list(program.graph_signature.user_inputs)
    nodes = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    out: dict[str, tuple[int, int] | None] = {}
    for name, node_name in zip(names, user_inputs, strict=False):
        if name not in temporal:
            continue
        size = nodes[node_name].meta["val"].shape[temporal[name].index]
        if isinstance(size, int):
            out[name] = None
            continue
        bounds = program.range_constraints.get(size.node.expr)
        lo, hi = temporal[name].min, temporal[name].max
        if bounds is not None:
            lo = max(lo, int(bounds.lower))
            hi = min(hi, int(bounds.upper)) if bounds.upper.is_finite else hi
        out[name] = (lo, hi)
    return out


def export_onnx(
    model: nn.Module,
    out: Path,
    *,
    classes: list[str],
    preprocessing: Preprocessing | list[Preprocessing],
    trained: bool,
    opset: int = DEFAULT_OPSET,
    force: bool = False,
    temporal_range: tuple[int, int, int] | None = None,
    attention_outputs: bool = False,
) -> Sidecar:
    """Export `model` in eval mode to `out` (atomically) with its sidecar `<out>.json`; returns the sidecar.

    classes: one label per output class. preprocessing: one per model input (a TwoStream model: RGB then
    flow). trained: recorded in the sidecar (False for a freshly initialised model). The graph takes
    (N, K, C, H, W) (2D, TSN) or (N, C, T, H, W) (3D) with a dynamic batch N and returns scores (N, classes);
    K, and T where the architecture allows it, are dynamic too, over `temporal_range` (min, opt, max; default
    and rules in `temporal_axes`), recorded in the sidecar as the inputs' `ranges`;
    labels, preprocessing and the model config are stored in its metadata_props too, and so are the output
    tensors of its blocks, stages and attention modules (`runtime.bisect`, for `parity --bisect`). The graph
    is refused (ArtifactError) if it holds a random op or STAM's highlighted-map branch, or fails onnx's full check.
    attention_outputs: also return each stage's STAM maps and CAM weights as extra outputs after "scores"
    ("stam.<stage>" (N, V, T', h, w), "cam.<stage>" (N, V, C); `aarm.explain.WithAttentionOutputs`), recorded
    in the sidecar with layouts NVTHW / NVC; single-stream AARM models only (ConfigError otherwise).
    The model's training flag is restored afterwards.
    """
    out = Path(out)
    check_writable(out, force)
    if opset < MIN_OPSET:
        raise ConfigError(f"opset must be >= {MIN_OPSET}, got {opset}")
    if opset > onnx.defs.onnx_opset_version():
        raise ConfigError(f"opset must be <= {onnx.defs.onnx_opset_version()} (the newest onnx "
                          f"{onnx.__version__} knows), got {opset}")
    config = model_config(model)
    preps = _as_list(preprocessing)
    _check_inputs(model, preps, config)
    num_classes = int(config["num_classes"])
    if len(classes) != num_classes:
        raise ConfigError(f"{len(classes)} class labels for a model with {num_classes} classes")
    names = input_names(model)
    axes, fixed_reason = temporal_axes(preps, names, config, temporal_range)
    traced = [replace(p, **{_FIELD[a.name]: _trace_size(a, getattr(p, _FIELD[a.name]))}) if (a := axes.get(n)) else p
              for n, p in zip(names, preps, strict=True)]
    shapes = [p.input_shape(TRACE_BATCH) for p in traced]
    example = tuple(torch.randn(s) for s in shapes)

    traced_model, extra_outputs = model, []
    if attention_outputs:
        from aarm.explain import WithAttentionOutputs

        traced_model = WithAttentionOutputs(model, preps[0].layout)
        extra_outputs = traced_model.names
    was_training = model.training
    traced_model.eval()
    try:
        with torch.no_grad():
            proved: dict[str, tuple[int, int] | None] = {}
            proto = _trace_to_onnx(traced_model, example, names, opset, axes, outputs=["scores", *extra_outputs],
                                   proved=proved)
    finally:
        model.train(was_training)
    axes = _narrowed(axes, proved, preps, names)

    record_module_outputs(proto, model, traced_model)  # node scopes do not survive the opset converter
    exported_opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if exported_opset is not None and exported_opset != opset:
        proto = _convert_opset(proto, opset)
    _name_batch_axis(proto)
    _name_temporal_axes(proto, axes)
    inputs = [
        TensorSpec(name, ["N", *p.input_shape(1)[1:]], layout=p.layout)
        for name, p in zip(names, preps, strict=True)
    ]
    for spec in inputs:
        if (a := axes.get(spec.name)) is not None:
            spec.shape[a.index] = a.name
            spec.ranges = {a.name: {"min": a.min, "opt": a.opt, "max": a.max}}
    outputs = [TensorSpec("scores", ["N", num_classes], layout="NC"), *_attention_specs(proto, extra_outputs)]
    prep_dicts: dict[str, Any] | list[dict[str, Any]] = (
        preps[0].to_dict() if len(preps) == 1 else [p.to_dict() for p in preps]
    )
    _set_metadata(proto, {
        "aarm.model": config,
        "aarm.classes": list(classes),
        "aarm.preprocessing": prep_dicts,
        "aarm.trained": bool(trained),
        "aarm.inputs": [{"name": t.name, "shape": t.shape, "layout": t.layout, **({"ranges": t.ranges} if t.ranges
                         else {})} for t in inputs],
    })
    proto.producer_name = "aarm-export"
    check_eval_graph(proto)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ArtifactError(f"exported graph fails onnx's checker: {str(exc).splitlines()[0]}") from None

    with atomic_path(out) as tmp:
        onnx.save_model(proto, str(tmp))
    sidecar = Sidecar(
        kind="onnx", stage="export", precision="fp32", model=config, classes=list(classes),
        preprocessing=prep_dicts, inputs=inputs, outputs=outputs, trained=bool(trained),
        opset=opset_of(proto), extra={"exporter": "torch.onnx (dynamo)", "dynamic_axes": _dynamic_axes(axes)},
    )
    if fixed_reason:
        sidecar.extra["fixed_axes"] = {"frames": fixed_reason}
    write_sidecar(out, sidecar)
    return sidecar


def opset_of(proto: onnx.ModelProto) -> int:
    """The default-domain opset a graph imports."""
    for o in proto.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    raise ArtifactError("graph imports no default-domain opset")


def export_checkpoint(
    checkpoint_path: str | Path, out: Path, *, opset: int = DEFAULT_OPSET, force: bool = False,
    temporal_range: tuple[int, int, int] | None = None, attention_outputs: bool = False,
) -> Sidecar:
    """Export a checkpoint written by `aarm.checkpoint.save_checkpoint`: its classes, preprocessing and
    `trained` flag go into the graph and sidecar, whose parent is the checkpoint (path and sha256)."""
    return export_loaded_checkpoint(checkpoint_path, out, opset=opset, force=force, temporal_range=temporal_range,
                                    attention_outputs=attention_outputs)[0]


def export_loaded_checkpoint(
    checkpoint_path: str | Path, out: Path, *, opset: int = DEFAULT_OPSET, force: bool = False,
    temporal_range: tuple[int, int, int] | None = None, attention_outputs: bool = False,
) -> tuple[Sidecar, nn.Module]:
    """As `export_checkpoint`, also returning the loaded model (eval mode), e.g. for the parity check."""
    from aarm.checkpoint import load_checkpoint

    checkpoint_path = Path(checkpoint_path)
    ckpt = load_checkpoint(checkpoint_path)
    sidecar = export_onnx(
        ckpt.model, out, classes=ckpt.classes, preprocessing=ckpt.preprocessing, trained=ckpt.trained,
        opset=opset, force=force, temporal_range=temporal_range, attention_outputs=attention_outputs,
    )
    sidecar.extra["checkpoint_meta"] = ckpt.meta
    write_sidecar(out, sidecar, parent=checkpoint_path)
    return sidecar, ckpt.model

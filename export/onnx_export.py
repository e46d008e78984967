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
takes (N, C, T, H, W); `aarm.TwoStream(rgb, flow)` becomes one graph with the two inputs "rgb" and
"flow". Single-stream graphs have the input "input"; every graph has the output "scores", first; with
`attention_outputs=True` each stage's STAM maps and CAM weights follow it (docs/attention-outputs.md).
"""

import contextlib
import io
import json
import logging
import warnings
from collections.abc import Iterable, Sequence
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
from runtime.graph_precision import RANDOM_OPS

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


def _feeds_mask_consumer(name: str, consumers: dict[str, list[onnx.NodeProto]], depth: int = 4) -> bool:
    frontier = [name]
    for _ in range(depth):
        nxt = []
        for t in frontier:
            for node in consumers.get(t, []):
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
        producer = {o: n for n in nodes for o in n.output if o}
        consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in nodes:
            for i in n.input:
                consumers.setdefault(i, []).append(n)
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
                    if reduced & names_other and _feeds_mask_consumer(node.output[0], consumers):
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
    outputs: Sequence[str] = ("scores",),
) -> onnx.ModelProto:
    """outputs: the graph's output names, one per value the model returns."""
    batch = torch.export.Dim("N", min=1, max=4096)
    dynamic_shapes = tuple({0: batch} for _ in names)  # positional, one per forward argument
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
    return program.model_proto


def export_onnx(
    model: nn.Module,
    out: Path,
    *,
    classes: list[str],
    preprocessing: Preprocessing | list[Preprocessing],
    trained: bool,
    opset: int = DEFAULT_OPSET,
    force: bool = False,
    attention_outputs: bool = False,
) -> Sidecar:
    """Export `model` in eval mode to `out` (atomically) with its sidecar `<out>.json`; returns the sidecar.

    classes: one label per output class. preprocessing: one per model input (a TwoStream model: RGB then
    flow). trained: recorded in the sidecar (False for a freshly initialised model). The graph takes
    (N, K, C, H, W) (2D, TSN) or (N, C, T, H, W) (3D) with a dynamic batch N and returns scores (N, classes);
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
    shapes = [p.input_shape(TRACE_BATCH) for p in preps]
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
            proto = _trace_to_onnx(traced_model, example, names, opset, outputs=["scores", *extra_outputs])
    finally:
        model.train(was_training)

    record_module_outputs(proto, model, traced_model)  # node scopes do not survive the opset converter
    exported_opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if exported_opset is not None and exported_opset != opset:
        proto = _convert_opset(proto, opset)
    _name_batch_axis(proto)
    inputs = [
        TensorSpec(name, ["N", *shape[1:]], layout=p.layout)
        for name, shape, p in zip(names, shapes, preps, strict=True)
    ]
    outputs = [TensorSpec("scores", ["N", num_classes], layout="NC"), *_attention_specs(proto, extra_outputs)]
    prep_dicts: dict[str, Any] | list[dict[str, Any]] = (
        preps[0].to_dict() if len(preps) == 1 else [p.to_dict() for p in preps]
    )
    _set_metadata(proto, {
        "aarm.model": config,
        "aarm.classes": list(classes),
        "aarm.preprocessing": prep_dicts,
        "aarm.trained": bool(trained),
        "aarm.inputs": [{"name": t.name, "shape": t.shape, "layout": t.layout} for t in inputs],
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
        opset=opset_of(proto), extra={"exporter": "torch.onnx (dynamo)", "dynamic_axes": {"batch": "N"}},
    )
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
    attention_outputs: bool = False,
) -> Sidecar:
    """Export a checkpoint written by `aarm.checkpoint.save_checkpoint`: its classes, preprocessing and
    `trained` flag go into the graph and sidecar, whose parent is the checkpoint (path and sha256)."""
    return export_loaded_checkpoint(checkpoint_path, out, opset=opset, force=force,
                                    attention_outputs=attention_outputs)[0]


def export_loaded_checkpoint(
    checkpoint_path: str | Path, out: Path, *, opset: int = DEFAULT_OPSET, force: bool = False,
    attention_outputs: bool = False,
) -> tuple[Sidecar, nn.Module]:
    """As `export_checkpoint`, also returning the loaded model (eval mode), e.g. for the parity check."""
    from aarm.checkpoint import load_checkpoint

    checkpoint_path = Path(checkpoint_path)
    ckpt = load_checkpoint(checkpoint_path)
    sidecar = export_onnx(
        ckpt.model, out, classes=ckpt.classes, preprocessing=ckpt.preprocessing, trained=ckpt.trained,
        opset=opset, force=force, attention_outputs=attention_outputs,
    )
    sidecar.extra["checkpoint_meta"] = ckpt.meta
    write_sidecar(out, sidecar, parent=checkpoint_path)
    return sidecar, ckpt.model

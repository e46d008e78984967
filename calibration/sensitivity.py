"""Per-layer INT8 sensitivity: which quantized layers cost the most accuracy, measured on held-out clips.

    groups = layer_groups(qmodel)                       # quantized nodes, one group per module
    table = measure_sensitivity(qmodel, fmodel, x, reference, labels, groups)   # most harmful first
    variant = float_variant(qmodel, fmodel, groups[0].nodes)   # the INT8 graph with that module in float

A group is the quantized nodes of one PyTorch module, read from TorchScript-style node names
("/backbone/layer1/layer1.0/conv1/Conv" -> "/backbone/layer1/layer1.0/conv1") or, for the dynamo
exporter's generic node names, from the parameter names of their weights ("backbone.layer1.0.conv1");
an AARM attention block splits into its CAM, STAM and fusion parts, and VCM is one group.

Sensitivity of a group = the score error of the graph with only that group quantized (every other group
in float), as per-layer quantization analyses usually measure it: the higher, the more that group's
quantization costs. The variants are made by graph surgery on the quantized graph (a node takes its float
inputs and weights back from the float graph; Q/DQ nodes left without consumers are removed), which is
what `quantize_static(nodes_to_exclude=...)` gives up to where it places the remaining Q/DQ pairs: ranking
every group costs one onnxruntime session per group, not one quantization.
"""

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from aarm.progress import Progress
from runtime.backends.onnxruntime_backend import OnnxRuntimeRunner
from runtime.compare import label_metrics, score_metrics
from runtime.errors import ArtifactError
from runtime.graph_precision import QDQ_OPS, producers

ROLES = {"cam": "AARM channel attention (CAM)", "stam": "AARM spatio-temporal attention (STAM)",
         "fuse": "AARM fusion", "vcm": "VCM (score recalibration)"}
ModelLike = str | Path | onnx.ModelProto | bytes


# ---------------------------------------------------------------------------------------------- scoring


def graph_runner(model: ModelLike, *, threads: int = 0) -> OnnxRuntimeRunner:
    """The runtime's onnxruntime CPU runner over a path, a ModelProto or serialized bytes (threads 0:
    onnxruntime's default)."""
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    return OnnxRuntimeRunner(model, threads=threads or None)


def session(model: ModelLike, *, threads: int = 0) -> Any:
    """The onnxruntime session of `graph_runner` (for callers that time `session.run` themselves)."""
    return graph_runner(model, threads=threads).session


def graph_scores(model: ModelLike, x: np.ndarray, *, batch_size: int = 16, threads: int = 0) -> np.ndarray:
    """Scores (N, classes) of the graph's only output for inputs x (N, ...), in batches."""
    runner = graph_runner(model, threads=threads)
    name, out = runner.input_specs[0].name, runner.output_names[0]
    with runner:
        scores = [runner.infer({name: x[i : i + batch_size]})[out] for i in range(0, len(x), batch_size)]
    return np.concatenate(scores).astype(np.float32)


@dataclass
class Comparison:
    """An INT8 graph's scores against the float graph's on the same held-out clips: `runtime.compare`'s
    metrics in the units calibration reports (percent, points). A clip whose scores hold NaN or Inf never
    agrees and makes the error infinite."""

    top1: float  # percent accuracy on the labels, NaN without labels
    agreement: float  # percent of clips whose top-1 class is the float graph's (compare's top1)
    error: float  # relative mean squared score error against the float graph (compare's rel_mse)
    lost: float  # percent of clips the float graph gets right and this one wrong (NaN without labels)

    @classmethod
    def of(cls, scores: np.ndarray, reference: np.ndarray, labels: np.ndarray) -> "Comparison":
        m = score_metrics(scores, reference)
        lab = label_metrics(scores, reference, labels)
        nonfinite = m["artifact_nonfinite"] or m["reference_nonfinite"]
        agree = (m["top1"] or 0.0) * m["samples"] / max(len(scores), 1)  # non-finite rows count as disagreeing
        return cls(
            top1=math.nan if lab["accuracy"] is None else 100.0 * lab["accuracy"],
            agreement=100.0 * agree,
            error=math.inf if nonfinite or m["rel_mse"] is None else m["rel_mse"],
            lost=math.nan if lab["lost"] is None else 100.0 * lab["lost"],
        )


# ---------------------------------------------------------------------------------------------- groups


@dataclass
class LayerGroup:
    """The quantized nodes of one module of the model."""

    name: str
    nodes: list[str] = field(default_factory=list)
    ops: list[str] = field(default_factory=list)
    role: str = "layer"


def _parts(name: str) -> tuple[list[str], str]:
    sep = "/" if "/" in name else "."
    return name.split(sep), sep


def module_of(name: str) -> str:
    """The module a node or weight belongs to, from a TorchScript-style node name
    ("/backbone/layer1/layer1.0/conv1/Conv") or a parameter name ("backbone.layer1.0.conv1.weight"): the
    name without its last component; an AARM attention block splits into CAM / STAM / fusion
    ("…attn/cam"), a VCM is one module ("…/vcm"). A name without a path is its own module."""
    parts, sep = _parts(name)
    if len(parts) < 2:
        return name
    parts = parts[:-1]
    if "attn" in parts:
        parts = parts[: min(len(parts), parts.index("attn") + 2)]
    elif "vcm" in parts:
        parts = parts[: parts.index("vcm") + 1]
    return sep.join(parts) or sep


def dequantized_outputs(graph: onnx.GraphProto) -> set[str]:
    """The names of every DequantizeLinear output in `graph`."""
    return {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}


def quantized_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Nodes (other than Q/DQ) with at least one input from a DequantizeLinear, in graph order."""
    dq_outputs = dequantized_outputs(model.graph)
    return [n for n in model.graph.node if n.op_type not in QDQ_OPS and any(i in dq_outputs for i in n.input)]


def _role(name: str, ops: Sequence[str], first_conv: bool) -> str:
    parts, _ = _parts(name)
    if "attn" in parts:
        sub = parts[parts.index("attn") + 1] if parts.index("attn") + 1 < len(parts) else ""
        return ROLES.get(sub, "AARM attention")
    if "vcm" in parts:
        return ROLES["vcm"]
    if first_conv:
        return "first conv"
    if {"Gemm", "MatMul"} & set(ops):
        return "classifier (fully connected)"
    if "Conv" in ops:
        return "backbone conv"
    return "other ops"


_QUANTIZED_SUFFIXES = ("_quantized",)


def layer_groups(model: onnx.ModelProto) -> list[LayerGroup]:
    """The quantized nodes of an INT8 graph grouped by module, in graph order.

    A node's module comes from its name when the exporter wrote module paths into node names (TorchScript),
    else from the name of its weight ("backbone.layer1.0.conv1.weight", as torch's dynamo exporter keeps
    parameter names). A node with neither (Relu, MaxPool, a residual Add, an attention gate's Mul under the
    dynamo exporter) joins the group of the node that feeds it."""
    producer = producers(model.graph.node)
    initializers = {t.name for t in model.graph.initializer}

    def source(tensor: str) -> str:
        while tensor in producer and producer[tensor].op_type in QDQ_OPS:
            tensor = producer[tensor].input[0]
        return tensor

    def weight_name(node: onnx.NodeProto) -> str | None:
        for i in node.input[1:]:
            name = source(i)
            if name in initializers:
                for suffix in _QUANTIZED_SUFFIXES:
                    name = name.removesuffix(suffix)
                return name if "." in name and "::" not in name else None
        return None

    groups: dict[str, LayerGroup] = {}
    group_of: dict[str, str] = {}
    first_conv = None
    for node in quantized_nodes(model):
        label = node.name or node.output[0]
        if "/" in label:
            name = module_of(label)
            weighted = any(source(i) in initializers for i in node.input[1:])
            parts, _ = _parts(name)
            follow = not weighted and "attn" not in parts and "vcm" not in parts
        else:
            weight = weight_name(node)
            name = module_of(weight) if weight else label
            follow = weight is None
        if follow and node.input:
            feeder = producer.get(source(node.input[0]))
            if feeder is not None and feeder.name in group_of:
                name = group_of[feeder.name]
        group = groups.setdefault(name, LayerGroup(name))
        group.nodes.append(node.name)
        group.ops.append(node.op_type)
        group_of[node.name] = name
        if first_conv is None and node.op_type == "Conv":
            first_conv = name
    for group in groups.values():
        group.role = _role(group.name, group.ops, group.name == first_conv)
    return list(groups.values())


# ---------------------------------------------------------------------------------------------- surgery


# ops onnxruntime's QDQ propagation moves a DequantizeLinear past (DQ -> Reshape becomes Reshape -> DQ)
PASS_THROUGH_OPS = frozenset({"Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze"})


def _passes_on_dequantized(tensor: str, producer: dict[str, onnx.NodeProto], dequantized: set[str]) -> bool:
    """Whether `tensor` is made by a chain of PASS_THROUGH_OPS from a DequantizeLinear's output."""
    node = producer.get(tensor)
    while node is not None and node.op_type in PASS_THROUGH_OPS and node.input:
        if node.input[0] in dequantized:
            return True
        node = producer.get(node.input[0])
    return False


def dequantized_readers(model: onnx.ModelProto, names: Collection[str]) -> set[str]:
    """Those of the nodes `names` that read a DequantizeLinear's output, directly or through PASS_THROUGH_OPS
    (which onnxruntime moves the DequantizeLinear past): float nodes its session would run quantized."""
    dequantized = dequantized_outputs(model.graph)
    producer = producers(model.graph.node)
    return {n.name for n in model.graph.node if n.name in names and n.op_type not in QDQ_OPS and any(
        i in dequantized or _passes_on_dequantized(i, producer, dequantized) for i in n.input if i)}


def float_variant(qmodel: onnx.ModelProto, fmodel: onnx.ModelProto, nodes: Collection[str]) -> onnx.ModelProto:
    """The INT8 graph `qmodel` with `nodes` computed in float: each takes back its inputs and outputs from
    the float graph `fmodel` it was quantized from (float weights, float activations); producers the
    quantizer folded away (a Relu into its Conv's Q) are copied back; Q/DQ nodes left unused are removed."""
    nodes = set(nodes)
    if not nodes:
        return qmodel
    model = onnx.ModelProto()
    model.CopyFrom(qmodel)
    graph = model.graph
    float_nodes = {n.name: n for n in fmodel.graph.node}
    float_producer = producers(fmodel.graph.node)
    float_init = {t.name: t for t in fmodel.graph.initializer}
    dequantized = dequantized_outputs(graph)
    q_producer = producers(graph.node)
    names = {n.name for n in graph.node}
    copies: dict[str, str] = {}

    def float_path(tensor: str) -> str:
        """`tensor`, or a float copy of it where the INT8 graph makes it by passing on a dequantized tensor
        (DQ -> Reshape -> ...): onnxruntime moves the DQ past such ops and then quantizes the excluded node."""
        if tensor in copies or not _passes_on_dequantized(tensor, q_producer, dequantized):
            return copies.get(tensor, tensor)
        copy = onnx.NodeProto()
        copy.CopyFrom(float_producer[tensor])
        while copy.name in names:
            copy.name += "_float"
        names.add(copy.name)
        copy.input[0] = float_path(copy.input[0])
        copies[tensor] = copy.output[0] = f"{tensor}_float"
        graph.node.append(copy)
        return copies[tensor]

    for node in list(graph.node):
        if node.name in nodes:
            source = float_nodes.get(node.name)
            if source is None or source.op_type != node.op_type:
                raise ArtifactError(f"node {node.name!r} is not a {node.op_type} of the float graph; "
                                    "sensitivity needs the graph the INT8 one was quantized from")
            inputs = [float_path(i) if i else i for i in source.input]
            for i, name in enumerate(inputs):
                if name in dequantized and name in float_init:  # a bias the quantizer kept the name of (int32 + DQ)
                    inputs[i] = f"{name}_float"
                    if inputs[i] not in float_init:
                        float_init[inputs[i]] = onnx.TensorProto()
                        float_init[inputs[i]].CopyFrom(float_init[name])
                        float_init[inputs[i]].name = inputs[i]
            del node.input[:], node.output[:]
            node.input.extend(inputs)
            node.output.extend(source.output)
    while True:
        available = set(producers(graph.node))
        available |= {i.name for i in graph.input} | {t.name for t in graph.initializer}
        missing = sorted({i for n in graph.node for i in n.input if i and i not in available})
        if not missing:
            break
        for tensor in missing:
            if tensor in float_init:
                graph.initializer.append(float_init[tensor])
            elif tensor in float_producer:
                copy = onnx.NodeProto()
                copy.CopyFrom(float_producer[tensor])
                while copy.name in names:
                    copy.name += "_float"
                names.add(copy.name)
                graph.node.append(copy)
            else:
                raise ArtifactError(f"tensor {tensor!r} is in neither graph; cannot restore it to float")
    g = gs.import_onnx(model)
    g.cleanup().toposort()
    out = gs.export_onnx(g)
    out.ir_version = qmodel.ir_version
    out.producer_name, out.producer_version = qmodel.producer_name, qmodel.producer_version
    del out.metadata_props[:]
    out.metadata_props.extend(qmodel.metadata_props)
    return out


# ---------------------------------------------------------------------------------------------- sensitivity


@dataclass
class Sensitivity:
    """One group's sensitivity: the figures of the graph with only that group quantized, the rest in float."""

    group: str
    role: str
    nodes: int
    top1: float
    agreement: float
    error: float  # relative mean squared score error against the float graph

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_sensitivity(
    qmodel: onnx.ModelProto, fmodel: onnx.ModelProto, x: np.ndarray, reference: np.ndarray, labels: np.ndarray,
    groups: Sequence[LayerGroup], *, batch_size: int = 16, threads: int = 0, progress: Progress | None = None,
) -> list[Sensitivity]:
    """Sensitivity of every group on inputs x (N, ...), float scores `reference` (N, classes) and labels (N,)
    (-1: unlabelled): each group quantized alone (every other group of `groups` restored to float), most
    harmful (largest score error) first."""
    every = {n for g in groups for n in g.nodes}
    table = []
    for i, group in enumerate(groups):
        variant = float_variant(qmodel, fmodel, every - set(group.nodes))
        c = Comparison.of(graph_scores(variant, x, batch_size=batch_size, threads=threads), reference, labels)
        table.append(Sensitivity(group.name, group.role, len(group.nodes), c.top1, c.agreement, c.error))
        if progress:
            progress("layer sensitivity", i + 1, len(groups))
    table.sort(key=lambda s: (-s.error, s.agreement))
    return table


# ---------------------------------------------------------------------------------------------- search


@dataclass(frozen=True)
class Quantized:
    """An INT8 graph file and its model, read once (the search scores the model and groups its nodes)."""

    path: Path
    model: onnx.ModelProto


@dataclass
class Search:
    """What the exclusion search did: the groups it keeps in float, the INT8 graph it ended with and that
    graph's figures, the float graph's, the sensitivity table (empty when nothing had to stay float) and
    every graph it scored ("quantized": a real quantization, "surgery": a variant of the all-INT8 graph)."""

    float_groups: list[LayerGroup]
    graph: Quantized
    result: Comparison
    fp32: Comparison
    sensitivity: list[Sensitivity]
    steps: list[dict[str, Any]]


def search_float_groups(
    quantize: Callable[[list[str]], Quantized], fmodel: onnx.ModelProto, x: np.ndarray, reference: np.ndarray,
    labels: np.ndarray, *, max_drop: float | None, threads: int = 0, progress: Progress | None = None,
) -> Search:
    """Keep the fewest, most harmful groups in float that hold the top-1 loss on held-out inputs x (N, ...)
    (float scores `reference`, labels (N,)) within `max_drop` points (None: quantize everything, no search).
    The loss counts clips the float graph gets right and INT8 wrong (`lost`), so lucky flips the other way
    cannot hide broken ones.

    `quantize(nodes)` writes the INT8 graph with `nodes` (and whatever the caller excludes anyway) in float and
    returns it, file and model.
    Everything is quantized first; over budget, groups are ranked by sensitivity, the most harmful go to
    float one by one on surgery variants of the all-INT8 graph until the budget holds, those it holds
    without go back to INT8, and a real quantization confirms, adding the next group while it does not hold.
    """
    fp32 = Comparison.of(reference, reference, labels)
    steps: list[dict[str, Any]] = []

    def evaluate(candidate: onnx.ModelProto, kind: str, groups: Sequence[LayerGroup]) -> Comparison:
        c = Comparison.of(graph_scores(candidate, x, threads=threads), reference, labels)
        steps.append({"graph": kind, "float_groups": [g.name for g in groups], "top1": c.top1,
                      "drop": fp32.top1 - c.top1, "lost": c.lost, "agreement": c.agreement, "error": c.error})
        return c

    def within(c: Comparison) -> bool:
        return max_drop is None or c.lost <= max_drop

    def nodes(groups: Sequence[LayerGroup]) -> list[str]:
        return [n for g in groups for n in g.nodes]

    graph = quantize([])
    result = evaluate(graph.model, "quantized", [])
    chosen: list[LayerGroup] = []
    if within(result):
        return Search(chosen, graph, result, fp32, [], steps)
    qmodel = graph.model
    candidates = layer_groups(qmodel)
    ranking = measure_sensitivity(qmodel, fmodel, x, reference, labels, candidates, threads=threads,
                                  progress=progress)
    by_name = {g.name: g for g in candidates}
    order = [by_name[s.group] for s in ranking]
    for i, group in enumerate(order):
        chosen.append(group)
        if progress:
            progress("exclusion search", i + 1, len(order))
        if within(evaluate(float_variant(qmodel, fmodel, nodes(chosen)), "surgery", chosen)):
            break
    for group in reversed(chosen[:-1]):
        trial = [g for g in chosen if g is not group]
        if within(evaluate(float_variant(qmodel, fmodel, nodes(trial)), "surgery", trial)):
            chosen = trial
    remaining = [g for g in order if g not in chosen]
    while True:
        graph = quantize(nodes(chosen))
        result = evaluate(graph.model, "quantized", chosen)
        if within(result) or not remaining:
            break
        chosen.append(remaining.pop(0))
    return Search(chosen, graph, result, fp32, ranking, steps)

"""TensorRT-compatibility lint: what TensorRT's ONNX parser rejects or restricts in a graph, before a build.

`lint_onnx(model_or_path)` runs onnx shape inference and then each rule below over the graph; every
finding names the node, its op, a severity (error: the parser or builder will fail or the engine
will be wrong; warning: it builds, but not as one might expect) and a fix.

Rules: opset range; ops the parser does not support (and custom-domain ops that would need a plugin);
random ops; tensor data types TensorRT lacks, and op inputs of a type the op does not take; dynamic
dimensions other than the batch axis of graph inputs; TopK/ArgMax/ArgMin reducing an axis outside the
last four (TensorRT's TopK layer only reduces one of the last four dimensions) or K > 3840; restrictions
the parser documents (pooling rank and dilations, reduction axes, Resize modes, ...); and explicit
quantization: int8 Q/DQ with zero points equal to 0, per-channel scales only on weights and along
their output-channel axis, every QuantizeLinear feeding DequantizeLinear nodes only.

The operator table follows onnx-tensorrt's `docs/operators.md` (the TensorRT 10.15 edition; the
TensorRT 11 parser documents the same opset range 9..24).
"""

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from runtime.graph_precision import QDQ_OPS, RANDOM_OPS, consumers, producers
from runtime.onnx_file import load_onnx

MIN_OPSET, MAX_OPSET = 9, 24
TOPK_MAX_K = 3840
SEVERITIES = ("error", "warning")

# Operator support matrix of TensorRT's ONNX parser: op -> data types its (data) input may have.
# Type codes: FP32 FP16 BF16 FP8 FP4 INT4 INT8 UINT8 INT32 INT64 BOOL.
_FLOAT = "FP32,FP16,BF16"
_NUM = "FP32,FP16,BF16,INT32,INT64"
_ANY = "FP32,FP16,BF16,INT32,INT64,BOOL"
_SUPPORTED_TABLE = f"""
Abs:{_NUM} Acos:{_FLOAT} Acosh:{_FLOAT} Add:{_NUM} And:BOOL ArgMax:{_NUM} ArgMin:{_NUM} Asin:{_FLOAT}
Asinh:{_FLOAT} Atan:{_FLOAT} Atanh:{_FLOAT} Attention:{_FLOAT},INT8,FP8 AveragePool:{_FLOAT}
BatchNormalization:{_FLOAT} BlackmanWindow:FP32,FP16 Cast:{_ANY},UINT8 CastLike:{_ANY},UINT8 Ceil:{_FLOAT}
Celu:{_FLOAT} Clip:{_FLOAT} Concat:{_ANY} Constant:{_ANY},FP8,FP4,INT4 ConstantOfShape:{_ANY},FP8,FP4,INT4
Conv:{_FLOAT} ConvTranspose:{_FLOAT} Cos:{_FLOAT} Cosh:{_FLOAT} CumSum:{_FLOAT} DeformConv:FP32,FP16
DepthToSpace:{_NUM} DequantizeLinear:INT8,FP8,FP4,INT4 Div:{_NUM} Dropout:{_FLOAT} Einsum:{_FLOAT}
Elu:{_FLOAT} Equal:{_NUM} Erf:{_FLOAT} Exp:{_FLOAT} Expand:{_ANY} EyeLike:{_ANY} Flatten:{_ANY}
Floor:{_FLOAT} Gather:{_ANY} GatherElements:{_ANY} GatherND:{_ANY} Gelu:{_NUM},INT8 Gemm:{_FLOAT}
GlobalAveragePool:{_FLOAT} GlobalLpPool:{_FLOAT} GlobalMaxPool:{_FLOAT} Greater:{_NUM} GreaterOrEqual:{_NUM}
GridSample:FP32,FP16 GroupNormalization:{_FLOAT} GRU:{_FLOAT} HammingWindow:FP32,FP16 HannWindow:FP32,FP16
HardSigmoid:{_FLOAT} HardSwish:{_FLOAT} Hardmax:{_FLOAT} Identity:{_ANY} If:{_ANY} ImageScaler:{_FLOAT}
InstanceNormalization:{_FLOAT} IsInf:{_FLOAT} IsNaN:{_NUM} LayerNormalization:{_FLOAT} LeakyRelu:{_FLOAT}
Less:{_NUM} LessOrEqual:{_NUM} Log:{_FLOAT} LogSoftmax:{_FLOAT} Loop:{_ANY} LRN:{_FLOAT} LSTM:{_FLOAT}
LpNormalization:{_FLOAT} LpPool:{_FLOAT} MatMul:{_FLOAT} Max:{_NUM} MaxPool:{_FLOAT} Mean:{_NUM},FP8
MeanVarianceNormalization:{_FLOAT} Min:{_NUM} Mish:FP32,FP16 Mod:{_NUM} Mul:{_NUM} Neg:{_NUM}
NonMaxSuppression:FP32,FP16 NonZero:FP32,FP16 Not:BOOL OneHot:{_ANY} Or:BOOL Pad:{_NUM}
ParametricSoftplus:{_FLOAT} Pow:{_NUM} PRelu:{_FLOAT} QuantizeLinear:{_FLOAT} RandomNormal:{_FLOAT}
RandomNormalLike:{_FLOAT} RandomUniform:{_FLOAT} RandomUniformLike:{_FLOAT} Range:{_NUM} Reciprocal:{_FLOAT}
ReduceL1:{_NUM} ReduceL2:{_NUM} ReduceLogSum:{_NUM} ReduceLogSumExp:{_NUM} ReduceMax:{_NUM} ReduceMean:{_NUM}
ReduceMin:{_NUM} ReduceProd:{_NUM} ReduceSum:{_NUM} ReduceSumSquare:{_NUM} Relu:{_NUM} Reshape:{_ANY}
Resize:{_FLOAT} ReverseSequence:{_ANY} RMSNormalization:{_FLOAT} RNN:{_FLOAT} RoiAlign:FP32,FP16
RotaryEmbedding:{_FLOAT} Round:{_FLOAT} STFT:FP32 ScaledTanh:{_FLOAT} Scan:{_FLOAT} Scatter:{_NUM}
ScatterElements:{_NUM} ScatterND:{_NUM} Selu:{_FLOAT} Shape:{_ANY} Shrink:{_NUM} Sigmoid:{_FLOAT} Sign:{_NUM}
Sin:{_FLOAT} Sinh:{_FLOAT} Size:{_ANY} Slice:{_ANY} Softmax:{_FLOAT} Softplus:{_FLOAT} Softsign:{_FLOAT}
SpaceToDepth:{_NUM} Split:{_ANY} Sqrt:{_FLOAT} Squeeze:{_ANY} Sub:{_NUM} Sum:{_NUM} Tan:{_FLOAT} Tanh:{_FLOAT}
TensorScatter:FP32,FP16,BF16,INT32 ThresholdedRelu:{_FLOAT} Tile:{_ANY} TopK:{_NUM} Transpose:{_ANY}
Trilu:{_ANY} Unsqueeze:{_ANY} Upsample:{_FLOAT} Where:{_ANY} Xor:BOOL
"""
# Listed as unsupported ("N") by the parser's support matrix.
UNSUPPORTED_OPS = frozenset("""
AffineGrid Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor Col2Im CenterCropPad Compress
ConcatFromSequence ConvInteger DFT Det DynamicQuantizeLinear ImageDecoder MatMulInteger MaxRoiPool MaxUnpool
MelWeightMatrix Multinomial NegativeLogLikelihoodLoss Optional OptionalGetElement OptionalHasElement
QLinearConv QLinearMatMul RegexFullMatch SequenceAt SequenceConstruct SequenceEmpty SequenceErase
SequenceInsert SequenceLength SequenceMap SoftmaxCrossEntropyLoss SplitToSequence StringConcat
StringNormalizer StringSplit TfIdfVectorizer Unique
""".split())


def _parse_table(text: str) -> dict[str, frozenset[str]]:
    table = {}
    for item in text.split():
        op, types = item.split(":")
        table[op] = frozenset(t for t in types.replace(",", " ").split())
    return table


SUPPORTED_OPS: dict[str, frozenset[str]] = _parse_table(_SUPPORTED_TABLE)
_DEFAULT_DOMAINS = ("", "ai.onnx")

# ONNX element type -> the parser's type code. DOUBLE is cast down to FP32 by the parser (with a warning).
_TYPE_CODES = {
    TensorProto.FLOAT: "FP32", TensorProto.FLOAT16: "FP16", TensorProto.BFLOAT16: "BF16",
    TensorProto.FLOAT8E4M3FN: "FP8", TensorProto.INT8: "INT8", TensorProto.UINT8: "UINT8",
    TensorProto.INT32: "INT32", TensorProto.INT64: "INT64", TensorProto.BOOL: "BOOL",
    TensorProto.INT4: "INT4", TensorProto.DOUBLE: "FP32",
}
if hasattr(TensorProto, "FLOAT4E2M1"):
    _TYPE_CODES[TensorProto.FLOAT4E2M1] = "FP4"


@dataclass(frozen=True)
class Finding:
    """One lint finding. node: node name (or "graph input x" / "initializer w"); op: its op type."""

    rule: str
    severity: str  # error | warning
    node: str
    op: str
    message: str
    fix: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class FindingGroup:
    """Findings of one rule on one op type with one severity: how many, on which nodes, one example."""

    rule: str
    severity: str
    op: str
    nodes: tuple[str, ...]  # in graph order
    message: str  # the first finding's (the others differ only in the node they name, or in detail)
    fix: str
    same_message: bool  # every finding of the group has this exact message

    @property
    def count(self) -> int:
        return len(self.nodes)

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "severity": self.severity, "op": self.op, "count": self.count,
                "nodes": list(self.nodes), "message": self.message, "fix": self.fix,
                "same_message": self.same_message}


def group_findings(findings: list[Finding]) -> list[FindingGroup]:
    """One group per (severity, rule, op), in the order of their first finding (errors first, as `lint_onnx`
    sorts them). An INT8 graph has hundreds of near-identical findings (one per Q/DQ node); a group says it
    once with a count."""
    groups: dict[tuple[str, str, str], list[Finding]] = {}
    for f in findings:
        groups.setdefault((f.severity, f.rule, f.op), []).append(f)
    return [
        FindingGroup(rule=rule, severity=severity, op=op, nodes=tuple(f.node for f in items),
                     message=items[0].message, fix=items[0].fix,
                     same_message=all(f.message == items[0].message for f in items))
        for (severity, rule, op), items in groups.items()
    ]


class _Graph:
    """The inferred graph and the lookups rules share: types, shapes, producers, consumers, constants."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        g = model.graph
        self.initializers = {t.name: t for t in g.initializer}
        self.value_info = {v.name: v for v in [*g.input, *g.value_info, *g.output]}
        self.producer = producers(g.node)
        self.consumers = consumers(g.node)
        self.graph_outputs = {o.name for o in g.output}

    def elem_type(self, name: str) -> int | None:
        if name in self.initializers:
            return self.initializers[name].data_type
        vi = self.value_info.get(name)
        if vi is not None and vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            return vi.type.tensor_type.elem_type
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    return attr.t.data_type
        return None

    def rank(self, name: str) -> int | None:
        if name in self.initializers:
            return len(self.initializers[name].dims)
        vi = self.value_info.get(name)
        if vi is not None and vi.type.tensor_type.HasField("shape"):
            return len(vi.type.tensor_type.shape.dim)
        return None

    def constant(self, name: str) -> np.ndarray | None:
        """The value of an initializer or Constant output, else None."""
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    return numpy_helper.to_array(attr.t)
                if attr.name in ("value_int", "value_float"):
                    return np.array(helper.get_attribute_value(attr))
                if attr.name in ("value_ints", "value_floats"):
                    return np.array(helper.get_attribute_value(attr))
        return None

    def is_constant(self, name: str) -> bool:
        """An initializer, a Constant, or a chain of single-input ops over one (e.g. Q of a weight)."""
        seen = 0
        while seen < 8:
            if name in self.initializers:
                return True
            node = self.producer.get(name)
            if node is None:
                return False
            if node.op_type == "Constant":
                return True
            if node.op_type not in ("QuantizeLinear", "DequantizeLinear", "Cast", "Identity", "Transpose"):
                return False
            name, seen = node.input[0], seen + 1
        return False


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _name(node: onnx.NodeProto) -> str:
    return node.name or f"<{node.op_type} -> {node.output[0] if node.output else '?'}>"


def _type_name(elem_type: int) -> str:
    return TensorProto.DataType.Name(elem_type)


Rule = Callable[[_Graph], Iterator[Finding]]


def _error(rule: str, where: str, op: str, message: str, fix: str) -> Finding:
    return Finding(rule, "error", where, op, message, fix)


def _warning(rule: str, where: str, op: str, message: str, fix: str) -> Finding:
    return Finding(rule, "warning", where, op, message, fix)


def _rule_opset(g: _Graph) -> Iterator[Finding]:
    opsets = {o.domain: o.version for o in g.model.opset_import}
    version = opsets.get("", opsets.get("ai.onnx"))
    if version is None:
        yield _error("opset", "(model)", "-", "no default-domain opset import",
                     f"re-export with an opset in {MIN_OPSET}..{MAX_OPSET} (opset=17)")
    elif not MIN_OPSET <= version <= MAX_OPSET:
        target = min(max(version, MIN_OPSET), MAX_OPSET)
        yield _error("opset", "(model)", "-",
                     f"opset {version} is outside what TensorRT's parser supports ({MIN_OPSET}..{MAX_OPSET})",
                     f"re-export with opset {target} (or convert with onnx.version_converter)")


def _rule_ops(g: _Graph) -> Iterator[Finding]:
    for node in g.model.graph.node:
        op = node.op_type
        if op in RANDOM_OPS:
            continue  # reported by the random rule
        if node.domain not in _DEFAULT_DOMAINS:
            yield _error("unsupported-op", _name(node), f"{node.domain}::{op}",
                         f"custom-domain op: the parser will look for a TensorRT plugin named {op!r}",
                         "rewrite it with standard ONNX ops, or register a TensorRT plugin of that name")
        elif op in UNSUPPORTED_OPS or op not in SUPPORTED_OPS:
            yield _error("unsupported-op", _name(node), op, f"TensorRT's ONNX parser does not support {op}",
                         "rewrite it with supported ops (onnx-graphsurgeon) or avoid it at export")


def _rule_random(g: _Graph) -> Iterator[Finding]:
    for node in g.model.graph.node:
        if node.op_type in RANDOM_OPS:
            unsupported = node.op_type in UNSUPPORTED_OPS
            what = "unsupported by the parser" if unsupported else "TensorRT ignores its seed"
            yield _error("random-op", _name(node), node.op_type,
                         f"random op in an inference graph ({what}); outputs would change from run to run",
                         "export the model in eval() mode (AARM's eval path has no random op) or remove it")


def _graph_tensors(g: _Graph) -> Iterator[tuple[str, str, int]]:
    """(where, tensor name, element type) of graph inputs, outputs, initializers and inferred values."""
    graph = g.model.graph
    for vi in graph.input:
        if vi.name not in g.initializers and vi.type.HasField("tensor_type"):
            yield f"graph input {vi.name}", vi.name, vi.type.tensor_type.elem_type
    for vi in graph.output:
        if vi.type.HasField("tensor_type"):
            yield f"graph output {vi.name}", vi.name, vi.type.tensor_type.elem_type
    for init in graph.initializer:
        yield f"initializer {init.name}", init.name, init.data_type
    for vi in graph.value_info:
        if vi.type.HasField("tensor_type"):
            producer = g.producer.get(vi.name)
            yield _name(producer) if producer else vi.name, vi.name, vi.type.tensor_type.elem_type


def _rule_dtypes(g: _Graph) -> Iterator[Finding]:
    seen = set()
    for where, name, elem in _graph_tensors(g):
        if not elem or name in seen:
            continue
        seen.add(name)
        op = g.producer[name].op_type if name in g.producer else "-"
        if elem == TensorProto.DOUBLE:
            yield _warning("dtype", where, op,
                           f"tensor {name!r} is DOUBLE; the parser casts it to FLOAT, clamping to +-FLT_MAX",
                           "export in float32 (model.float(), float32 inputs)")
        elif elem not in _TYPE_CODES:
            yield _error("dtype", where, op,
                         f"tensor {name!r} has type {_type_name(elem)}, which TensorRT does not support",
                         "cast to float32/float16/int32/int64/bool at export, or keep it outside the engine")
        elif elem == TensorProto.UINT8 and not where.startswith("graph "):
            # Q/DQ zero points and quantized tensors are the qdq rule's business.
            if not all(c.op_type in ("Cast", *QDQ_OPS) for c in g.consumers.get(name, [])):
                yield _error("dtype", where, op,
                             f"tensor {name!r} is UINT8 inside the graph; TensorRT takes UINT8 only as a "
                             "network input or output", "cast it to float or int32 first")


def _rule_op_types(g: _Graph) -> Iterator[Finding]:
    for node in g.model.graph.node:
        types = SUPPORTED_OPS.get(node.op_type)
        if node.domain not in _DEFAULT_DOMAINS or types is None or node.op_type in QDQ_OPS:
            continue
        if node.op_type in ("Constant", "ConstantOfShape", "RandomNormal", "RandomUniform"):
            name = node.output[0] if node.output else ""
        else:
            index = 1 if node.op_type == "Where" else 0
            name = node.input[index] if len(node.input) > index else ""
        elem = g.elem_type(name) if name else None
        if elem is None or elem not in _TYPE_CODES or elem == TensorProto.DOUBLE:
            continue  # unknown, or reported by the dtype rule
        code = _TYPE_CODES[elem]
        if code not in types and not (code == "UINT8" and node.op_type in ("Cast", "CastLike")):
            yield _error("op-dtype", _name(node), node.op_type,
                         f"{node.op_type} on {_type_name(elem)} input {name!r}; TensorRT's {node.op_type} "
                         f"takes {', '.join(sorted(types))}",
                         f"Cast {name!r} to one of those types first (keep int64 for shape computations)")


_PROFILED_AXES = {(1, "K"), (2, "T")}  # (axis, name) of a 5-D input that the build's profile covers


def _rule_dynamic_dims(g: _Graph) -> Iterator[Finding]:
    for vi in g.model.graph.input:
        if vi.name in g.initializers or not vi.type.HasField("tensor_type"):
            continue
        where, tt = f"graph input {vi.name}", vi.type.tensor_type
        if not tt.HasField("shape"):
            yield _error("dynamic-shape", where, "-", "input has no shape at all",
                         "export with a static shape except the batch axis")
            continue
        for axis, dim in enumerate(tt.shape.dim):
            if axis == 0 or (dim.HasField("dim_value") and dim.dim_value > 0):
                continue
            if len(tt.shape.dim) == 5 and (axis, dim.dim_param) in _PROFILED_AXES:
                continue  # TSN segments K / clip frames T: `build --segments / --frames` profiles them
            yield _error("dynamic-shape", where, "-",
                         f"axis {axis} is dynamic ({dim.dim_param or '?'!r}); the optimization profile "
                         "covers the batch axis and a named K (axis 1) or T (axis 2) only",
                         "re-export with this axis fixed (dynamic_axes on axis 0 only)")
    for vi in g.model.graph.output:
        tt = vi.type.tensor_type
        if tt.HasField("shape") and any(not d.HasField("dim_value") for d in list(tt.shape.dim)[1:]):
            yield _warning("dynamic-shape", f"graph output {vi.name}", "-",
                           "output has a dynamic non-batch axis (data-dependent shape)",
                           "check the graph: a classifier's scores should be (N, classes)")


def _rule_topk(g: _Graph) -> Iterator[Finding]:
    for node in g.model.graph.node:
        if node.op_type not in ("TopK", "ArgMax", "ArgMin"):
            continue
        name, rank = _name(node), g.rank(node.input[0])
        axis = _attr(node, "axis", -1 if node.op_type == "TopK" else 0)
        if rank is not None:
            axis = axis + rank if axis < 0 else axis
            if axis < rank - 4:
                yield _error("topk-axis", name, node.op_type,
                             f"reduces axis {axis} of a {rank}-D tensor; TensorRT's TopK layer (which also "
                             "implements ArgMax/ArgMin) reduces only one of the last four axes",
                             "Transpose/Reshape so the reduced axis is among the last four (e.g. the last)")
        if node.op_type != "TopK":
            continue
        if _attr(node, "sorted", 1) == 0:
            yield _error("topk", name, "TopK", "sorted=0 is not supported", "use sorted=1")
        k = g.constant(node.input[1]) if len(node.input) > 1 else np.array(_attr(node, "k", 1))
        if k is None:
            yield _warning("topk", name, "TopK", "K is not a build-time constant",
                           f"make K a constant <= {TOPK_MAX_K}")
        elif int(np.max(k)) > TOPK_MAX_K:
            yield _error("topk", name, "TopK", f"K = {int(np.max(k))} exceeds TensorRT's limit of "
                         f"{TOPK_MAX_K}", f"use K <= {TOPK_MAX_K}")


_REDUCE_OPS = frozenset(op for op in SUPPORTED_OPS if op.startswith("Reduce"))
_CONSTANT_SPARSE_OR_STRING = ("sparse_value", "value_string", "value_strings")


def _rule_restrictions(g: _Graph) -> Iterator[Finding]:
    """Per-op restrictions from the parser's support matrix."""
    for node in g.model.graph.node:
        op, name = node.op_type, _name(node)

        def error(message: str, fix: str, op: str = op, name: str = name) -> Finding:
            return _error("op-restriction", name, op, message, fix)

        if op in ("AveragePool", "MaxPool", "LpPool"):
            kernel = _attr(node, "kernel_shape", [])
            if op != "LpPool" and len(kernel) not in (2, 3):
                yield error(f"{len(kernel)}-D pooling; TensorRT pools 2D or 3D only",
                            "Unsqueeze to 4-D/5-D around the pool, or use a Reduce op")
            if any(d != 1 for d in _attr(node, "dilations", [])):
                yield error("pooling dilations other than 1", "remove the dilation")
            if op == "MaxPool" and len(node.output) > 1 and node.output[1]:
                yield error("the Indices output is not supported", "export MaxPool without return_indices")
        elif op in _REDUCE_OPS and len(node.input) > 1 and node.input[1] and not g.is_constant(node.input[1]):
            yield error("reduction axes are not a build-time constant", "make `axes` an initializer")
        elif op == "Resize":
            mode = _attr(node, "mode", b"nearest")
            mode = mode.decode() if isinstance(mode, bytes) else mode
            if mode not in ("nearest", "linear"):
                yield error(f"Resize mode {mode!r}; TensorRT supports nearest and linear",
                            "use mode nearest or linear (bilinear)")
            if _attr(node, "antialias", 0):
                yield error("antialiased Resize is not supported", "resize without antialias")
        elif op == "Constant":
            bad = [a.name for a in node.attribute if a.name in _CONSTANT_SPARSE_OR_STRING]
            if bad:
                yield error(f"Constant with {bad[0]}", "use a dense numeric tensor")
        elif op == "Dropout" and len(node.input) > 2 and node.input[2]:
            training = g.constant(node.input[2])
            if training is None or bool(np.any(training)):
                yield error("training_mode is not a constant False", "export the model in eval() mode")
        elif op == "ScatterND" and _attr(node, "reduction", b"none") not in (b"none", "none"):
            yield error("ScatterND reduction is not supported", "use reduction='none'")
        elif op == "CumSum" and len(node.input) > 1 and not g.is_constant(node.input[1]):
            yield error("`axis` is not a build-time constant", "make `axis` an initializer")
        elif op == "LayerNormalization" and any(o for o in node.output[1:]):
            yield error("only output Y is supported (Mean/InvStdDev are used)", "drop the extra outputs")


def _weight_axis(consumer: onnx.NodeProto, index: int, rank: int | None) -> int | None:
    """The output-channel axis of a weight consumed at input `index`, or None when not a weight input."""
    if index != 1:
        return None
    if consumer.op_type == "Conv":
        return 0
    if consumer.op_type == "ConvTranspose":
        return 1
    if consumer.op_type == "Gemm":
        return 0 if _attr(consumer, "transB", 0) else 1
    if consumer.op_type == "MatMul" and rank is not None:
        return rank - 1
    return None


def _qdq_zero_point(g: _Graph, node: onnx.NodeProto) -> Iterator[Finding]:
    if len(node.input) < 3 or not node.input[2]:
        return
    name, op, zp = _name(node), node.op_type, node.input[2]
    value = g.constant(zp)
    if g.elem_type(zp) == TensorProto.UINT8:
        yield _error("qdq", name, op,
                     "uint8 (asymmetric) quantization; TensorRT's explicit quantization takes int8 "
                     "with zero point 0",
                     "re-quantize with symmetric int8 activations and weights (the TensorRT target)")
    elif value is None:
        yield _error("qdq", name, op, "zero point is not a constant",
                     "make the zero point an initializer of 0")
    elif np.any(value.astype(np.float64) != 0):
        yield _error("qdq", name, op, "non-zero zero point; TensorRT needs zero points of 0",
                     "re-quantize symmetrically (zero point 0)")


def _rule_qdq(g: _Graph) -> Iterator[Finding]:
    for node in g.model.graph.node:
        if node.op_type not in QDQ_OPS:
            continue
        name, op = _name(node), node.op_type
        yield from _qdq_zero_point(g, node)
        if len(node.input) > 1 and not g.is_constant(node.input[1]):
            yield _error("qdq", name, op, "scale is not a build-time constant",
                         "make the scale an initializer")
        if op == "QuantizeLinear":
            consumers = g.consumers.get(node.output[0], [])
            others = [c.op_type for c in consumers if c.op_type != "DequantizeLinear"]
            if others or node.output[0] in g.graph_outputs:
                yield _error("qdq", name, op,
                             f"QuantizeLinear feeds {', '.join(others) or 'a graph output'}; TensorRT needs "
                             "each Q followed by DequantizeLinear",
                             "place a DequantizeLinear after every QuantizeLinear (QDQ format)")
        scale = g.constant(node.input[1]) if len(node.input) > 1 else None
        if scale is None or scale.size <= 1:
            continue
        if not g.is_constant(node.input[0]):
            yield _error("qdq", name, op,
                         f"per-channel scale ({scale.size} values) on an activation; TensorRT quantizes "
                         "activations per tensor",
                         "use one scale per activation tensor (per-channel applies to weights only)")
            continue
        rank = g.rank(node.input[0])
        axis = _attr(node, "axis", 1)
        axis = axis + rank if rank is not None and axis < 0 else axis
        out = node.output[0]
        for consumer in g.consumers.get(out, []):
            for index in [i for i, inp in enumerate(consumer.input) if inp == out]:
                expected = _weight_axis(consumer, index, rank)
                if expected is not None and expected != axis:
                    yield _error("qdq", name, op, f"per-channel weight quantized along axis {axis}; "
                                 f"{consumer.op_type} needs its output-channel axis {expected}",
                                 f"quantize the weight per channel along axis {expected}")


RULES: dict[str, Rule] = {
    "opset": _rule_opset,
    "unsupported-op": _rule_ops,
    "random-op": _rule_random,
    "dtype": _rule_dtypes,
    "op-dtype": _rule_op_types,
    "dynamic-shape": _rule_dynamic_dims,
    "topk": _rule_topk,
    "op-restriction": _rule_restrictions,
    "qdq": _rule_qdq,
}


def _load(model_or_path: onnx.ModelProto | str | Path) -> onnx.ModelProto:
    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path
    return load_onnx(model_or_path)


def lint_onnx(model_or_path: onnx.ModelProto | str | Path) -> list[Finding]:
    """TensorRT-compatibility findings for an ONNX graph, errors first (the model is not modified)."""
    model = _load(model_or_path)
    findings = []
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as exc:
        # Report it, then lint what the lenient inference can still say.
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
        findings.append(Finding("shape-inference", "warning", "(model)", "-",
                                f"onnx shape inference failed: {' '.join(str(exc).split())[:240]}",
                                "fix the graph (onnx.checker.check_model(m, full_check=True)); TensorRT's "
                                "parser is likely to fail where inference does"))
    graph = _Graph(inferred)
    for rule in RULES.values():
        findings.extend(rule(graph))
    return sorted(findings, key=lambda f: SEVERITIES.index(f.severity))

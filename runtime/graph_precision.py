"""The precision of an ONNX graph, read from the graph itself (never from its sidecar's label).

    graph_precision(onnx.load("model.int8.onnx"))   # "int8"

- int8: any quantize / dequantize or integer-arithmetic op (QuantizeLinear, DequantizeLinear,
  DynamicQuantizeLinear, QLinear*, QGemm, ConvInteger, MatMulInteger, ...), in the default or com.microsoft
  domain;
- fp16: otherwise, any float16 tensor: an initializer, a graph input / output / value_info, a Constant's value
  or a Cast to float16;
- fp32: everything else.
Subgraphs (If / Loop bodies) and model-local functions count too.

The op sets other modules read a graph by live here too: QDQ_OPS (the Q/DQ pair of an INT8 graph) and
RANDOM_OPS (ops that draw random numbers at inference, so outputs change from run to run), and the one
lookup of a node list's edges for code that reads protos: `producers` and `consumers`.
"""

from collections.abc import Iterable

import onnx
from onnx import AttributeProto, TensorProto

PRECISIONS = ("fp32", "fp16", "int8")  # what graph_precision returns, and what a sidecar may record
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
INT8_OPS = QDQ_OPS | {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger", "DynamicQuantizeMatMul",
                      "MatMulIntegerToFloat", "QGemm", "QAttention"}
# Dropout is not one: with training_mode absent or false (every inference graph) it is an identity.
RANDOM_OPS = frozenset({"RandomUniform", "RandomUniformLike", "RandomNormal", "RandomNormalLike", "Bernoulli",
                        "Multinomial"})


def subgraphs(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    """A graph and every subgraph (If / Loop / Scan bodies) inside it."""
    found = [graph]
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == AttributeProto.GRAPH:
                found += subgraphs(attr.g)
            elif attr.type == AttributeProto.GRAPHS:
                for g in attr.graphs:
                    found += subgraphs(g)
    return found


def all_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Every node of a model: its graph, the subgraphs inside it and its model-local functions."""
    return [n for g in subgraphs(model.graph) for n in g.node] + [n for f in model.functions for n in f.node]


def producers(nodes: Iterable[onnx.NodeProto]) -> dict[str, onnx.NodeProto]:
    """{tensor name: the node that outputs it} over `nodes` (a graph's or a function's node list); optional
    outputs left empty are not tensors. Read-only: a rewrite imports the graph into onnx-graphsurgeon."""
    return {o: n for n in nodes for o in n.output if o}


def consumers(nodes: Iterable[onnx.NodeProto]) -> dict[str, list[onnx.NodeProto]]:
    """{tensor name: the nodes that read it, in node order, once per input slot} over `nodes`; optional inputs
    left empty are not tensors."""
    found: dict[str, list[onnx.NodeProto]] = {}
    for node in nodes:
        for name in node.input:
            if name:
                found.setdefault(name, []).append(node)
    return found


def _is_int8_op(node: onnx.NodeProto) -> bool:
    return node.op_type in INT8_OPS or node.op_type.startswith("QLinear")


def _tensor_is_fp16(t: onnx.TensorProto) -> bool:
    return t.data_type == TensorProto.FLOAT16


def _value_is_fp16(v: onnx.ValueInfoProto) -> bool:
    return v.type.HasField("tensor_type") and v.type.tensor_type.elem_type == TensorProto.FLOAT16


def _node_is_fp16(node: onnx.NodeProto) -> bool:
    for a in node.attribute:
        if a.type == AttributeProto.TENSOR and _tensor_is_fp16(a.t):
            return True
        if node.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT16:
            return True
    return False


def graph_precision(model: onnx.ModelProto) -> str:
    """"int8", "fp16" or "fp32" from the graph's ops and tensor types (see the module docstring)."""
    graphs = subgraphs(model.graph)
    nodes = all_nodes(model)
    if any(_is_int8_op(n) for n in nodes):
        return "int8"
    values = [v for g in graphs for v in (*g.input, *g.output, *g.value_info)]
    if (any(_tensor_is_fp16(t) for g in graphs for t in g.initializer) or any(_value_is_fp16(v) for v in values)
            or any(_node_is_fp16(n) for n in nodes)):
        return "fp16"
    return "fp32"

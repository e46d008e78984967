"""The cpu target's per-channel bias adds as depthwise 1x1 convolutions: an exact rewrite of the float graph that
lets onnxruntime split AARM's fusion bias `+ b` over its intra-op threads in INT8.

onnxruntime runs a QLinearAdd on its thread pool only when the output is a single span (both inputs of one shape,
or one a scalar); a map (N, C, H, W) plus a per-channel constant (1, C, 1, 1) runs on one thread, one span of C
(channels-last) per pixel. Here, before quantization, `Add(x, b)` with x (N, C, H, W) (static C, H x W > 1) and b a
float constant of shape (1, C, 1, 1) or (C, 1, 1) becomes `Conv(x, W = 1, B = b, group = C)`, kernel 1x1: x * 1 + b
per element, the same single float addition. quantize_static makes it a depthwise QLinearConv whose weights (1 in
int8 per-channel, scale 1/127) are exact and whose bias is int32 at the input's scale: onnxruntime's depthwise
kernel runs it on every thread. Measured on AARM-ResNet-50 (batch 8, 224x224, onnxruntime 1.31.1, 2-core Xeon,
2026-11-27): the 16 bias adds take 9-17 ms at 2 threads as QLinearAdd and 6-8 ms as QLinearConv (interleaved
profiles), about 9 ms either way at 1 thread; the whole INT8 graph runs 1.06x [1.02, 1.08] / 1.07x [1.05, 1.13]
faster at 2 threads (two runs, load about 1) and 1.01x [1.00, 1.03] at 1 thread (paired ratios, interleaved rounds).

The spatial gate term w2 * S ((1, C, 1, 1) x (N, 1, H, W)) is left as it is: as a 1x1 QLinearConv 1 -> C it took
twice as long at both thread counts (a GEMM with one input channel). So is the gate sum (N, C, 1, 1) + (N, C, H, W),
whose per-sample term no convolution can carry.

Node and tensor names are kept, so ranges, exclusions and reports name the same nodes.
"""

import numpy as np
import onnx
from onnx import helper, numpy_helper

from calibration.uint8_pools import tensor_dims


def _per_channel(tensor: onnx.TensorProto, channels: int) -> np.ndarray | None:
    """The constant as a (C,) float32 vector when it is (1, C, 1, 1) or (C, 1, 1) (broadcast over N, H, W)."""
    value = numpy_helper.to_array(tensor)
    if value.dtype != np.float32 or not 1 <= value.ndim <= 4:
        return None
    if (1,) * (4 - value.ndim) + tuple(value.shape) != (1, channels, 1, 1):
        return None
    return value.reshape(channels)


def rewrite_bias_adds(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, str]]:
    """A copy of the float graph with each per-channel constant Add on a 4-D map (module docstring) as a depthwise
    1x1 Conv, and {node name: "Add -> Conv"} for each node rewritten."""
    shapes = tensor_dims(model)
    initializers = {t.name: t for t in model.graph.initializer}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes, weights, changed, replaced = [], [], {}, set()
    for node in out.graph.node:
        if node.op_type == "Add" and len(node.input) == 2:
            for x, b in ((node.input[0], node.input[1]), (node.input[1], node.input[0])):
                dims = shapes.get(x, [])
                if x in initializers or b not in initializers or len(dims) != 4 or not all(d > 0 for d in dims[1:]):
                    continue
                bias = _per_channel(initializers[b], dims[1])
                if bias is None or dims[2] * dims[3] == 1:
                    continue
                name = node.output[0]  # outputs are unique
                ones = numpy_helper.from_array(np.ones((dims[1], 1, 1, 1), np.float32), f"{name}_bias_conv_weight")
                vector = numpy_helper.from_array(bias.copy(), f"{name}_bias_conv_bias")
                weights += [ones, vector]
                node = helper.make_node("Conv", [x, ones.name, vector.name], list(node.output), name=node.name,
                                        kernel_shape=[1, 1], group=dims[1])
                changed[node.name] = "Add -> Conv"
                replaced.add(b)
                break
        nodes.append(node)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    used = {i for n in nodes for i in n.input} | {o.name for o in out.graph.output}
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in nodes for a in n.attribute):
        replaced = set()  # a subgraph may read them
    kept = [t for t in out.graph.initializer if t.name not in replaced or t.name in used]  # no orphans: ORT warns
    del out.graph.initializer[:]
    out.graph.initializer.extend([*kept, *weights])
    return out, changed

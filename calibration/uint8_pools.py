"""The cpu target's pools on the uint8 map: exact rewrites of the float graph that let onnxruntime run AARM's
max and mean pools on the quantized feature map instead of on a float copy of it.

onnxruntime's quantizer has no Q/DQ form for GlobalMaxPool, ReduceMax or ReduceMean, so in a plain
`quantize_static` graph each AARM block dequantizes its whole feature map once per pool (onnxruntime gives
every float consumer its own DequantizeLinear) and pools in float: three full-map float copies per block.
Here, before quantization:

- GlobalMaxPool (N, C, H, W) with a static H x W becomes MaxPool with kernel H x W. quantize_static gives
  MaxPool its input's scale, and onnxruntime runs the DQ -> MaxPool -> Q group as one uint8 max pool.
- ReduceMax is quantized too, its output given its input's calibrated range (`share_max_ranges`): the max of
  uint8 codes is the code of the max, so the result is exact, and onnxruntime runs the DQ -> ReduceMax -> Q
  group of equal scales as one uint8 ReduceMax.
- ReduceMean over the channels of a 4-D map with a static C becomes a 1x1 Conv with weights 1/C (no bias):
  an int8 QLinearConv that reads the uint8 map (1/C is exact in int8 per-channel weights: 127 x scale).

Node and tensor names are kept, so ranges, exclusions and reports name the same nodes.
"""

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnxruntime.quantization.calibrate import TensorsData

# Op types quantize_static must quantize besides its own list (it has no entry for them).
UINT8_OPS = ("ReduceMax",)


def tensor_dims(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Tensor name -> dims (0 where unknown) from ONNX shape inference."""
    inferred = onnx.shape_inference.infer_shapes(model)
    values = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    return {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in values
            if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape")}


def _reduce_axes(node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto]) -> list[int] | None:
    """The axes of a Reduce* node (attribute before opset 18, input after); None when not constant."""
    for a in node.attribute:
        if a.name == "axes":
            return list(a.ints)
    if len(node.input) > 1 and node.input[1] in initializers:
        return [int(v) for v in numpy_helper.to_array(initializers[node.input[1]])]
    return None


def _keepdims(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "keepdims"), 1)


def rewrite_pools(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, str]]:
    """A copy of the float graph with GlobalMaxPool -> MaxPool and channel ReduceMean -> 1x1 Conv where the
    shapes allow (module docstring), and {node name: "Old -> New"} for each node rewritten."""
    shapes = tensor_dims(model)
    initializers = {t.name: t for t in model.graph.initializer}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes, weights, changed = [], [], {}
    for node in out.graph.node:
        dims = shapes.get(node.input[0], []) if node.input else []
        static = len(dims) == 4 and all(d > 0 for d in dims[1:])
        if node.op_type == "GlobalMaxPool" and static:
            node = helper.make_node("MaxPool", [node.input[0]], list(node.output), name=node.name,
                                    kernel_shape=dims[2:])
            changed[node.name] = "GlobalMaxPool -> MaxPool"
        elif (node.op_type == "ReduceMean" and static and _keepdims(node) == 1
              and _reduce_axes(node, initializers) in ([1], [-3])):
            weight = numpy_helper.from_array(np.full((1, dims[1], 1, 1), 1.0 / dims[1], np.float32),
                                             f"{node.output[0]}_channel_mean_weight")  # outputs are unique
            weights.append(weight)
            node = helper.make_node("Conv", [node.input[0], weight.name], list(node.output), name=node.name,
                                    kernel_shape=[1, 1])
            changed[node.name] = "ReduceMean -> Conv"
        nodes.append(node)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    out.graph.initializer.extend(weights)
    return out, changed


def share_max_ranges(model: onnx.ModelProto, ranges: TensorsData) -> tuple[TensorsData, list[str]]:
    """`ranges` with each ReduceMax output given its input's range (exact in uint8, module docstring), and the
    ReduceMax nodes whose input has no range (quantize_static cannot quantize them: they stay float)."""
    data, unranged = dict(ranges.data), []
    for node in model.graph.node:
        if node.op_type in UINT8_OPS:
            if node.input[0] in data:
                data[node.output[0]] = data[node.input[0]]
            else:
                unranged.append(node.name)
    return TensorsData(ranges.calibration_method, data), unranged

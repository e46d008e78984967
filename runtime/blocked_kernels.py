"""AARM's fused CPU kernels on onnxruntime's blocked layout: no layout change around AarmPool and AarmGate.

onnxruntime's CPU provider runs convolutions in a blocked channel layout (NCHWc: channel c = cb*B + l stored
at ((n*C/B + cb)*S + s)*B + l, B = 16 with AVX-512, 8 with AVX2), but it hands a custom op only the plain
layout. In a `--kernels` graph every AARM block therefore converts its map out of the blocked layout for
AarmPool and AarmGate (`ReorderOutput`) and the gate's output back in for the next convolution
(`ReorderInput`): two full-map copies per block.

`blocked_kernel_graph` takes the graph onnxruntime has optimised for this CPU (with its NCHWc rewrites) and
gives the two ops the blocked map instead, as `AarmPoolNchwc` / `AarmGateNchwc` (same arithmetic, in
`export/kernels/aarm_ops.cc`): M and the residual are read blocked, the gate's output stays blocked for the
next block's convolutions and residual, and a `ReorderOutput` is kept only where a consumer needs the plain
map. The result is specific to this CPU and onnxruntime version, so it is made when a session opens, never
written as an artifact.

    model = blocked_kernel_graph(kernel_graph_bytes, library)   # ModelProto, or None: nothing to block here
"""

import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from runtime.kernel_library import DOMAIN

NCHWC = "com.microsoft.nchwc"
BLOCKED = {"AarmPool": "AarmPoolNchwc", "AarmGate": "AarmGateNchwc"}
RESIDUAL = 6  # AarmGate's optional residual input


def _ort_optimised(model: bytes | str, library: Path | None) -> onnx.ModelProto:
    """The graph onnxruntime's CPU provider runs for `model` at ORT_ENABLE_ALL on this CPU (NCHWc included)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="aarm-nchwc-") as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        opts.optimized_model_filepath = str(Path(tmp) / "optimised.onnx")
        if library is not None:
            opts.register_custom_ops_library(str(library))
        ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        return onnx.load(opts.optimized_model_filepath)


@cache
def block_size() -> int:
    """onnxruntime's NCHWc block size on this CPU (16 with AVX-512, 8 with AVX2), 0 where it does not block.

    Read from onnxruntime itself: a Conv with one output channel is padded to one block of output channels
    when the NCHWc transformer takes it, so its rewritten weight has `block` rows."""
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2, 8, 8])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 1, 8, 8])
    w = onnx.numpy_helper.from_array(np.ones((1, 2, 3, 3), np.float32), "w")
    conv = onnx.helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    graph = onnx.helper.make_graph([conv], "probe", [x], [y], [w])
    probe = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8)
    optimised = _ort_optimised(probe.SerializeToString(), None)
    weights = {t.name: t for t in optimised.graph.initializer}
    for node in optimised.graph.node:
        if node.domain == NCHWC and node.op_type == "Conv" and node.input[1] in weights:
            return int(weights[node.input[1]].dims[0])
    return 0


def _unblocked(tensor: gs.Tensor) -> gs.Tensor | None:
    """The blocked map a plain tensor was converted from (its producer is a `ReorderOutput`), else None."""
    producer = tensor.inputs[0] if len(tensor.inputs) == 1 else None
    if producer is None or producer.domain != NCHWC or producer.op != "ReorderOutput":
        return None
    if int(producer.attrs.get("channels_last", 0)) != 0:
        return None
    return producer.inputs[0]


def _channels(tensor: gs.Tensor) -> int:
    """The channel count of a plain tensor made by `ReorderOutput` (its `channels` attribute)."""
    return int(tensor.inputs[0].attrs["channels"])


def to_blocked(graph: gs.Graph, block: int) -> int:
    """Rewrite, in place, every AarmPool / AarmGate whose M arrives from a blocked map with a multiple of
    `block` channels into its blocked variant. Returns how many ops were rewritten."""
    chosen = [n for n in graph.nodes if n.domain == DOMAIN and n.op in BLOCKED and n.inputs
              and _unblocked(n.inputs[0]) is not None and _channels(n.inputs[0]) % block == 0]
    for node in chosen:
        channels = _channels(node.inputs[0])
        node.inputs[0] = _unblocked(node.inputs[0])
        node.op = BLOCKED[node.op]
        node.attrs["block"] = block
        if node.op == "AarmGateNchwc":  # blocked output; its plain readers read a ReorderOutput of it
            plain = node.outputs[0]
            blocked = gs.Variable(f"{plain.name}__nchwc", dtype=plain.dtype, shape=plain.shape)
            node.outputs = [blocked]
            graph.nodes.append(gs.Node("ReorderOutput", domain=NCHWC, inputs=[blocked], outputs=[plain],
                                       attrs={"channels": channels, "channels_last": 0}))
    for node in chosen:  # after all outputs above: a residual is often the previous gate's output
        if node.op != "AarmGateNchwc" or len(node.inputs) <= RESIDUAL or not node.inputs[RESIDUAL].name:
            continue
        residual = node.inputs[RESIDUAL]
        source = _unblocked(residual)
        if source is None:
            source = gs.Variable(f"{residual.name}__nchwc", dtype=residual.dtype, shape=residual.shape)
            graph.nodes.append(gs.Node("ReorderInput", domain=NCHWC, inputs=[residual], outputs=[source],
                                       attrs={"channels_last": 0}))
        node.inputs[RESIDUAL] = source
    for node in [n for n in graph.nodes if n.domain == NCHWC and n.op == "ReorderInput"]:
        # a ReorderInput of a ReorderOutput of whole blocks gives back the blocked map: read that directly
        source = _unblocked(node.inputs[0])
        if source is None or int(node.attrs.get("channels_last", 0)) != 0 or _channels(node.inputs[0]) % block:
            continue
        for consumer in list(node.outputs[0].outputs):
            for i, t in enumerate(consumer.inputs):
                if t is node.outputs[0]:
                    consumer.inputs[i] = source
    graph.cleanup().toposort()
    return len(chosen)


def blocked_kernel_graph(model: bytes | str, library: Path) -> onnx.ModelProto | None:
    """onnxruntime's optimised form of a kernel graph (bytes, or an ONNX file's path) with AarmPool / AarmGate
    on the blocked layout; None when onnxruntime does not block on this CPU or no op could take the blocked
    map. `library` is the (trusted) custom-op library; the session that runs the result registers it too."""
    block = block_size()
    if block == 0:
        return None
    optimised = _ort_optimised(model, library)
    graph = gs.import_onnx(optimised)
    if to_blocked(graph, block) == 0:
        return None
    out = gs.export_onnx(graph)
    del out.opset_import[:]
    out.opset_import.extend(optimised.opset_import)
    out.ir_version = optimised.ir_version
    return out


def describe(model: onnx.ModelProto) -> dict[str, Any]:
    """Op counts of interest in a blocked kernel graph: the blocked AARM ops and the layout changes left."""
    count: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type in ("ReorderInput", "ReorderOutput", *BLOCKED, *BLOCKED.values()):
            count[node.op_type] = count.get(node.op_type, 0) + 1
    return count

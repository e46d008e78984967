"""Helpers that make runtime test artifacts: derive a modified graph with a valid sidecar, and slow a graph
down without changing its outputs. (Cached exports: tests/shared_fixtures.py.)"""

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from runtime.artifact import read_sidecar, write_sidecar


def derive_artifact(parent: Path, model: onnx.ModelProto, out: Path, **changes: object) -> Path:
    """Save a modified graph with a freshly written sidecar derived from its parent's (a valid artifact)."""
    onnx.save(model, str(out))
    write_sidecar(out, read_sidecar(parent).derive(**{"stage": "optimize", **changes}), parent=parent)
    return out


def slowed_graph(path: Path, *, convs: int = 3, width: int = 64) -> onnx.ModelProto:
    """The graph of `path` (input (N, K, 3, H, W)) with heavy convolutions on its input whose result is
    multiplied by zero and added to the scores: same outputs, several times the FLOPs."""
    model = onnx.load(str(path))
    g = model.graph
    h, w = (d.dim_value for d in g.input[0].type.tensor_type.shape.dim[3:5])
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.array([-1, 3, h, w], dtype=np.int64), "slow_shape"),
             numpy_helper.from_array(np.zeros((), dtype=np.float32), "slow_zero")]
    nodes = [helper.make_node("Reshape", [g.input[0].name, "slow_shape"], ["slow_x"])]
    prev, cin = "slow_x", 3
    for i in range(convs):
        inits.append(numpy_helper.from_array(
            (rng.standard_normal((width, cin, 3, 3)) * 0.05).astype(np.float32), f"slow_w{i}"))
        nodes.append(helper.make_node("Conv", [prev, f"slow_w{i}"], [f"slow_c{i}"], pads=[1, 1, 1, 1]))
        prev, cin = f"slow_c{i}", width
    out_name = g.output[0].name
    nodes += [
        helper.make_node("ReduceSum", [prev], ["slow_sum"], keepdims=0),
        helper.make_node("Mul", ["slow_sum", "slow_zero"], ["slow_zeroed"]),
    ]
    for node in g.node:  # rename the original output; the new Add produces it
        for i, o in enumerate(node.output):
            if o == out_name:
                node.output[i] = "slow_scores"
    nodes.append(helper.make_node("Add", ["slow_scores", "slow_zeroed"], [out_name]))
    g.node.extend(nodes)
    g.initializer.extend(inits)
    return model

"""The graph passes make the graphs they made before their rewrite onto onnx-graphsurgeon's `Graph.layer` and
registered rewrites: node for node (names aside), with the same weights, the same op histogram and identical
outputs, on a tiny AARM-ResNet-18 and a tiny AARM 3D-ResNet-18 exported with the interleaving channel fusion
(see passes_reference.py for how tests/fixtures/passes/ was made)."""

import numpy as np
import onnx
import pytest
from passes_reference import CASES, FIXTURES, fill_large, fill_weights, node_signatures, op_histogram

from export.passes import DEFAULT_PASSES, KERNEL_PASSES, run_passes


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {model.graph.input[0].name: x})[0]


@pytest.mark.parametrize(("case", "name", "kernels"), CASES, ids=[c[0] for c in CASES])
def test_passes_make_the_reference_graph(case, name, kernels):
    exported = fill_large(onnx.load(str(FIXTURES / f"{name}.exported.onnx")))
    reference = onnx.load(str(FIXTURES / f"{case}.optimised.onnx"))
    new, _ = run_passes(exported, KERNEL_PASSES if kernels else DEFAULT_PASSES)
    assert op_histogram(exported)["Concat"] > 0 and op_histogram(new)["Concat"] == 0  # every fusion rewritten
    assert op_histogram(new) == op_histogram(reference)
    assert node_signatures(new) == node_signatures(reference)
    if kernels:  # the fused ops need the compiled kernel library; equal signatures already pin the graph down
        return
    dims = [d.dim_value or 3 for d in exported.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(0).standard_normal(dims, dtype=np.float32)
    old_scores, new_scores = _run(fill_weights(reference, new), x), _run(new, x)
    np.testing.assert_array_equal(new_scores, old_scores)
    assert np.isfinite(new_scores).all() and np.ptp(new_scores) > 0  # real scores, not a degenerate constant


def test_signatures_tell_graphs_apart():
    """The comparison can fail: one changed weight, attribute or wire changes the signatures."""
    model = fill_large(onnx.load(str(FIXTURES / "resnet18.exported.onnx")))
    base = node_signatures(model)
    changed = onnx.ModelProto()
    changed.CopyFrom(model)
    conv = next(n for n in changed.graph.node if n.op_type == "Conv")
    weight = next(t for t in changed.graph.initializer if t.name == conv.input[1])
    array = onnx.numpy_helper.to_array(weight).copy()
    array.flat[0] += 1.0
    weight.CopyFrom(onnx.numpy_helper.from_array(array, weight.name))
    assert node_signatures(changed) != base
    changed.CopyFrom(model)
    pool = next(n for n in changed.graph.node if n.op_type == "MaxPool")
    next(a for a in pool.attribute if a.name == "kernel_shape").ints[0] += 1
    assert node_signatures(changed) != base
    changed.CopyFrom(model)
    mul = next(n for n in changed.graph.node if n.op_type == "Mul" and n.input[0] != n.input[1])
    mul.input[0], mul.input[1] = mul.input[1], mul.input[0]  # operands swapped: another wiring
    assert node_signatures(changed) != base

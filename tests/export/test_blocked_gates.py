"""`blocked_gates`: AARM's gate tail in ops onnxruntime's NCHWc transformer keeps blocked; same outputs, and in
onnxruntime's optimised session the block's output no longer leaves the blocked layout."""

import collections
import functools

import numpy as np
import onnx
import pytest
import torch
from test_passes import export_module, ops, ort_run, rand, randomized_block
from torch import nn

from export.passes import DEFAULT_PASSES, KERNEL_PASSES, OPTIMIZE_PASSES, blocked_gates, run_passes


class ResidualAARM(nn.Module):
    """A bottleneck's tail as ResNet has it: conv -> AARM -> + residual -> ReLU, then the next block's conv."""

    def __init__(self, channels: int = 32, dims: int = 2) -> None:
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.conv_in, self.conv3 = conv(16, channels, 3, padding=1), conv(channels, channels, 1)
        self.attn, self.conv_out = randomized_block(channels, dims), conv(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = torch.relu(self.conv_in(x))
        return self.conv_out(torch.relu(self.attn(self.conv3(r)) + r))


@functools.cache
def graphs(dims: int = 2) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """(DEFAULT_PASSES graph, OPTIMIZE_PASSES graph) of ResidualAARM."""
    torch.manual_seed(0)
    x = torch.randn(2, 16, *([4] * (dims - 2)), 8, 8)
    exported = export_module(ResidualAARM(dims=dims), x)
    return run_passes(exported, DEFAULT_PASSES)[0], run_passes(exported, OPTIMIZE_PASSES)[0]


def session_ops(model: onnx.ModelProto, tmp_path, name: str) -> collections.Counter[str]:
    """Op types of the graph onnxruntime's CPU session runs (every optimisation on, NCHWc layout included)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / f"{name}.ort.onnx")
    ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    optimised = onnx.load(opts.optimized_model_filepath)
    return collections.Counter(f"{n.domain}:{n.op_type}" if n.domain else n.op_type for n in optimised.graph.node)


def test_blocked_gates_rewrite_the_gate_tail_with_the_same_outputs():
    before, after = graphs()
    assert ops(after).count("Conv") == ops(before).count("Conv") + 2  # w2*S and + b, each a 1x1 conv
    assert ops(after).count("Mul") == ops(before).count("Mul") - 1
    assert ops(after).count("Add") == ops(before).count("Add") - 1
    x = rand(3, 16, 8, 8, seed=1)
    want, got = ort_run(before, {"in0": x})[0], ort_run(after, {"in0": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))
    assert np.ptp(want) > 0


def test_blocked_gates_is_idempotent_and_leaves_3d_maps_and_the_kernel_graph_alone():
    _, after = graphs()
    assert run_passes(after, [blocked_gates])[0].graph.node == after.graph.node
    before3d, after3d = graphs(dims=3)
    assert ops(after3d) == ops(before3d)
    assert blocked_gates not in KERNEL_PASSES  # the fused kernels match the Mul-by-w2 form


def test_the_block_output_stays_in_onnxruntimes_blocked_layout(tmp_path):
    before, after = graphs()
    old, new = session_ops(before, tmp_path, "before"), session_ops(after, tmp_path, "after")
    if not any(op.startswith("com.microsoft.nchwc:") for op in old):
        pytest.skip("onnxruntime uses no NCHWc layout on this CPU")
    reorder_in = "com.microsoft.nchwc:ReorderInput"
    # before: the gate's Mul, the bias and residual Adds and the ReLU run in the plain layout, and the next conv
    # reorders the block's output back in; after: gate, bias, residual and ReLU are blocked, fused into one conv
    assert new[reorder_in] < old[reorder_in]
    assert old["Relu"] == 1 and new["Relu"] == 0

"""Attention modules: the paper's equations 3-6 and STAM's training-only highlight/dropout layer."""

import pytest
import torch

from aarm.attention import CAM, CBAM, SE, STAM, VCM, AARMBlock, attention_factory, highlighted_map
from aarm.attention.pooling import mixed_channel_pool, mixed_global_pool
from aarm.errors import ConfigError


@pytest.mark.parametrize("dims", [2, 3])
def test_mixed_pools(dims):
    x = torch.randn(2, 4, *([3] * dims))
    g = mixed_global_pool(x, 0.3)
    flat = x.flatten(2)
    assert torch.allclose(g.flatten(1), 0.3 * flat.mean(2) + 0.7 * flat.amax(2), atol=1e-6)
    c = mixed_channel_pool(x, 0.5)
    assert c.shape == (2, 1, *([3] * dims))
    assert torch.allclose(c[:, 0], 0.5 * x.mean(1) + 0.5 * x.amax(1), atol=1e-6)


def test_cam_matches_equation_3():
    cam = CAM(32, reduction=16, alpha=0.5)
    x = torch.randn(3, 32, 5, 5)
    p = 0.5 * x.mean((2, 3)) + 0.5 * x.amax((2, 3))
    w1, b1 = cam.fc1.weight.flatten(1), cam.fc1.bias
    w2, b2 = cam.fc2.weight.flatten(1), cam.fc2.bias
    expected = torch.sigmoid(torch.relu(p @ w1.T + b1) @ w2.T + b2)
    assert cam.fc1.out_channels == 2  # C / r
    assert torch.allclose(cam(x).flatten(1), expected, atol=1e-6)


def test_vcm_matches_equation_6():
    vcm = VCM(7)
    z = torch.randn(4, 7)
    assert torch.allclose(vcm(z), torch.sigmoid(vcm.fc(z)) * z)
    assert vcm.fc.weight.shape == (7, 7)


@pytest.mark.parametrize("dims,convs", [(2, [(3, 3)] * 3), (3, [(1, 7, 7), (7, 1, 1)])])
def test_stam_conv_stack(dims, convs):
    stam = STAM(16, dims=dims)
    assert [tuple(m.kernel_size) for m in stam.conv] == convs
    assert all(m.in_channels == 1 and m.out_channels == 1 for m in stam.conv)
    x = torch.randn(2, 16, *([6] * dims))
    out = stam.eval()(x)
    assert out.shape == (2, 1, *([6] * dims))
    assert torch.all((out > 0) & (out < 1))


def test_highlighted_map_is_binary_and_covers_the_top_positions():
    a = torch.rand(5, 1, 7, 7)
    h = highlighted_map(a, 0.9)
    assert set(h.unique().tolist()) <= {0.0, 1.0}
    peak = a.flatten(1).amax(1).view(5, 1, 1, 1)
    assert torch.equal(h.bool(), a >= 0.9 * peak)
    assert torch.all(h.flatten(1).sum(1) >= 1)  # the maximum itself is always highlighted


def _rows_equal(a, b):
    return torch.isclose(a, b, atol=1e-7).flatten(1).all(1)


def test_stam_picks_highlighted_map_at_rate_chi():
    torch.manual_seed(0)
    stam = STAM(8, chi=0.25).train()
    x = torch.randn(4000, 8, 5, 5)
    with torch.no_grad():
        out = stam(x)
        soft = stam.attention_map(x)
        hard = highlighted_map(soft, stam.eta)
    picked_hard = _rows_equal(out, hard)
    picked_soft = _rows_equal(out, soft)
    assert torch.all(picked_hard | picked_soft)  # every sample takes one of the two maps, whole
    rate = picked_hard.float().mean().item()
    # binomial(4000, 0.25): sd ~ 0.0068; 5 sd either side
    assert abs(rate - 0.25) < 0.035


def test_stam_never_highlights_when_chi_is_zero_or_in_eval():
    x = torch.randn(500, 8, 5, 5)
    for stam in (STAM(8, chi=0.0).train(), STAM(8, chi=1.0).eval()):
        with torch.no_grad():
            assert torch.equal(stam(x), stam.attention_map(x))


def test_stam_eval_is_deterministic():
    block = AARMBlock(16, chi=1.0).eval()
    x = torch.randn(3, 16, 6, 6)
    with torch.no_grad():
        assert torch.equal(block(x), block(x))


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("fusion", ["parallel", "sequential"])
def test_gradients_reach_every_aarm_parameter(dims, fusion):
    torch.manual_seed(0)  # a seed where no CAM hidden unit is dead (ReLU) for the whole batch
    block = AARMBlock(64, dims=dims, fusion=fusion, chi=0.0).train()
    x = torch.randn(4, 64, *([4] * dims), requires_grad=True)
    block(x).square().sum().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad is not None


def test_parallel_fusion_is_channelwise_conv_over_the_concatenation():
    block = AARMBlock(8).eval()
    torch.nn.init.normal_(block.fuse.conv.weight)
    torch.nn.init.normal_(block.fuse.conv.bias)
    x = torch.randn(2, 8, 5, 5)
    m_ch, m_st = block.cam(x) * x, block.stam(x) * x
    w = block.fuse.conv.weight.view(8, 2)
    expected = w[:, 0].view(1, 8, 1, 1) * m_ch + w[:, 1].view(1, 8, 1, 1) * m_st + block.fuse.conv.bias.view(1, 8, 1, 1)
    assert torch.allclose(block(x), expected, atol=1e-5)
    assert sum(p.numel() for p in block.fuse.parameters()) == 3 * 8  # two weights and a bias per channel


@pytest.mark.parametrize("dims", [2, 3])
def test_parallel_fusion_equals_the_grouped_conv_over_the_interleaved_maps(dims):
    """The weighted-sum forward against eq. 5 as a grouped 1x1 conv over the channel-interleaved stack (the
    formulation the parameters are laid out for): same outputs and same gradients, to float32 rounding."""
    torch.manual_seed(dims)
    block = AARMBlock(16, dims=dims, chi=0.0).train()
    with torch.no_grad():
        block.fuse.conv.weight.copy_(1 + 0.5 * torch.randn_like(block.fuse.conv.weight))
        block.fuse.conv.bias.normal_()
    x = torch.randn(3, 16, *([5] * dims), requires_grad=True)
    y = block(x)
    m_ch, m_st = block.cam(x) * x, block.stam(x) * x
    reference = block.fuse.conv(torch.stack((m_ch, m_st), dim=2).flatten(1, 2))
    scale = reference.abs().max()
    assert (y - reference).abs().max() <= 1e-6 * scale
    params = [x, *block.parameters()]
    got = torch.autograd.grad(y.square().sum(), params)
    want = torch.autograd.grad(reference.square().sum(), params)
    for g, w in zip(got, want, strict=True):
        assert (g - w).abs().max() <= 2e-6 * w.abs().max().clamp_min(1e-12)
    assert torch.allclose(block.fuse(m_ch, m_st), reference, atol=1e-6 * scale.item())


def test_parallel_fusion_keeps_the_grouped_conv_parameter_layout():
    block = AARMBlock(8)
    shapes = {k: tuple(v.shape) for k, v in block.fuse.state_dict().items()}
    assert shapes == {"conv.weight": (8, 2, 1, 1), "conv.bias": (8,)}
    assert block.fuse.conv.groups == 8


def test_sequential_fusion_is_cbam_order():
    block = AARMBlock(8, fusion="sequential").eval()
    x = torch.randn(2, 8, 5, 5)
    m_ch = block.cam(x) * x
    assert torch.allclose(block(x), block.stam(m_ch) * m_ch, atol=1e-6)


@pytest.mark.parametrize("cls", [SE, CBAM, AARMBlock])
@pytest.mark.parametrize("dims", [2, 3])
def test_modules_keep_the_shape(cls, dims):
    m = cls(32, dims=dims).eval()
    x = torch.randn(2, 32, *([4] * dims))
    assert m(x).shape == x.shape


def test_factory_rejects_unknown_kind_and_option():
    with pytest.raises(ConfigError, match="unknown attention"):
        attention_factory("bam", dims=2)
    with pytest.raises(ConfigError, match="eta"):
        attention_factory("se", dims=2, eta=0.5)
    with pytest.raises(ConfigError, match="chi"):
        STAM(4, chi=1.5)
    assert isinstance(attention_factory("none", dims=2)(64), torch.nn.Identity)


@pytest.mark.parametrize("dims", [2, 3])
def test_pools_fast_inference_path_equals_training_path(dims):
    """Inference pools with amax (fast forward), training with the argmax forms (fast backward): the values
    must be bit-identical, and the training path must still give the argmax's one-channel gradient."""
    x = torch.randn(2, 8, *([5] * dims))
    with torch.inference_mode():
        fast_g, fast_c = mixed_global_pool(x, 0.3), mixed_channel_pool(x, 0.3)
    leaf = x.clone().requires_grad_(True)
    slow_g, slow_c = mixed_global_pool(leaf, 0.3), mixed_channel_pool(leaf, 0.3)
    assert torch.equal(fast_g, slow_g.detach()) and torch.equal(fast_c, slow_c.detach())
    tied = torch.zeros(1, 3, *([2] * dims), requires_grad=True)  # every channel ties: amax would split 1/3 each
    mixed_channel_pool(tied, 0.0).sum().backward()
    assert tied.grad.sum(dim=1).eq(1).all() and tied.grad.eq(1).sum() == tied.grad.sum()  # one channel each


def test_pools_trace_the_same_graph_under_onnx_export(monkeypatch):
    """ONNX export traces the training forms (adaptive pools, max(dim)), even under inference_mode: with the
    exporter export_onnx uses (torch.onnx's dynamo exporter, its opset), the graph is node for node the one
    traced with the fast path switched off (the fast path orders the channel pool's ReduceMax differently)."""
    import aarm.attention.pooling as pooling
    from export.onnx_export import EXPORTER_OPSET

    def ops():
        with torch.inference_mode():
            program = torch.onnx.export(AARMBlock(16).eval(), (torch.randn(1, 16, 6, 6),), None, dynamo=True,
                                        opset_version=EXPORTER_OPSET, verify=False, report=False)
        return [n.op_type for n in program.model_proto.graph.node]

    default = ops()
    monkeypatch.setattr(pooling, "differentiable", lambda *t: True)
    assert default == ops()



@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("data", ["random", "tied"])
def test_training_block_one_node_backwards_match_equation_5(dims, data):
    """In training the parallel block pools through one autograd node and fuses through another (fewer passes
    over the map in backward): outputs, dL/dx and every parameter's gradient equal eq. 5 written with the
    modules' own forwards and autograd's per-op backwards (float64, to rounding), with STAM's random pick
    drawing the same numbers. "tied": integer-valued maps, where the maxes' gradients must go to the same
    argmax (the first) in both."""
    torch.manual_seed(dims)
    block = AARMBlock(16, dims=dims, chi=0.5).train().double()
    with torch.no_grad():
        block.fuse.conv.weight.copy_(1 + 0.5 * torch.randn_like(block.fuse.conv.weight))
        block.fuse.conv.bias.normal_()
    shape = (4, 16, *([5] * dims))
    x = (torch.randint(0, 3, shape) if data == "tied" else torch.randn(shape)).double().requires_grad_(True)
    params = [x, *block.parameters()]
    torch.manual_seed(7)
    y = block(x)
    got = torch.autograd.grad((y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum(), params)
    after = torch.rand(4)
    assert y.grad_fn.name() == "_GatedFusionBackward"  # the one-node path ran
    torch.manual_seed(7)
    reference = block.fuse(block.cam(x) * x, block.stam(x) * x)
    want = torch.autograd.grad((reference * torch.linspace(-1, 1, y.numel()).view_as(y)).sum(), params)
    assert torch.equal(torch.rand(4), after)  # the same random numbers drawn, so the same picks
    assert (y - reference).abs().max() <= 1e-12 * reference.abs().max()
    for name, g, w in zip(["x", *(n for n, _ in block.named_parameters())], got, want, strict=True):
        assert (g - w).abs().max() <= 1e-10 * w.abs().max().clamp_min(1e-300), name

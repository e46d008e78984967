"""AARM's CPU kernels on onnxruntime's blocked (NCHWc) layout: the blocked ops compute what the plain ones do,
the rewrite of onnxruntime's optimised graph removes the layout changes around them and keeps the scores, and
the runtime runs a kernel graph that way."""

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_onnx_export import cached_resnet18_aarm

from export.passes import optimize_onnx
from runtime.backends import open_runner
from runtime.blocked_kernels import NCHWC, block_size, blocked_kernel_graph, describe

DOMAIN = "com.aarm"


@pytest.fixture(scope="module")
def library() -> Path:
    from aarm.errors import BackendUnavailable
    from export.kernels import custom_op_library

    try:
        return custom_op_library()
    except BackendUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def block() -> int:
    b = block_size()
    if b == 0:
        pytest.skip("onnxruntime does not use its blocked layout on this CPU")
    return b


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def run(model: onnx.ModelProto, library: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.register_custom_ops_library(str(library))
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(None, feeds)


def model_of(nodes, inputs: dict[str, np.ndarray], outputs: list[str], inits: dict[str, np.ndarray]):
    graph = helper.make_graph(
        nodes, "k", [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v.shape)) for k, v in inputs.items()],
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, None) for k in outputs],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, ir_version=10, opset_imports=[
        helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1), helper.make_opsetid(NCHWC, 1)])


def test_block_size_is_onnxruntimes_for_this_cpu():
    flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "").split()
    if "avx512f" in flags:
        assert block_size() == 16
    elif "avx2" in flags:
        assert block_size() == 8


@pytest.mark.parametrize("shape", [(2, 48, 5, 7), (3, 32, 1, 1), (2, 64, 96, 96)])  # the last: > 4 MiB, streamed
def test_blocked_ops_compute_what_the_plain_ops_do(library, block, shape):
    n, c, h, w = shape
    x, r, cg, sg = rand(*shape, seed=1), rand(*shape, seed=2), rand(n, c, 1, 1, seed=3), rand(n, 1, h, w, seed=4)
    w1, w2, b = rand(c, seed=5), rand(c, seed=6), rand(c, seed=7)
    pools = {"global_avg": 0.3, "global_max": 0.7, "channel_avg": 0.6, "channel_max": 0.4}
    maxima = {"global_avg": 0.0, "global_max": 1.0, "channel_avg": 0.0, "channel_max": 1.0}
    nodes = [helper.make_node("ReorderInput", ["x"], ["xb"], domain=NCHWC, channels_last=0),
             helper.make_node("ReorderInput", ["r"], ["rb"], domain=NCHWC, channels_last=0)]
    outputs = []
    for tag, attrs in (("mix", pools), ("max", maxima)):
        nodes += [helper.make_node("AarmPool", ["x"], [f"g_{tag}", f"c_{tag}"], domain=DOMAIN, **attrs),
                  helper.make_node("AarmPoolNchwc", ["xb"], [f"gb_{tag}", f"cb_{tag}"], domain=DOMAIN, block=block,
                                   **attrs)]
        outputs += [f"g_{tag}", f"c_{tag}", f"gb_{tag}", f"cb_{tag}"]
    for relu, res in ((1, True), (0, False)):
        plain_in = ["x", "cg", "sg", "w1", "w2", "b"] + (["r"] if res else [])
        blocked_in = ["xb", "cg", "sg", "w1", "w2", "b"] + (["rb"] if res else [])
        nodes += [helper.make_node("AarmGate", plain_in, [f"y{relu}"], domain=DOMAIN, relu=relu),
                  helper.make_node("AarmGateNchwc", blocked_in, [f"yb{relu}"], domain=DOMAIN, relu=relu, block=block),
                  helper.make_node("ReorderOutput", [f"yb{relu}"], [f"yp{relu}"], domain=NCHWC, channels=c,
                                   channels_last=0)]
        outputs += [f"y{relu}", f"yp{relu}"]
    model = model_of(nodes, {"x": x, "r": r, "cg": cg, "sg": sg}, outputs, {"w1": w1, "w2": w2, "b": b})
    got = dict(zip(outputs, run(model, library, {"x": x, "r": r, "cg": cg, "sg": sg}), strict=True))
    for tag in ("mix", "max"):
        assert got[f"gb_{tag}"].shape == (n, c, 1, 1) and got[f"cb_{tag}"].shape == (n, 1, h, w)
    np.testing.assert_array_equal(got["gb_max"], got["g_max"])  # maxima do not depend on the order of reading
    np.testing.assert_array_equal(got["cb_max"], got["c_max"])
    np.testing.assert_allclose(got["gb_mix"], got["g_mix"], rtol=1e-6, atol=1e-6)  # sums: another order
    np.testing.assert_allclose(got["cb_mix"], got["c_mix"], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(got["yp1"], got["y1"])  # the gate: same products and sums in the same order
    np.testing.assert_array_equal(got["yp0"], got["y0"])


def to_blocks(x: np.ndarray, b: int) -> np.ndarray:
    """(N, C, H, W) plain -> the same shape holding the NCHWc layout of block b (channel cb*b + l of a pixel at
    ((n*C/b + cb)*H*W + pixel)*b + l), made with numpy rather than onnxruntime."""
    n, c, h, w = x.shape
    return np.ascontiguousarray(x.reshape(n, c // b, b, h, w).transpose(0, 1, 3, 4, 2)).reshape(n, c, h, w)


def from_blocks(x: np.ndarray, b: int) -> np.ndarray:
    n, c, h, w = x.shape
    return np.ascontiguousarray(x.reshape(n, c // b, h, w, b).transpose(0, 1, 4, 2, 3)).reshape(n, c, h, w)


@pytest.mark.parametrize("b", [8, 16])
def test_both_block_sizes_compute_what_the_plain_ops_do(library, b):
    """Block 8 (onnxruntime's on AVX2 CPUs) and 16 (AVX-512), whichever this CPU's onnxruntime uses: the layout
    is made by numpy, so the 8-wide path runs here too. 80 channels: the pool's four-blocks-at-a-time loop and
    its remainder at either block size."""
    n, c, h, w = 2, 80, 5, 7
    x, r = rand(n, c, h, w, seed=1), rand(n, c, h, w, seed=2)
    cg, sg = rand(n, c, 1, 1, seed=3), rand(n, 1, h, w, seed=4)
    pools = {"global_avg": 0.3, "global_max": 0.7, "channel_avg": 0.6, "channel_max": 0.4}
    nodes = [helper.make_node("AarmPool", ["x"], ["g", "c"], domain=DOMAIN, **pools),
             helper.make_node("AarmPoolNchwc", ["xb"], ["gb", "cb"], domain=DOMAIN, block=b, **pools),
             helper.make_node("AarmGate", ["x", "cg", "sg", "w1", "w2", "b", "r"], ["y"], domain=DOMAIN, relu=1),
             helper.make_node("AarmGateNchwc", ["xb", "cg", "sg", "w1", "w2", "b", "rb"], ["yb"], domain=DOMAIN,
                              relu=1, block=b)]
    feeds = {"x": x, "xb": to_blocks(x, b), "r": r, "rb": to_blocks(r, b), "cg": cg, "sg": sg}
    model = model_of(nodes, feeds, ["g", "c", "gb", "cb", "y", "yb"],
                     {"w1": rand(c, seed=5), "w2": rand(c, seed=6), "b": rand(c, seed=7)})
    g, ch, gb, cb, y, yb = run(model, library, feeds)
    np.testing.assert_allclose(gb, g, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(cb, ch, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(from_blocks(yb, b), y)
    assert not np.array_equal(from_blocks(yb, b), yb)  # the layouts differ: the comparison is not trivially equal


def test_blocked_ops_refuse_a_channel_count_off_the_block(library, block):
    import onnxruntime as ort

    x = rand(1, block + 4, 3, 3)
    model = model_of([helper.make_node("AarmPoolNchwc", ["x"], ["g", "c"], domain=DOMAIN, block=block, global_avg=1.0,
                                       global_max=0.0, channel_avg=1.0, channel_max=0.0)], {"x": x}, ["g", "c"], {})
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.InvalidArgument, match="multiple of the block size"):
        run(model, library, {"x": x})


def block_graph(c: int) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """x -> Conv -> M; AarmPool(M) -> sigmoids; y = AarmGate(M, ..., residual x) -> Conv -> z. Outputs y and z:
    the residual is a graph input (no blocked copy exists), y is needed plain, z's conv reads y."""
    x = rand(2, c, 6, 5, seed=1)
    inits = {"w": rand(c, c, 1, 1, seed=2) * 0.2, "w1": rand(c, seed=3), "w2": rand(c, seed=4), "b": rand(c, seed=5),
             "v": rand(c, c, 3, 3, seed=6) * 0.1}
    nodes = [helper.make_node("Conv", ["x", "w"], ["m"]),
             helper.make_node("AarmPool", ["m"], ["g", "ch"], domain=DOMAIN, global_avg=0.5, global_max=0.5,
                              channel_avg=0.5, channel_max=0.5),
             helper.make_node("Sigmoid", ["g"], ["cg"]), helper.make_node("Sigmoid", ["ch"], ["sg"]),
             helper.make_node("AarmGate", ["m", "cg", "sg", "w1", "w2", "b", "x"], ["y"], domain=DOMAIN, relu=1),
             helper.make_node("Conv", ["y", "v"], ["z"], pads=[1, 1, 1, 1])]
    return model_of(nodes, {"x": x}, ["y", "z"], inits), {"x": x}


def test_rewrite_reads_blocked_maps_and_keeps_plain_ones_where_needed(library, block):
    model, feeds = block_graph(2 * block)
    blocked = blocked_kernel_graph(model.SerializeToString(), library)
    assert blocked is not None
    assert describe(blocked)["AarmPoolNchwc"] == 1 and describe(blocked)["AarmGateNchwc"] == 1
    producer = {o: n for n in blocked.graph.node for o in n.output}
    gate = next(n for n in blocked.graph.node if n.op_type == "AarmGateNchwc")
    pool = next(n for n in blocked.graph.node if n.op_type == "AarmPoolNchwc")
    assert producer[gate.input[0]].op_type == "Conv" and producer[gate.input[0]].domain == NCHWC  # no layout change
    assert pool.input[0] == gate.input[0]
    assert producer[gate.input[6]].op_type == "ReorderInput"  # the residual is a graph input: blocked here
    consumers = [n for n in blocked.graph.node if gate.output[0] in n.input]
    assert {(n.domain, n.op_type) for n in consumers} == {(NCHWC, "Conv"), (NCHWC, "ReorderOutput")}
    want = run(model, library, feeds)
    for got, ref in zip(run(blocked, library, feeds), want, strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_rewrite_leaves_a_graph_it_cannot_block(library, block):
    model, _ = block_graph(block + 4)  # channels off the block: onnxruntime pads them, the ops stay plain
    assert blocked_kernel_graph(model.SerializeToString(), library) is None


def test_kernel_graph_runs_blocked_with_the_scores_of_the_exported_graph(library, block, tmp_path_factory):
    _, _, exported = cached_resnet18_aarm(tmp_path_factory)
    kernels = exported.with_name("model.blocked-test.kernels.onnx")
    optimize_onnx(exported, kernels, kernels=True, force=True)
    blocked = blocked_kernel_graph(str(kernels), library)
    counts = describe(blocked)
    assert counts["AarmPoolNchwc"] == 8 and counts["AarmGateNchwc"] == 8 and "AarmPool" not in counts
    producer = {o: n for n in blocked.graph.node for o in n.output}
    ops = [n for n in blocked.graph.node if n.op_type in ("AarmPoolNchwc", "AarmGateNchwc")]
    assert all((producer[n.input[0]].domain, producer[n.input[0]].op_type) == (NCHWC, "Conv") for n in ops)
    gates = [n for n in ops if n.op_type == "AarmGateNchwc"]
    assert all(producer[n.input[6]].op_type in ("Conv", "MaxPool", "AarmGateNchwc") for n in gates)  # no reorder
    readers = [(n.domain, n.op_type) for g in gates for n in blocked.graph.node if g.output[0] in n.input]
    assert set(readers) == {(NCHWC, "Conv"), (DOMAIN, "AarmGateNchwc"), (NCHWC, "ReorderOutput")}
    assert readers.count((NCHWC, "ReorderOutput")) == 1, "only the last block's output leaves the blocked layout"
    with open_runner(exported, threads=1) as ref, open_runner(kernels, threads=1) as runner:
        assert runner.kernel_layout == "nchwc" and runner.describe()["kernel_layout"] == "nchwc"
        feed = ref.example_feed(4)
        want, got = ref.infer(feed), runner.infer(feed)
        np.testing.assert_allclose(got["scores"], want["scores"], rtol=1e-5, atol=1e-5)
    with open_runner(exported, threads=1) as ref:
        assert ref.kernel_layout is None


def test_kernel_graph_runs_as_written_when_the_rewrite_fails(library, block, tmp_path_factory, monkeypatch):
    import runtime.blocked_kernels

    _, _, exported = cached_resnet18_aarm(tmp_path_factory)
    kernels = exported.with_name("model.blocked-test.kernels.onnx")
    if not kernels.exists():
        optimize_onnx(exported, kernels, kernels=True, force=True)

    def broken(model, library):
        raise ValueError("graph surgery went wrong\nsecond line")

    monkeypatch.setattr(runtime.blocked_kernels, "blocked_kernel_graph", broken)
    with pytest.warns(RuntimeWarning, match=r"plain layout \(the blocked rewrite failed: graph surgery went wrong\)"):
        runner = open_runner(kernels, threads=1)
    with runner, open_runner(exported, threads=1) as ref:
        assert runner.kernel_layout == "plain"
        feed = ref.example_feed(2)
        np.testing.assert_allclose(runner.infer(feed)["scores"], ref.infer(feed)["scores"], rtol=1e-5, atol=1e-5)

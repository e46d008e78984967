"""INT8 calibration keeps a dynamic TSN segment axis K: calibrated at the preprocessing's K, the Q/DQ graph still
names K, copies the recorded range, and runs other K inside it."""

import numpy as np
import onnx

from calibration.quantize import CalibrationConfig, calibrate
from export.options import open_cli_runner
from runtime.artifact import read_sidecar
from runtime.temporal import choose_temporal


def test_int8_graph_keeps_k_dynamic(tiny, videos, tmp_path):
    assert read_sidecar(tiny.onnx).inputs[0].ranges is not None, "the tiny export has a dynamic K"
    out = tmp_path / "model.int8.onnx"
    config = CalibrationConfig(data=videos, clips=5, method="minmax", target="cpu", max_drop=None,
                               preprocess=False, eval_clips=5)
    calibrate(tiny.onnx, out, config)
    dims = [d.dim_param or d.dim_value for d in onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", "K", 3, 32, 32]
    assert read_sidecar(out).inputs[0].ranges == read_sidecar(tiny.onnx).inputs[0].ranges
    x = np.random.default_rng(0).standard_normal((2, 4, 3, 32, 32), dtype=np.float32)
    with choose_temporal(open_cli_runner(out, None, None, 1), segments=4) as runner:
        scores = runner.infer({"input": x})["scores"]
    with choose_temporal(open_cli_runner(out, None, None, 1), segments=1) as single:
        snippets = np.stack([single.infer({"input": x[:, k:k + 1]})["scores"] for k in range(4)])
    assert scores.shape == (2, len(tiny.classes)) and np.isfinite(scores).all()
    # TSN's consensus: the K = 4 scores are the mean of the four snippets' own scores
    np.testing.assert_allclose(scores, snippets.mean(axis=0), atol=1e-5, rtol=0)

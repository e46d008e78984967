"""Prediction on generated video files: batching, agreement across backends, one runner shared by threads."""

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from aarm.data.clips import load_video_input
from export.cli import app
from runtime.backends import open_runner
from runtime.predict import predict_video, predict_videos
from runtime.scoring import load_inputs, softmax


@pytest.fixture(scope="module")
def files(videos):
    return sorted((videos / "videos").rglob("*.mp4"))[:6]


def test_predictions_follow_the_model_and_agree_across_backends(tiny, files):
    onnx_runner = open_runner(tiny.onnx, threads=1)
    seen = []
    preds = predict_videos(onnx_runner, files, top_k=3, batch=3, num_clips=2, progress=lambda *s: seen.append(s))
    assert seen == [("predicting", 2, 6), ("predicting", 4, 6), ("predicting", 6, 6)]  # 2 views each, 3 a batch
    assert [p.path for p in preds] == [str(f) for f in files]
    for f, p in zip(files, preds, strict=True):
        x = load_video_input(f, tiny.preprocessing, num_clips=2)  # (2, K, C, H, W)
        with torch.inference_mode():
            want = softmax(tiny.model(x).numpy()).mean(axis=0)
        assert p.views == 2 and len(p.labels) == 3
        assert p.indices == list(np.argsort(-want)[:3])
        assert p.labels == [tiny.classes[i] for i in p.indices]
        np.testing.assert_allclose(p.scores, want[p.indices], atol=1e-5)
        assert p.scores == sorted(p.scores, reverse=True) and sum(p.scores) <= 1 + 1e-9
    torch_preds = predict_videos(open_runner(tiny.checkpoint), files, top_k=3, batch=8)
    assert [p.labels[0] for p in torch_preds] == [p.labels[0] for p in predict_videos(onnx_runner, files, top_k=3)]


def test_one_runner_shared_across_threads(tiny, files):
    runner = open_runner(tiny.onnx, threads=1)
    with runner:
        serial = [predict_video(runner, f, top_k=5) for f in files]
        with ThreadPoolExecutor(max_workers=3) as pool:
            threaded = list(pool.map(lambda f: predict_video(runner, f, top_k=5), files))
    for a, b in zip(serial, threaded, strict=True):
        assert a.labels == b.labels
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5)


def test_inputs_use_the_sidecar_preprocessing(tiny, files):
    runner = open_runner(tiny.onnx)
    feed = load_inputs(runner, files[0], num_clips=3)
    assert list(feed) == ["input"] and feed["input"].shape == (3, 2, 3, 32, 32) and feed["input"].dtype == np.float32


def test_predict_command(tiny, files, tmp_path):
    out = tmp_path / "pred.json"
    res = CliRunner().invoke(app, ["predict", *map(str, files[:3]), "--artifact", str(tiny.onnx), "--top-k", "2",
                                   "--batch", "2", "--threads", "1", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert files[0].name in res.output
    data = json.loads(out.read_text())
    assert data["kind"] == "predict" and data["artifact"]["name"] == "model.onnx"
    assert [len(p["labels"]) for p in data["predictions"]] == [2, 2, 2]
    assert all(lab in tiny.classes for p in data["predictions"] for lab in p["labels"])

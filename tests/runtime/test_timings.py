"""Stage-split latency on generated video files: the timed pipeline predicts what the untimed one predicts,
every stage is measured (the host-to-device copy is "n/a" on a CPU), and `predict --timings` and
`bench --videos` report the split in their tables and JSON."""

import functools
import json

import numpy as np
import pytest
from cli_runner import run_cli

from runtime.backends.onnxruntime_backend import OnnxRuntimeRunner
from runtime.predict import predict_video
from runtime.scoring import load_inputs
from runtime.timings import STAGES, StageTimes, predict_timed, predict_videos_timed, stage_rows, summarise


@pytest.fixture(scope="module")
def files(videos):
    return sorted((videos / "videos").rglob("*.mp4"))[:3]


def test_timed_prediction_is_the_prediction_and_times_every_stage(tiny, files):
    runner = OnnxRuntimeRunner.from_artifact(tiny.onnx, threads=1)
    with runner:
        for f in files:
            times = StageTimes()
            timed = predict_timed(runner, f, times, top_k=3, num_clips=2)
            plain = predict_video(runner, f, top_k=3, num_clips=2)
            assert timed.labels == plain.labels and timed.views == 2
            np.testing.assert_array_equal(timed.scores, plain.scores)
            assert set(times.ms) == set(STAGES) - {"h2d"} and all(v > 0 for v in times.ms.values())
            assert "CPU" in times.not_measured["h2d"]
            row = times.to_json()
            assert row["h2d"] is None and row["total"] == pytest.approx(sum(times.ms.values()), abs=1e-2)


def test_timed_inputs_are_the_untimed_inputs(tiny, files):
    runner = OnnxRuntimeRunner.from_artifact(tiny.onnx)
    times = StageTimes()
    timed = load_inputs(runner, files[0], num_clips=2, stage=times.stage)
    np.testing.assert_array_equal(timed["input"], load_inputs(runner, files[0], num_clips=2)["input"])
    assert set(times.ms) == {"decode", "sampling", "preprocess"}


def test_summary_percentiles_and_shares():
    items = []
    for decode, infer in ((1.0, 3.0), (2.0, 6.0), (3.0, 9.0)):
        t = StageTimes()
        t.add("decode", decode)
        t.add("inference", infer)
        t.skip("h2d", "CPU runner: no host-to-device copy")
        items.append(t)
    s = summarise(items)
    assert s["items"] == 3 and list(s["stages_ms"]) == list(STAGES)
    assert s["stages_ms"]["decode"] == {"p50": 2.0, "p99": pytest.approx(2.98), "share": 0.25}
    assert s["stages_ms"]["inference"]["share"] == 0.75 and s["total_ms"]["p50"] == 8.0
    assert s["stages_ms"]["h2d"]["p50"] is None and s["stages_ms"]["h2d"]["note"].startswith("CPU runner")
    assert s["stages_ms"]["post"]["note"] == "not measured"
    rows = {r[0]: r for r in stage_rows(s)}
    assert rows["host-to-device copy"][1:4] == ("n/a", "n/a", "n/a") and rows["decode"][3] == "25.0"
    with pytest.raises(Exception, match="unknown stage"):
        StageTimes().add("decoding", 1.0)


def test_predict_timings_command(tiny, files, tmp_path, capsys, monkeypatch):
    out = tmp_path / "pred.json"
    code, stdout, err = run_cli(["predict", *files, "--artifact", tiny.onnx, "--threads", "1", "--timings",
                                 "--json", out], capsys, monkeypatch)
    assert code == 0, err
    for label in ("decode", "sampling", "preprocessing", "host-to-device copy", "inference", "post-processing"):
        assert label in stdout
    assert "n/a" in stdout and files[0].name in stdout
    data = json.loads(out.read_text())
    timings = data["timings"]
    assert timings["items"] == len(files) and len(timings["per_video"]) == len(files)
    assert timings["stages_ms"]["decode"]["p50"] > 0 and timings["stages_ms"]["h2d"]["p50"] is None
    assert [p["path"] for p in data["predictions"]] == [str(f) for f in files]


def test_bench_videos_reports_the_split_beside_the_model_numbers(tiny, videos, tmp_path, capsys, monkeypatch):
    out = tmp_path / "bench.json"
    folder = files_dir = sorted((videos / "videos").iterdir())[0]  # one class folder: two videos
    code, stdout, err = run_cli(["bench", tiny.onnx, "--iterations", "2", "--rounds", "2", "--warmup", "1",
                                 "--threads", "1", "--no-memory", "--no-flops", "--videos", folder, "--json", out],
                                capsys, monkeypatch)
    assert code == 0, err
    assert "Benchmark" in stdout and "host-to-device copy" in stdout and "preprocessing" in stdout
    result = json.loads(out.read_text())
    assert result["results"][0]["latency_ms"]["p50"] > 0  # the model-only numbers are still there
    (split,) = result["video_stages"]
    assert split["videos"] == len(list(files_dir.glob("*.mp4"))) == 2 and split["rounds"] == 2
    assert split["items"] == 4 and split["stages_ms"]["inference"]["p50"] > 0
    shares = [s["share"] for s in split["stages_ms"].values() if s["share"] is not None]
    assert len(shares) == 5 and sum(shares) == pytest.approx(1.0, abs=1e-3)


def test_bench_videos_without_videos_is_one_line(tiny, tmp_path, capsys, monkeypatch):
    from cli_runner import one_line_error

    empty = tmp_path / "none"
    empty.mkdir()
    line = one_line_error(*run_cli(["bench", tiny.onnx, "--no-memory", "--videos", empty], capsys,
                                   monkeypatch)[::2])
    assert "no video files" in line


def test_preprocessing_runs_on_one_torch_thread_beside_an_onnx_runner(tiny, files, monkeypatch):
    """predict's crop/resize/normalise use one PyTorch thread with an ONNX runner (the same values, without
    parallel regions that wait on a busy machine), and the caller's thread count is restored."""
    import torch

    import aarm.data.clips as clips
    from runtime.predict import predict_videos

    seen = []
    real = clips.eval_transform

    def recording(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - eval_transform's signature
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(clips, "eval_transform", recording)
    torch.set_num_threads(2)
    runner = OnnxRuntimeRunner.from_artifact(tiny.onnx, threads=1)
    predict_videos(runner, files, workers=1)
    steps = []
    predict_videos_timed(runner, files, progress=lambda *step: steps.append(step))
    assert seen == [1] * (2 * len(files)) and torch.get_num_threads() == 2
    assert steps == [("predicting", i + 1, len(files)) for i in range(len(files))]  # one video at a time


def test_video_bench_settles_at_each_switch_like_the_model_bench(tiny, files, monkeypatch):
    """Two runners, three rounds (a b | b a | a b): four turns start with a switch, and each gets the bench's
    idle time and untimed videos (`runtime.bench.switch_to`) before its timed ones; the two turns that continue
    the runner of the turn before do not."""
    import runtime.timings as timings

    settled: list[str] = []
    real = timings.switch_to

    def recording(call: functools.partial) -> float:
        settled.append(call.args[0].name)
        return real(call)

    monkeypatch.setattr(timings, "switch_to", recording)
    runners = [OnnxRuntimeRunner.from_artifact(tiny.onnx, threads=1, name=n) for n in ("a", "b")]
    out = timings.video_stage_bench(runners, files[:1], rounds=3, warmup=0)
    assert settled == ["a", "b", "a", "b"] and [s["items"] for s in out] == [3, 3]

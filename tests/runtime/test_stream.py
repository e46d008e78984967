"""Streaming: windows equal offline prediction on the same frames, a paced slow model drops windows with a
bounded lag, the JSON lines, and one-line errors for bad sources and windows."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from cli_runner import run_cli
from sleepy import SlowedRunner

from aarm.data.clips import load_video_input
from aarm.data.preprocessing import Preprocessing
from aarm.data.synthetic import synthesize
from aarm.data.video import read_frames
from runtime.backends import open_runner
from runtime.predict import predict_video
from runtime.stream import VideoStream, parse_span, window_input
from runtime.timings import STAGES

FPS = 25


def write_lossless(path: Path, frames: np.ndarray, fps: int = FPS) -> Path:
    """uint8 (T, H, W, 3) RGB frames as FFV1 (bgr0) in Matroska: decodes back to exactly these frames."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("ffv1", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "bgr0"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A 40-frame 32x32 synthetic clip (25 fps), losslessly encoded, and its frames."""
    frames = synthesize(1, 0, 0, seed=0, frames=40, size=32, trails=True)
    path = write_lossless(tmp_path_factory.mktemp("stream") / "clip.mkv", frames)
    assert np.array_equal(read_frames(path, range(40)), frames)
    return path, frames


@pytest.mark.parametrize("prep", [
    Preprocessing(layout="NKCHW", size=24, scale_size=28, segments=3),
    Preprocessing(layout="NCTHW", size=24, scale_size=28, segments=1, frames=4, stride=2),
], ids=["tsn", "clip3d"])
def test_window_input_is_the_offline_input_of_a_file_of_those_frames(prep, clip, tmp_path):
    _, frames = clip
    part = frames[5:19]  # 14 frames: a sampling off by one frame picks other frames in both layouts
    offline = load_video_input(write_lossless(tmp_path / "part.mkv", part), prep).numpy()
    got = window_input(part, prep)
    assert got.shape == offline.shape == prep.input_shape(1)
    np.testing.assert_array_equal(got, offline)


def test_stream_equals_predict_on_each_windows_frames(tiny, clip, tmp_path):
    path, frames = clip
    runner = open_runner(tiny.onnx, threads=1)
    k = len(tiny.classes)
    with runner, VideoStream(runner, str(path), window=parse_span("8f"), stride=parse_span("4f"), top_k=k) as s:
        results = list(s)
        assert [r.window for r in results] == list(range(9))  # (40 - 8) / 4 + 1 windows, none dropped
        assert s.summary.dropped == 0 and s.summary.frames == 40
        for r in results[::4]:
            assert (r.first_frame, r.last_frame) == (4 * r.window, 4 * r.window + 7)
            assert r.start_s == pytest.approx(r.first_frame / FPS)
            assert r.end_s == pytest.approx((r.last_frame + 1) / FPS)
            cut = write_lossless(tmp_path / f"w{r.window}.mkv", frames[r.first_frame:r.last_frame + 1])
            offline = predict_video(runner, cut, top_k=k)
            assert r.labels == offline.labels
            np.testing.assert_allclose(r.scores, offline.scores, rtol=0, atol=1e-6)


def test_smoothing_is_the_mean_of_the_last_n_windows_softmax(tiny, clip):
    path, _ = clip
    runner = open_runner(tiny.onnx, threads=1)
    k = len(tiny.classes)
    with runner, VideoStream(runner, str(path), window=parse_span("8f"), stride=parse_span("4f"), top_k=k,
                             smooth=3) as s:
        results = list(s)
    raw = np.stack([r.raw for r in results])
    assert not np.allclose(raw[0], raw[-1], atol=1e-4)  # windows differ, so smoothing has something to do
    for i, r in enumerate(results):
        want = raw[max(0, i - 2):i + 1].mean(axis=0)
        np.testing.assert_allclose(r.probs, want, rtol=0, atol=1e-12)
        np.testing.assert_allclose(r.scores, want[r.indices], rtol=0, atol=1e-12)
        assert r.indices == list(np.argsort(-want, kind="stable"))


def test_file_without_realtime_classifies_every_window_of_a_slow_model(tiny, clip):
    path, _ = clip
    slow = SlowedRunner(open_runner(tiny.onnx, threads=1), 0.03)
    with slow, VideoStream(slow, str(path), window=parse_span("8f"), stride=parse_span("8f")) as s:
        assert [r.window for r in s] == [0, 1, 2, 3, 4] and s.summary.dropped == 0


def test_paced_stream_with_a_slow_model_drops_windows_and_lag_stays_bounded(tiny, tmp_path):
    frames = synthesize(2, 0, 0, seed=1, frames=50, size=32, trails=True)  # 2 s at 25 fps
    path = write_lossless(tmp_path / "paced.mkv", frames)
    slow = SlowedRunner(open_runner(tiny.onnx, threads=1), 0.25)  # a window every 80 ms, the model takes 250+
    with slow, VideoStream(slow, str(path), window=parse_span("4f"), stride=parse_span("2f"), realtime=True) as s:
        assert s.info.live
        results = list(s)
        summary = s.summary.to_json()
    total = (50 - 4) // 2 + 1
    assert summary["dropped"] > 0 and summary["windows"] + summary["dropped"] == total
    assert sum(r.dropped for r in results) == summary["dropped"]
    seen = sorted([r.window for r in results] + summary["dropped_windows"])
    assert seen == list(range(total))
    # A stream that drifted would end about (total * 0.25 s - 2 s) = 4 s behind; dropping keeps each lag within
    # the wait for the window in progress plus its own processing.
    work = max(r.latency_ms["preprocess"] + r.latency_ms["inference"] + r.latency_ms["post"] for r in results)
    assert max(r.lag_ms for r in results) <= 2 * work + 300, [r.lag_ms for r in results]
    assert summary["wall_s"] < 2.0 + 2 * work / 1e3 + 0.5


def test_json_lines(tiny, clip, tmp_path, capsys, monkeypatch):
    path, _ = clip
    out = tmp_path / "s.jsonl"
    args = ["stream", str(path), "--artifact", str(tiny.onnx), "--window", "0.4s", "--stride", "0.2s",
            "--top-k", "2", "--smooth", "3", "--threads", "1", "--jsonl", str(out)]
    code, stdout, err = run_cli(args, capsys, monkeypatch)
    assert code == 0, err
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    head, windows, summary = lines[0], lines[1:-1], lines[-1]
    assert head["kind"] == "stream" and head["window_frames"] == 10 and head["stride_frames"] == 5
    assert head["drop_policy"] == "lossless" and "last 3 classified windows" in head["smoothing"]
    assert head["sampling"] == "TSN, 2 segments" and head["source"]["fps"] == FPS
    assert [w["window"] for w in windows] == list(range(7))
    for w in windows:
        assert set(w) == {"kind", "window", "start_s", "end_s", "first_frame", "last_frame", "top_k", "dropped",
                          "lag_ms", "latency_ms"}
        assert w["kind"] == "window" and w["dropped"] == 0 and w["last_frame"] - w["first_frame"] == 9
        # The stages of predict --timings and bench --videos; no host-to-device copy on a CPU runner.
        assert set(w["latency_ms"]) == {*STAGES, "total"} and w["latency_ms"]["h2d"] is None
        measured = [s for s in STAGES if s != "h2d"]
        assert all(w["latency_ms"][s] >= 0 for s in measured)
        assert w["latency_ms"]["total"] == pytest.approx(sum(w["latency_ms"][s] for s in measured), abs=1e-2)
        assert len(w["top_k"]) == 2 and w["top_k"][0]["score"] >= w["top_k"][1]["score"]
        assert all(t["label"] == tiny.classes[t["index"]] for t in w["top_k"])
    assert summary["kind"] == "summary" and summary["windows"] == 7 and summary["dropped"] == 0
    assert summary["frames"] == 40 and list(summary["stages_ms"]) == list(STAGES)
    h2d = summary["stages_ms"]["h2d"]
    assert h2d["p50"] is None and h2d["share"] is None and "CPU" in h2d["note"]
    shares = [s["share"] for s in summary["stages_ms"].values() if s["share"] is not None]
    assert len(shares) == 5 and sum(shares) == pytest.approx(1.0, abs=1e-3)  # 4 decimals each
    assert "n/a" in stdout and "host-to-device copy" in stdout
    assert "p99" in summary["lag_ms"] and "stage" in stdout  # the closing table
    before = out.read_bytes()
    code, _, err = run_cli(args, capsys, monkeypatch)
    assert code == 1 and "--force" in err and out.read_bytes() == before
    # Without --jsonl, stdout (not a terminal) carries the same lines.
    code, stdout, err = run_cli(args[:-2] + ["--max-windows", "2"], capsys, monkeypatch)
    assert code == 0, err
    kinds = [json.loads(line)["kind"] for line in stdout.splitlines()]
    assert kinds == ["stream", "window", "window", "summary"]


def test_segments_sample_each_window_with_the_chosen_k(tiny, clip, tmp_path, capsys, monkeypatch):
    """stream --segments K samples every window with K segments on the same dynamic-K graph (the header says
    so), and a K outside the graph's recorded range is a one-line error before the source opens."""
    path, _ = clip
    out = tmp_path / "s.jsonl"
    args = ["stream", str(path), "--artifact", str(tiny.onnx), "--window", "0.4s", "--stride", "0.4s",
            "--threads", "1", "--max-windows", "2", "--segments", "4", "--jsonl", str(out)]
    code, _, err = run_cli(args, capsys, monkeypatch)
    assert code == 0, err
    assert json.loads(out.read_text().splitlines()[0])["sampling"] == "TSN, 4 segments"
    code, _, err = run_cli(args[:-4] + ["--segments", "1000"], capsys, monkeypatch)
    assert code != 0 and len(err.strip().splitlines()) == 1 and "1000" in err, err


PUBLISHER = """
import sys, time
import av
from aarm.data.synthetic import synthesize

url, fps = sys.argv[1], int(sys.argv[2])
frames = synthesize(1, 0, 0, seed=0, frames=40, size=32, trails=True)
deadline = time.monotonic() + 15
while True:  # retry while the reader starts listening
    try:
        container = av.open(url, mode="w", format="rtsp", options={"rtsp_transport": "tcp"})
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for packet in stream.encode(av.VideoFrame.from_ndarray(frames[0], format="rgb24")):
            container.mux(packet)  # the RTSP session starts with the first packet
        break
    except ConnectionRefusedError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.1)
with container:
    for frame in frames[1:]:
        time.sleep(1 / fps)
        for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
"""


def test_rtsp_stream_pushed_to_a_local_listener(tiny, clip):
    """A real RTSP session on the loopback interface: a PyAV process publishes the clip (MPEG-4 at 25 fps),
    the stream listens (--listen). A separate process, as ffmpeg would be: in one process PyAV's blocking
    RTSP handshake on both ends can hold the interpreter lock the other end needs."""
    url = f"rtsp://127.0.0.1:{_closed_port()}/live"
    publisher = subprocess.Popen([sys.executable, "-c", PUBLISHER, url, str(FPS)], stderr=subprocess.PIPE,
                                 text=True)
    try:
        runner = open_runner(tiny.onnx, threads=1)
        with runner, VideoStream(runner, url, window=parse_span("8f"), stride=parse_span("8f"), listen=True,
                                 timeout=15) as s:
            assert s.info.kind == "url" and s.info.live and s.info.fps == FPS
            results = list(s)
        assert publisher.wait(15) == 0, publisher.stderr.read()
    finally:
        publisher.kill()
        publisher.wait()
    assert s.summary.frames == 40 and s.summary.windows >= 1 and s.summary.windows + s.summary.dropped == 5
    assert all(r.labels[0] in tiny.classes and r.last_frame - r.first_frame == 7 for r in results)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the socket is


@pytest.mark.parametrize("case", ["missing", "rtsp", "short", "span"])
def test_bad_input_is_one_line_error(case, tiny, clip, tmp_path, capsys, monkeypatch):
    path, _ = clip
    source, window, want = {
        "missing": (str(tmp_path / "nope.mp4"), "8f", "not found"),
        "rtsp": (f"rtsp://127.0.0.1:{_closed_port()}/live", "8f", "cannot open rtsp://127.0.0.1"),
        "short": (str(path), "1f", "a window needs at least 2 frames"),
        "span": (str(path), "2x", "--window '2x': expected seconds like 2s or frames like 64f"),
    }[case]
    code, _, err = run_cli(["stream", source, "--artifact", str(tiny.onnx), "--window", window, "--stride", "1f",
                            "--timeout", "5"], capsys, monkeypatch)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: ") and want in lines[0], err

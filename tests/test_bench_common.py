"""The benchmarks' interleaving: every runner once per round after the bench's untimed switch calls, the order
rotated, and an onnxruntime session made anew for every round (FreshSession), so a session's own memory layout
cannot bias one variant for a whole run."""

import time

import numpy as np
from onnx import TensorProto, helper

import runtime.bench as bench
from benchmarks.common import FreshSession, interleaved_rounds


class Recorder:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def __call__(self) -> None:
        self.log.append(f"run {self.name}")

    def renew(self) -> None:
        self.log.append(f"renew {self.name}")


def test_rounds_rotate_and_renew_before_every_turn_after_the_first(monkeypatch):
    monkeypatch.setattr(bench, "SWITCH_WARM_S", 0.0)  # one untimed call per turn, so the log is exact
    log: list[str] = []
    times = interleaved_rounds({"a": Recorder("a", log), "b": Recorder("b", log)}, 3, warmup=1)
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}
    assert log == ["run a", "run b",                                  # warm-up
                   "run a", "run a", "run b", "run b",                # round 1: untimed + timed, no renewal
                   "renew b", "run b", "run b", "renew a", "run a", "run a",   # round 2 starts with b
                   "renew a", "run a", "run a", "renew b", "run b", "run b"]


def test_each_turn_warms_for_the_benchs_warm_time_however_short_the_calls(monkeypatch):
    """As in `bench`: calls right after a switch run slow for a while, so the untimed calls of a turn go on for
    SWITCH_WARM_S however short the calls; then the two timed ones. Turns are told apart by the idle before
    each (SWITCH_IDLE_S, 50 ms)."""
    monkeypatch.setattr(bench, "SWITCH_WARM_S", 0.03)
    starts: list[float] = []

    def five_ms() -> None:
        starts.append(time.perf_counter())
        time.sleep(0.005)

    times = interleaved_rounds({"a": five_ms}, 2, warmup=1, calls=2)
    assert [len(r) for r in times["a"]] == [2, 2] and all(4.5 < t < 50 for r in times["a"] for t in r)
    turns: list[list[float]] = [[starts[0]]]
    for before, start in zip(starts, starts[1:], strict=False):
        if start - before > 0.04:  # the idle before a turn
            turns.append([])
        turns[-1].append(start)
    assert len(turns) == 3, turns  # the warm-up call, then two turns
    for turn in turns[1:]:
        assert turn[-2] - turn[0] >= 0.03, turn  # the first timed call starts after the warm time


def test_fresh_session_runs_a_new_session_after_renew(monkeypatch):
    import onnxruntime as ort

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    model = helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    made = []

    def make():
        made.append(ort.InferenceSession(model, providers=["CPUExecutionProvider"]))
        return made[-1]

    x = np.array([[-1, 2, -3], [4, -5, 6]], np.float32)
    runs = []
    real = ort.InferenceSession.run

    def counted(self, *args, **kwargs):
        runs.append(self)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ort.InferenceSession, "run", counted)
    runner = FreshSession(make, x)
    assert runs == [made[0], made[0]], "a new session runs twice before it is timed"
    np.testing.assert_array_equal(runner()[0], np.maximum(x, 0))
    first = runner.session
    runner.renew()
    assert runner.session is not first and runner.session is made[-1] and len(made) == 2
    np.testing.assert_array_equal(runner()[0], np.maximum(x, 0))

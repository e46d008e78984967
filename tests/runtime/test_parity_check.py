"""Parity: a faithful artifact passes, altered weights fail it, a tampered file is refused."""

import json
import re
import shutil

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from runtime_artifacts import derive_artifact
from typer.testing import CliRunner

from aarm.errors import ConfigError, DataError
from export.cli import app
from export.commands.parity import metric_rows
from runtime.artifact import sidecar_path
from runtime.backends import open_runner
from runtime.compare import Failure, judge, judge_sets, score_metrics
from runtime.errors import ArtifactError
from runtime.parity import (
    ParityFailure,
    Tolerances,
    compare,
    default_tolerances,
    labelled_batches,
)


@pytest.fixture(scope="module")
def altered(tiny, tmp_path_factory):
    """tiny.onnx with one convolution's weights perturbed by 5%, and a valid sidecar for it."""
    model = onnx.load(str(tiny.onnx))
    conv_weights = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    init = next(i for i in model.graph.initializer if i.name in conv_weights and len(i.dims) == 4)
    w = numpy_helper.to_array(init)
    init.CopyFrom(numpy_helper.from_array(w * 1.05, init.name))
    return derive_artifact(tiny.onnx, model, tmp_path_factory.mktemp("altered") / "model.onnx")


def test_score_metrics_of_known_scores():
    ref = np.array([[1.0, 2.0, 3.0], [3.0, 1.0, 0.0]])
    m = score_metrics(ref + [[0.0, 0.0, 0.3], [0.0, 0.0, 0.0]], ref)
    assert m["max_abs"] == pytest.approx(0.3) and m["max_rel"] == pytest.approx(0.1)
    assert m["top1"] == 1.0 and m["min_cosine"] < 1.0
    assert m["top5"] is None  # 3 classes: the top-5 set is every class, agreement would be 100 % by construction
    m = score_metrics(ref[:, ::-1].copy(), ref)
    assert m["top1"] == 0.0 and m["top5"] is None  # the same three classes, reversed
    seven = np.arange(14.0).reshape(2, 7)
    swapped = seven.copy()
    swapped[0, [1, 6]] = swapped[0, [6, 1]]  # clip 0: class 1 enters the top 5, class 6 leaves it (top-1 too)
    m7 = score_metrics(swapped, seven)
    assert m7["top5"] == 0.5 and m7["top1"] == 0.5
    # tied reference scores (a trained model's noise scores: six classes at exactly 0): any order among the
    # tied classes is a valid top-k, so an artifact 1e-7 off that re-orders them agrees; a real flip does not
    tied = np.array([[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -36.0, -138.0]] * 2)
    reordered = tied + np.array([[0, 1e-7, 0, 0, 0, 2e-7, 0, 0], [0, 0, 0, 0, 0, 0, 37.0, 0]])
    mt = score_metrics(reordered, tied)
    assert mt["top1"] == 0.5 and mt["top5"] == 0.5  # clip 0 agrees; clip 1's class 6 jumped to the top
    # near-ties: scores 1e-6 apart at a largest |score| of 20 (float32 rounding of a trained model's gated
    # scores) are tied; 1e-3 apart they are not
    near = np.array([[20.0, 3.0, 2.0, 1.0, 2e-6, 1e-6, 0.0, -5.0]] * 2)
    swapped = near.copy()
    swapped[0, [4, 5]] = near[0, [5, 4]]
    swapped[1, 4], swapped[1, 5] = 1e-3, 2e-3
    near[1, 4], near[1, 5] = 2e-3, 1e-3
    mn = score_metrics(swapped, near)
    assert mn["top5"] == 0.5 and mn["top1"] == 1.0
    fails = judge(m, Tolerances(min_top1=0.5, max_abs=10.0), "random")
    assert fails == [Failure("top1", 0.0, 0.5, "random", "min")] and str(fails[0]) == "random: top1 0 < 0.5"
    # near-1 cosine limits print the 1 - cosine too: "min_cosine 1 < 1" said nothing
    tight = Failure("min_cosine", 0.9999962, 0.9999985, "data", "min")
    assert str(tight) == "data: min_cosine 0.999996 < 0.999999 (1 - cosine 3.8e-06 > 1.5e-06)"


def test_exported_graph_matches_its_checkpoint(tiny):
    result = compare(open_runner(tiny.onnx, threads=1), open_runner(tiny.checkpoint), samples=12, batch=6)
    assert result, result.failures
    m = result.metrics["random"]
    assert m["samples"] == 12 and m["max_abs"] < 1e-4 and m["top1"] == 1.0 and m["min_cosine"] > 0.99999
    d = result.to_dict()
    assert d["kind"] == "parity" and d["passed"]
    assert d["tolerances"] == default_tolerances("fp32", "resnet18").to_dict()  # the tiny model is a ResNet-18


def test_altered_weights_fail_parity(tiny, altered):
    result = compare(open_runner(altered, threads=1), open_runner(tiny.checkpoint), samples=8, batch=8)
    assert not result
    assert any(f.startswith("random: max_rel") for f in result.failures)
    assert any(f.startswith("random: min_cosine") for f in result.failures)


def test_parity_command_fails_on_altered_weights_and_passes_with_loose_tolerances(tiny, altered, tmp_path):
    out = tmp_path / "parity.json"
    base = ["parity", str(altered), "--reference", str(tiny.checkpoint), "--samples", "8", "--threads", "1"]
    res = CliRunner().invoke(app, [*base, "--json", str(out)])
    assert isinstance(res.exception, ParityFailure), res.output
    assert "max_rel" in str(res.exception)
    data = json.loads(out.read_text())
    assert data["kind"] == "parity" and not data["passed"] and data["failures"]
    res = CliRunner().invoke(app, [*base, "--atol", "1e3", "--rtol", "1e3", "--min-cosine", "-1", "--min-top1", "0",
                                   "--min-top5", "0"])
    assert res.exit_code == 0, res.output


def test_parity_command_refuses_a_tampered_artifact(tiny, tmp_path):
    bad = tmp_path / "model.onnx"
    model = onnx.load(str(tiny.onnx))
    model.graph.initializer[0].raw_data = bytes(len(model.graph.initializer[0].raw_data))
    onnx.save(model, str(bad))
    sidecar_path(bad).write_text(sidecar_path(tiny.onnx).read_text())  # the original's sidecar, old sha256
    res = CliRunner().invoke(app, ["parity", str(bad), "--reference", str(tiny.checkpoint), "--samples", "4"])
    assert isinstance(res.exception, ArtifactError) and "sha256" in str(res.exception)


def test_parity_on_labelled_clips(tiny, videos, tmp_path):
    out = tmp_path / "parity.json"
    res = CliRunner().invoke(app, ["parity", str(tiny.onnx), "--reference", str(tiny.checkpoint), "--data",
                                   str(videos), "--samples", "4", "--batch", "3", "--threads", "1", "--json", str(out)])
    assert res.exit_code == 0, res.output
    m = json.loads(out.read_text())["metrics"]
    assert m["random"]["samples"] == 4 and m["data"]["samples"] == 4
    assert m["data"]["accuracy"] == m["data"]["reference_accuracy"] and m["data"]["accuracy_drop"] == 0.0
    with pytest.raises(DataError, match="classes are not the model's"):
        next(iter(labelled_batches(str(videos), tiny.preprocessing, ["input"], classes=["a", "b"])))


def test_int8_parity_is_judged_on_real_clips_when_it_has_them():
    noisy = {"samples": 16, "max_rel": 1.3, "min_cosine": -0.5, "mean_cosine": 0.6, "top1": 0.0, "top5": 0.5}
    close = {"samples": 96, "max_rel": 0.05, "min_cosine": 0.948, "mean_cosine": 0.993, "top1": 1.0, "top5": 1.0,
             "accuracy_drop": 0.0}  # the demo's INT8 graph on its held-out clips
    int8, fp32 = default_tolerances("int8"), default_tolerances("fp32")

    def failures(metrics: dict, tol: Tolerances) -> list[str]:
        return [str(f) for f in judge_sets(metrics, tol)]

    assert failures({"random": noisy, "data": close}, int8) == []
    assert failures({"random": noisy}, int8)  # nothing else to judge by
    assert failures({"random": noisy, "data": close}, fp32)[0].startswith("random: ")
    tie = {"samples": 16, "max_rel": 0.002, "min_cosine": 1.0, "top1": 0.9375, "top5": 1.0}  # 1 of 16 flipped
    assert failures({"random": tie, "data": {**close, "min_cosine": 1.0, "max_rel": 4e-4}},
                    default_tolerances("fp16")) == []
    assert failures({"random": close, "data": noisy}, int8)[0].startswith("data: ")
    assert failures({"data": {**close, "mean_cosine": 0.97}}, int8) == ["data: mean_cosine 0.97 < 0.98"]
    # NaN or Inf fails even in a set that is only shown, naming the side, the count and the set
    assert failures({"random": {**noisy, "artifact_nonfinite": 3}, "data": close}, int8) == [
        "random: artifact_nonfinite 3 > 0 (NaN/Inf values in the artifact's scores)"]


def test_nan_or_inf_scores_fail_and_never_count_as_agreement():
    ref = np.array([[1.0, 2.0, 3.0], [3.0, 1.0, 0.0], [0.5, 0.2, 0.1]])
    m = score_metrics(np.full_like(ref, np.nan), ref)  # every comparison with NaN is False: it must not pass
    assert m["artifact_nonfinite"] == 9 and m["samples"] == 0 and m["max_abs"] is None and m["top1"] is None
    fails = judge_sets({"random": m}, default_tolerances("fp32"))
    assert [f.metric for f in fails] == ["artifact_nonfinite"] and fails[0].measured == 9
    ref_inf = ref.copy()
    ref_inf[1, 2] = np.inf
    m = score_metrics(ref, ref_inf)
    assert m["reference_nonfinite"] == 1 and m["samples"] == 2 and m["max_abs"] == 0.0
    assert str(judge(m, default_tolerances("fp16"), "data")[0]).startswith("data: reference_nonfinite 1 > 0")
    m["max_rel"] = float("nan")  # a metric that measured NaN fails its limit
    assert "max_rel" in [f.metric for f in judge(m, default_tolerances("fp16"), "data")]


@pytest.mark.parametrize("bad", [{"max_abs": float("nan")}, {"max_rel": 0.0}, {"max_rel": -1e-3},
                                 {"max_abs": float("inf")}, {"min_top1": 1.5}, {"min_cosine": float("nan")},
                                 {"max_accuracy_drop": -0.01}])
def test_non_finite_or_non_positive_tolerances_are_refused(bad):
    with pytest.raises(ConfigError, match=f"tolerance `{next(iter(bad))}` "):  # the parameter, not a flag
        Tolerances(**bad)
    with pytest.raises(ConfigError):
        default_tolerances("fp32").override(**bad)


def test_a_check_that_compares_nothing_is_refused(tiny):
    artifact, reference = open_runner(tiny.onnx, threads=1), open_runner(tiny.checkpoint)
    with pytest.raises(ConfigError, match="compare nothing"):
        compare(artifact, reference, samples=0)
    with pytest.raises(ConfigError, match="batch must be >= 1"):
        compare(artifact, reference, samples=4, batch=0)
    with pytest.raises(ConfigError, match="no tolerance is set"):
        compare(artifact, reference, samples=2, tolerances=Tolerances())
    with pytest.raises(ConfigError, match="no clips to compare"):
        compare(artifact, reference, samples=0, data=iter([]))
    with pytest.raises(ConfigError, match="nothing was compared"):
        judge_sets({}, default_tolerances("fp32"))


@pytest.mark.parametrize(("args", "message"), [
    (["--batch", "0"], "--batch must be >= 1, got 0"), (["--batch", "-1"], "--batch must be >= 1, got -1"),
    (["--samples", "0"], "--samples 0 without --data compares nothing"),
    (["--samples", "-2"], "--samples must be >= 0"),
    (["--atol", "nan"], r"tolerance --atol must be a finite number > 0, got nan"),
    (["--rtol", "0"], r"tolerance --rtol must be a finite number > 0"),
    (["--rtol", "-1e-3"], r"tolerance --rtol "), (["--atol", "inf"], r"tolerance --atol "),
    (["--min-cosine", "2"], r"tolerance --min-cosine must be a finite number >= -1 and <= 1, got 2"),
])
def test_parity_command_refuses_bad_options_in_one_line(tiny, args, message):
    res = CliRunner().invoke(app, ["parity", str(tiny.onnx), "--reference", str(tiny.checkpoint), *args])
    assert isinstance(res.exception, ConfigError), res.output
    assert len(str(res.exception).splitlines()) == 1
    assert re.search(message, str(res.exception)), str(res.exception)


def test_parity_table_names_the_input_set_each_limit_was_applied_to(tiny, videos):
    artifact, reference = open_runner(tiny.onnx, threads=1), open_runner(tiny.checkpoint)
    data = labelled_batches(str(videos), tiny.preprocessing, ["input"], classes=tiny.classes, samples=4, batch=4)
    # a check that judges real clips alone, the way INT8's and FP16's defaults do
    tol = Tolerances(max_rel=0.2, min_top1=0.5, gate_random=False)
    heard = []
    assert len(data) == 4  # the clips are known before they are decoded: progress has its total
    result = compare(artifact, reference, samples=4, batch=4, data=data, tolerances=tol,
                     progress=lambda *step: heard.append(step))
    assert heard == [("comparing", 4, 8), ("comparing", 8, 8)]  # aarm.progress.Progress: random, then the clips
    assert result and result.judged == {"random": False, "data": True}
    rows = {r[0]: r for r in metric_rows(result)}
    assert rows["max relative error"][1].endswith("(not judged)")  # random: shown beside the limit, not judged
    assert "(not judged)" not in rows["max relative error"][2]
    assert rows["max relative error"][3:] == ("<= 0.2", "data", "given")
    assert rows["max abs error"][3:] == ("-", "-", "-")  # no limit: nothing to apply
    assert rows["NaN/Inf scores (artifact/reference)"][1:] == ("0/0", "0/0", "= 0", "random, data", "always")
    d = result.to_dict()
    assert d["judged"] == {"random": False, "data": True} and d["violations"] == []


def test_an_artifact_whose_scores_are_all_nan_fails_parity(tiny, tmp_path):
    model = onnx.load(str(tiny.onnx))
    out = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = ["scores_before_nan" if o == out else o for o in node.output]
    model.graph.initializer.append(numpy_helper.from_array(np.array(np.nan, dtype=np.float32), "nan_constant"))
    model.graph.node.append(onnx.helper.make_node("Add", ["scores_before_nan", "nan_constant"], [out]))
    path = derive_artifact(tiny.onnx, model, tmp_path / "model.onnx")
    result = compare(open_runner(path, threads=1), open_runner(tiny.checkpoint), samples=4, batch=4)
    assert not result
    assert result.failures == ["random: artifact_nonfinite 20 > 0 (NaN/Inf values in the artifact's scores)"]


def test_labelled_parity_reads_videos_and_split_files_from_where_the_user_unpacked_them(tiny, videos, tmp_path):
    """parity --videos/--annotations, as train and evaluate take them: a dataset whose videos and split files sit
    outside the root it names."""
    moved_videos, moved_splits = tmp_path / "clips", tmp_path / "splits"
    shutil.copytree(videos / "videos", moved_videos)
    shutil.copytree(videos / "ucfTrainTestlist", moved_splits)
    empty = tmp_path / "root"
    empty.mkdir()
    with pytest.raises(DataError):
        next(iter(labelled_batches(str(empty), tiny.preprocessing, ["input"], classes=tiny.classes)))
    feed, labels = next(iter(labelled_batches(
        str(empty), tiny.preprocessing, ["input"], classes=tiny.classes, samples=4, batch=4,
        videos=str(moved_videos), annotations=str(moved_splits))))
    assert feed["input"].shape[0] == 4 and labels.shape == (4,)

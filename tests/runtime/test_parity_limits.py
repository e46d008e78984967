"""Default parity limits per (precision, backbone): the shipped table is what the stated rule computes from the
zoo's measurements, it passes every correct measured artifact and fails every tampered FP32 one, and parity
picks it for the artifact's backbone and says where each limit came from."""

import json
from pathlib import Path

import pytest
from cli_runner import run_cli

from export.commands.parity import metric_rows
from runtime.backends import open_runner
from runtime.compare import judge
from runtime.parity import DEFAULT_TOLERANCES, compare, default_tolerances
from runtime.parity_limits import MARGIN, TABLE, TUNED, ceil2, derive, looser

MEASURED = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "parity_limits.json"


@pytest.fixture(scope="module")
def measured() -> dict:
    return json.loads(MEASURED.read_text())


def rows(measured: dict, key: str = ""):
    """(backbone, precision, input set, metrics) of every artifact measured; key "_tampered": the tampered
    copies."""
    for r in measured["results"]:
        for artifact in r["artifacts"].values():
            for name in ("random", "clips"):
                if f"{name}{key}" in artifact:
                    yield r["model"], artifact["precision"], name, artifact[f"{name}{key}"]


def test_ceil2_rounds_up_to_two_significant_digits():
    assert ceil2(2.705e-05) == 2.8e-05 and ceil2(3.5e-10) == 3.5e-10 and ceil2(9.91e-3) == 1.0e-2


def test_shipped_table_is_what_the_rule_computes_from_the_measurements(measured):
    assert derive(measured, DEFAULT_TOLERANCES) == TABLE
    assert MARGIN == 10.0
    backbones = {r["model"] for r in measured["results"]}
    for precision in ("fp32", "fp16"):
        assert set(TABLE[precision]) == backbones  # every measured backbone has its limits
        general = DEFAULT_TOLERANCES[precision]
        for backbone, limits in TABLE[precision].items():
            assert set(limits) <= set(TUNED) and {"max_rel", "min_cosine"} <= set(limits)
            tol = default_tolerances(precision, backbone)
            # the fields not in the table are the general default's; looser ones are listed as such
            assert {k: v for k, v in tol.to_dict().items() if k not in limits} == \
                   {k: v for k, v in general.to_dict().items() if k not in limits}
            loose = {f for f in limits if getattr(general, f) is not None and (
                limits[f] > getattr(general, f) if f == "max_rel" else limits[f] < getattr(general, f))}
            assert loose == set(looser(general, limits)), (precision, backbone)
            assert all("looser than the general" in tol.source(f) for f in loose)
    assert DEFAULT_TOLERANCES["fp32"].max_abs is None  # score units: max_rel judges the error to scale


def test_every_correct_artifact_passes_its_backbone_limits_and_every_tampered_fp32_one_fails(measured):
    correct = list(rows(measured))
    assert len(correct) > 60
    for backbone, precision, name, m in correct:
        failed = judge(m, default_tolerances(precision, backbone), name)
        assert not failed, (backbone, precision, name, failed)
    tampered = [(b, n, m) for b, p, n, m in rows(measured, "_tampered") if p == "fp32"]
    assert len(tampered) == sum(1 for _, p, _, _ in correct if p == "fp32")
    for backbone, name, m in tampered:
        failed = {f.metric for f in judge(m, default_tolerances("fp32", backbone), name)}
        assert {"max_rel", "min_cosine"} <= failed, (backbone, name, failed)  # by both error limits
    # the general FP32 limit missed C3D's tamper on RGB (its first conv moves the scores by 3e-5 to 1e-4)
    c3d = [(n, m) for b, n, m in tampered if b == "c3d"]
    assert any(not judge(m, DEFAULT_TOLERANCES["fp32"], n) for n, m in c3d)


def test_the_looser_deep_fp32_limits_still_fail_the_tamper_by_a_wide_margin(measured):
    """Where the rule loosens an FP32 limit (ResNet-50/101/152, rounding grows with depth), the smallest
    tampered error is still several times the limit."""
    loosened = [b for b, limits in TABLE["fp32"].items() if looser(DEFAULT_TOLERANCES["fp32"], limits)]
    assert loosened == ["resnet50", "resnet101", "resnet152"]
    for backbone in loosened:
        limit = TABLE["fp32"][backbone]["max_rel"]
        smallest = min(m["max_rel"] for b, p, _, m in rows(measured, "_tampered") if b == backbone and p == "fp32")
        assert smallest > 5 * limit, (backbone, smallest, limit)


def test_limits_name_their_source_and_fall_back_to_the_general_default():
    tol = default_tolerances("fp32", "resnet18")
    assert tol.max_rel == TABLE["fp32"]["resnet18"]["max_rel"] < DEFAULT_TOLERANCES["fp32"].max_rel
    assert tol.source("max_rel") == "fp32 default for resnet18 (measured table)"
    assert tol.max_abs is None  # not judged by default
    other = default_tolerances("fp32", "no-such-model")
    assert other == DEFAULT_TOLERANCES["fp32"] and other.source("max_rel") == "fp32 general default"
    gpu = default_tolerances("fp32", "resnet18", "cuda:0")  # the table was measured on the CPU
    assert gpu == DEFAULT_TOLERANCES["fp32"] and "measured on CPU" in gpu.source("max_rel")
    deep = default_tolerances("fp32", "resnet152")
    assert deep.max_rel == 0.0057 > DEFAULT_TOLERANCES["fp32"].max_rel and "looser than the general" in deep.source(
        "max_rel")
    assert tol.override(max_rel=1e-3).source("max_rel") == "given"
    assert tol.override({"max_rel": "from the caller"}, max_rel=1e-3).source("max_rel") == "from the caller"


def test_parity_picks_the_backbone_limits_and_reports_their_source(tiny):
    result = compare(open_runner(tiny.onnx, threads=1), open_runner(tiny.checkpoint), samples=4, batch=4)
    assert result, result.failures
    assert result.backbone == "resnet18" and result.tolerances == default_tolerances("fp32", "resnet18")
    d = result.to_dict()
    assert d["tolerances"]["max_rel"] == TABLE["fp32"]["resnet18"]["max_rel"]
    assert d["limit_sources"]["max_rel"] == "fp32 default for resnet18 (measured table)"
    assert d["limit_sources"]["min_top1"] == "fp32 general default"
    table = {r[0]: r for r in metric_rows(result)}
    assert table["max relative error"][-1] == "fp32 default for resnet18 (measured table)"
    assert table["max abs error"][-3:] == ("-", "-", "-")  # shown, not judged


def test_parity_command_says_an_explicit_option_overrides_the_table(tiny, tmp_path, capsys, monkeypatch):
    out = tmp_path / "parity.json"
    code, stdout, err = run_cli(["parity", tiny.onnx, "--reference", tiny.checkpoint, "--samples", "4",
                                 "--threads", "1", "--rtol", "1e-3", "--json", out], capsys, monkeypatch)
    assert code == 0, err
    d = json.loads(out.read_text())
    assert d["tolerances"]["max_rel"] == 1e-3 and d["limit_sources"]["max_rel"] == "--rtol"
    assert d["limit_sources"]["min_cosine"] == "fp32 default for resnet18 (measured table)"
    assert "limit from" in stdout


def test_a_tampered_parent_of_an_fp16_graph_fails_the_parent_check(tiny, tmp_path):
    """The rebuild check proves an FP16 graph is its parent converted; it trusts the parent. A parent changed
    (one channel x 1.05) and re-signed, with the FP16 graph converted from it (so the chain verifies), passes
    at FP16 limits and the rebuild check; the parent compared with PyTorch at FP32 limits fails."""
    from test_parity_tamper import tamper

    from export.fp16 import convert_onnx
    from export.verify import compare_with_rebuild
    from runtime.parity import check_parent

    reference = open_runner(tiny.checkpoint)
    for name, parent in (("good", tiny.onnx), ("bad", tamper(tiny.onnx, tmp_path / "bad" / "model.onnx")[0])):
        fp16 = tmp_path / name / "model.fp16.onnx"
        convert_onnx(parent, fp16)
        result = compare(open_runner(fp16, threads=1), reference, samples=8, batch=8)
        result.add_rebuild(compare_with_rebuild(fp16, samples=8, batch=8, threads=1))
        assert result, (name, result.failures)  # FP16 rounding hides the tamper; the rebuild matches exactly
        check_parent(result, reference, threads=1)
        d = result.to_dict()["parent"]
        assert Path(d["path"]).resolve() == Path(parent).resolve() and d["precision"] == "fp32"
        assert d["limit_sources"]["max_rel"] == "fp32 default for resnet18 (measured table)"
        if name == "good":
            assert result, result.failures
        else:
            assert {f.input_set for f in result.violations} == {"parent"}, result.failures

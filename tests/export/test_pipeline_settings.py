"""A pipeline re-run with other settings stops before replacing the artifacts it made, naming the setting; an
interrupted or unchanged one resumes; --force replaces. Stages here are stand-ins that write small files, so
what is tested is the pipeline's bookkeeping (export.pipeline.run_pipeline), not the stages themselves."""

import hashlib
from pathlib import Path
from typing import Any

import pytest

import export.pipeline as pipeline
from aarm.errors import ConfigError
from export.pipeline import Stage, run_pipeline
from export.pipeline_config import PipelineConfig


def digest(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def fake_stages(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Two stages: `make` writes a.txt from the checkpoint and cfg.calibration_clips; `use` writes b.txt from
    a.txt and cfg.parity_samples. Returns the names of the stages that ran, in order."""
    ran: list[str] = []

    def build(cfg: PipelineConfig, log: Any) -> list[Stage]:
        out, ckpt = Path(cfg.out), Path(cfg.checkpoint)
        a = out / "a.txt"

        def make() -> dict[str, Any]:
            ran.append("make")
            a.write_text(f"{ckpt.read_text()} {cfg.calibration_clips}")
            return {}

        return [Stage("make", [ckpt], {"clips": cfg.calibration_clips}, [a], make)]

    def verify(cfg: PipelineConfig, artifacts: dict[str, Path], log: Any) -> list[Stage]:
        out = Path(cfg.out)
        a, b = out / "a.txt", out / "b.txt"

        def use() -> dict[str, Any]:
            ran.append("use")
            b.write_text(f"{a.read_text()} {cfg.parity_samples}")
            return {}

        return [Stage("use", [a], {"samples": cfg.parity_samples}, [b], use)]

    monkeypatch.setattr(pipeline, "build_stages", build)
    monkeypatch.setattr(pipeline, "verification_stages", verify)
    return ran


def config(tmp_path: Path, **changes: Any) -> PipelineConfig:
    ckpt = tmp_path / "best.pt"
    if not ckpt.exists():
        ckpt.write_text("weights")
    return PipelineConfig(checkpoint=str(ckpt), out=str(tmp_path / "deploy"), **changes)


def test_other_settings_stop_before_anything_is_replaced(fake_stages, tmp_path):
    run_pipeline(config(tmp_path, calibration_clips=32, parity_samples=16), log=[].append)
    before = digest(tmp_path / "deploy")
    fake_stages.clear()
    with pytest.raises(ConfigError, match=r"pipeline stage make: a\.txt was made with clips = 32, this run has 64; "
                                          r"pass --force"):
        run_pipeline(config(tmp_path, parity_samples=16, calibration_clips=64), log=[].append)
    assert fake_stages == [] and digest(tmp_path / "deploy") == before

    with pytest.raises(ConfigError, match="stage use: b.txt was made with samples = 16, this run has 32"):
        run_pipeline(config(tmp_path, calibration_clips=32), log=[].append)  # `make` is unchanged, skipped
    assert fake_stages == [] and digest(tmp_path / "deploy") == before


def test_force_replaces_and_a_stage_may_follow_a_remade_input(fake_stages, tmp_path):
    run_pipeline(config(tmp_path, calibration_clips=32), log=[].append)
    fake_stages.clear()
    run_pipeline(config(tmp_path, calibration_clips=64), log=[].append, force=True)
    assert fake_stages == ["make", "use"]  # `use` has its settings; its input was remade in this run
    assert (tmp_path / "deploy" / "b.txt").read_text() == "weights 64 32"


def test_changed_checkpoint_is_named(fake_stages, tmp_path):
    run_pipeline(config(tmp_path), log=[].append)
    (tmp_path / "best.pt").write_text("retrained")
    with pytest.raises(ConfigError, match=r"made from other inputs: .*best\.pt changed since; pass --force"):
        run_pipeline(config(tmp_path), log=[].append)
    other = tmp_path / "retrained.pt"  # another checkpoint (sorted after best.pt): the new one is named first
    other.write_text("weights")
    with pytest.raises(ConfigError, match=r"made from other inputs: .*retrained\.pt is new since; pass --force"):
        run_pipeline(PipelineConfig(checkpoint=str(other), out=str(tmp_path / "deploy")), log=[].append)


def test_resumes_and_remakes_a_damaged_output(fake_stages, tmp_path):
    run_pipeline(config(tmp_path), log=[].append)
    (tmp_path / "deploy" / "b.txt").unlink()  # as if interrupted before `use` finished
    (tmp_path / "deploy" / "a.txt").write_text("damaged")
    fake_stages.clear()
    run_pipeline(config(tmp_path), log=[].append)
    assert fake_stages == ["make", "use"]
    fake_stages.clear()
    result = run_pipeline(config(tmp_path), log=[].append)
    assert fake_stages == [] and all(s.skipped for s in result.stages.values())


@pytest.mark.parametrize("kernels, why", [("off", "disabled by configuration (kernels = off)"),
                                          ("auto", "no C++ compiler (g++) to build the AARM CPU kernels")])
def test_kernel_graph_is_skipped_with_the_reason(kernels, why, tmp_path, monkeypatch):
    """Where the kernels cannot be built (or are switched off) the pipeline says why and makes the rest."""
    monkeypatch.setattr(pipeline, "kernels_available", lambda: "no C++ compiler (g++) to build the AARM CPU kernels")
    lines: list[str] = []
    names = [s.name for s in pipeline.build_stages(config(tmp_path, kernels=kernels), lines.append)]
    assert "kernels" not in names and names[:2] == ["export", "optimize"]
    assert f"kernels: skipped ({why})" in lines


def test_kernel_graph_is_a_stage_where_the_kernels_build(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "kernels_available", lambda: None)
    stage = next(s for s in pipeline.build_stages(config(tmp_path), [].append) if s.name == "kernels")
    assert [p.name for p in stage.outputs] == ["model.kernels.onnx", "model.kernels.onnx.json"]
    assert [p.name for p in stage.inputs] == ["model.onnx"]


def test_graphs_left_from_another_run_are_not_checked(tmp_path):
    """A model.kernels.onnx made on another machine (its library may not load here), or a model.fp16.onnx /
    model.int8.onnx from a run with other precisions, is not handed to parity, bench and Triton unless a stage
    of this run makes it; the log names each one left out."""
    out = Path(config(tmp_path).out)
    out.mkdir()
    for name in pipeline.ARTIFACTS.values():
        (out / name).write_bytes(b"graph")

    def artifacts(**settings: Any) -> tuple[list[str], list[str]]:
        lines: list[str] = []
        stages = pipeline.build_stages(config(tmp_path, **settings), [].append)
        return sorted(pipeline._artifacts(config(tmp_path, **settings), stages, lines.append)), lines

    found, lines = artifacts(kernels="off", precisions=["fp32"])
    assert found == ["fp32", "fp32-opt"]
    assert sorted(line.split(":")[0] for line in lines) == ["fp16", "fp32-kernels", "int8"]
    assert all("left from an earlier run" in line and line.endswith("not checked") for line in lines), lines
    found, lines = artifacts(kernels="off", precisions=["fp32", "fp16"])
    assert found == ["fp16", "fp32", "fp32-opt"] and len(lines) == 2


def test_triton_models_left_from_another_run_are_named(tmp_path):
    """A Triton repository holding aarm_int8 from a run with other precisions: Triton would serve it beside this
    run's models, so the pipeline names it (it does not delete what is in the folder)."""
    repo = tmp_path / "triton"
    for name in ("aarm_fp32", "aarm_fp32_opt", "aarm_int8", "other_model"):
        (repo / name).mkdir(parents=True)
    served = {"fp32": tmp_path / "model.onnx", "fp32-opt": tmp_path / "model.opt.onnx"}
    assert pipeline.stale_triton_models(repo, served) == ["aarm_int8"]
    assert pipeline.stale_triton_models(repo, {**served, "int8": tmp_path / "model.int8.onnx"}) == []


def test_a_rerun_with_fewer_precisions_names_the_graph_it_leaves_out(tmp_path, monkeypatch):
    """Run 1 makes and checks FP32 and FP16 graphs; run 2 into the same folder asks for FP32 only. Its parity
    result would replace one that covered model.fp16.onnx, so it stops and says that graph is left out by this
    run's settings (not that it is gone: it is still there); --force replaces the result, without the graph."""
    def build(cfg: PipelineConfig, log: Any) -> list[Stage]:
        out = Path(cfg.out)
        paths = {label: out / pipeline.ARTIFACTS[label] for label in cfg.precisions}
        return [Stage(label, [Path(cfg.checkpoint)], {}, [path], lambda path=path: path.write_text("graph") and {})
                for label, path in paths.items()]

    def verify(cfg: PipelineConfig, artifacts: dict[str, Path], log: Any) -> list[Stage]:
        result = Path(cfg.out) / "parity.json"
        return [Stage("parity", list(artifacts.values()), {}, [result], lambda: result.write_text("{}") and {})]

    monkeypatch.setattr(pipeline, "build_stages", build)
    monkeypatch.setattr(pipeline, "verification_stages", verify)
    assert sorted(run_pipeline(config(tmp_path, precisions=["fp32", "fp16"]), log=[].append).artifacts) == \
        ["fp16", "fp32"]
    lines: list[str] = []
    with pytest.raises(ConfigError, match=r"model\.fp16\.onnx is not among this run's inputs \(its settings leave"):
        run_pipeline(config(tmp_path, precisions=["fp32"]), log=lines.append)
    assert any(line.startswith("fp16: model.fp16.onnx is left from an earlier run") for line in lines), lines
    forced = run_pipeline(config(tmp_path, precisions=["fp32"]), log=[].append, force=True)
    assert sorted(forced.artifacts) == ["fp32"] and (Path(config(tmp_path).out) / "model.fp16.onnx").is_file()

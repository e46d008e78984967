"""The end-to-end pipeline: one checkpoint in, a verified, benchmarked deployment folder out.

    result = run_pipeline(PipelineConfig(checkpoint="best.pt", data="ucf101/", out="deploy"))

Stages (each "file in, file out", recorded in `<out>/pipeline.json`): export -> optimize -> kernels (the CPU
graph with AARM's fused onnxruntime kernels, where they build here) -> fp16 -> int8 (calibration) -> tensorrt
(engines, where TensorRT is importable) -> parity -> bench -> report -> triton.
A stage whose inputs (sha256 of its input files and its own settings) are unchanged since its last run, and
whose outputs are still there unmodified, is skipped; so an interrupted or re-run pipeline resumes. A stage
whose settings or outside inputs (checkpoint, dataset) differ from those its existing outputs were made from
does not replace them unless `force`: the error names the first setting or input that differs. Inputs made by
an earlier stage of the same run (an artifact remade because it was damaged or its stage changed) pass.
"""

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aarm.errors import AarmError, BackendUnavailable, ConfigError
from aarm.fileio import write_json
from export.pipeline_config import PipelineConfig
from runtime.artifact import file_sha256

Log = Callable[[str], None]


@dataclass
class Stage:
    """One pipeline step. `run()` makes `outputs` from `inputs` and returns a JSON-able summary."""

    name: str
    inputs: list[Path]
    params: dict[str, Any]
    outputs: list[Path]
    run: Callable[[], dict[str, Any]]


@dataclass
class StageRun:
    """What one stage did in a run: skipped (up to date), its seconds, and its summary (as `pipeline.json`
    records it)."""

    skipped: bool
    seconds: float
    result: dict[str, Any]


@dataclass
class PipelineResult:
    out: Path
    stages: dict[str, StageRun] = field(default_factory=dict)
    artifacts: dict[str, Path] = field(default_factory=dict)  # fp32, fp32-opt, fp16, int8 -> ONNX graph


class Manifest:
    """`<out>/pipeline.json`: per stage, the key of its inputs, its settings, the sha256 of its inputs and
    outputs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {"stages": {}}

    def up_to_date(self, stage: Stage, key: str) -> bool:
        record = self.data["stages"].get(stage.name)
        if not record or record["key"] != key:
            return False
        return all(Path(p).is_file() and file_sha256(p) == sha for p, sha in record["outputs"].items())

    def record(self, stage: Stage, key: str, result: dict[str, Any], seconds: float) -> None:
        self.data["stages"][stage.name] = {
            "key": key, "seconds": round(seconds, 2), "result": result,
            "params": json.loads(json.dumps(stage.params, default=str)),
            "inputs": _input_hashes(stage),
            "outputs": {str(p): file_sha256(p) for p in stage.outputs if p.is_file()},
        }
        write_json(self.path, self.data)

    def conflict(self, stage: Stage, made_now: set[str]) -> str | None:
        """Why running `stage` would replace outputs made from other settings or inputs (None: it would not).

        `made_now`: the files earlier stages of this run wrote; an input among them is expected to differ.
        """
        record = self.data["stages"].get(stage.name)
        existing = [p for p in (record or {}).get("outputs", {}) if Path(p).is_file()]
        if not record or not existing:
            return None
        what = Path(existing[0]).name
        if "params" not in record or "inputs" not in record:  # a manifest written before they were recorded
            return f"{what} was made by an earlier version of this pipeline, with settings it did not record"
        params = json.loads(json.dumps(stage.params, default=str))
        for name in sorted(set(params) | set(record["params"])):
            was, now = record["params"].get(name), params.get(name)
            if was != now:
                return f"{what} was made with {name} = {json.dumps(was)}, this run has {json.dumps(now)}"
        now_inputs = _input_hashes(stage)
        differ = [p for p in sorted(set(now_inputs) | set(record["inputs"]))
                  if record["inputs"].get(p) != now_inputs.get(p) and p not in made_now]
        for path in sorted(differ, key=lambda p: p not in now_inputs):  # a changed or new input first
            if path in now_inputs:
                state = "changed since" if path in record["inputs"] else "is new since"
            elif Path(path).is_file():
                state = "is not among this run's inputs (its settings leave it out)"
            else:
                state = "is gone since"
            return f"{what} was made from other inputs: {path} {state}"
        return None

    def result(self, name: str) -> dict[str, Any]:
        return self.data["stages"][name]["result"]


def _input_hashes(stage: Stage) -> dict[str, str]:
    """sha256 of each input file, by absolute path ("missing" for one that is not there)."""
    return {str(p.resolve()): file_sha256(p) if p.is_file() else "missing" for p in stage.inputs}


def stage_key(stage: Stage) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps(stage.params, sort_keys=True, default=str).encode())
    for p in stage.inputs:
        digest.update(str(p.name).encode())
        digest.update(file_sha256(p).encode() if p.is_file() else b"missing")
    return digest.hexdigest()


def tensorrt_available() -> str | None:
    """None when TensorRT can be imported, else why not."""
    try:
        from runtime.tensorrt_engine import require_tensorrt

        require_tensorrt()
    except BackendUnavailable as exc:
        return str(exc).split(";")[0]
    return None


def kernels_available() -> str | None:
    """None if AARM's CPU kernels build and load here, else why not (no compiler, untested onnxruntime, ...)."""
    from export.kernels import custom_op_library

    try:
        custom_op_library()
    except BackendUnavailable as exc:
        return str(exc)
    return None


def _dataset_files(data: str | None) -> list[Path]:
    """The annotation files that define a dataset's splits (their hashes key calibration and parity)."""
    if not data:
        return []
    root = Path(data)
    files = sorted(p for p in root.rglob("*.txt") if p.is_file())
    return files[:64] or [p for p in [root / "dataset.json"] if p.is_file()]


def build_stages(cfg: PipelineConfig, log: Log) -> list[Stage]:
    """The stages this configuration asks for, in order."""
    from calibration.quantize import CalibrationConfig, calibrate
    from export.fp16 import convert_onnx
    from export.onnx_export import export_loaded_checkpoint
    from export.passes import optimize_onnx
    from export.verify import verify_against_torch

    out = Path(cfg.out)
    ckpt = Path(cfg.checkpoint)
    fp32, opt, fp16, int8 = out / "model.onnx", out / "model.opt.onnx", out / "model.fp16.onnx", out / "model.int8.onnx"
    cpu = out / ARTIFACTS["fp32-kernels"]
    data_files = _dataset_files(cfg.data)

    def sidecar(p: Path) -> Path:
        return p.with_name(p.name + ".json")

    def run_export() -> dict[str, Any]:
        _, model = export_loaded_checkpoint(ckpt, fp32, opset=cfg.opset, force=True)
        check = verify_against_torch(model, fp32, samples=4)
        log(f"  onnxruntime vs PyTorch: max abs error {check['max_abs_error']:.2e}, "
            f"top-1 agreement {check['top1_agreement']:.0%}")
        return {"verify": check}

    def run_optimize() -> dict[str, Any]:
        return {"passes": optimize_onnx(fp32, opt, force=True)[1]}

    def run_kernels() -> dict[str, Any]:
        sidecar_, rows = optimize_onnx(fp32, cpu, kernels=True, force=True)
        return {"passes": rows, "custom_ops": sidecar_.extra["custom_ops"]}

    def run_fp16() -> dict[str, Any]:
        convert_onnx(opt, fp16, precision="fp16", force=True)
        return {"source": str(opt)}

    def run_int8() -> dict[str, Any]:
        config = CalibrationConfig(
            data=Path(cfg.data), split=cfg.split, clips=cfg.calibration_clips, method=cfg.calibration_method,
            target=cfg.calibration_target, max_drop=cfg.max_drop, eval_clips=cfg.eval_clips,
            cache=out / "calibration.cache.json",
        )
        return calibrate(fp32, int8, config, force=True).report.to_json()

    stages = [
        Stage("export", [ckpt], {"opset": cfg.opset}, [fp32, sidecar(fp32)], run_export),
        Stage("optimize", [fp32], {}, [opt, sidecar(opt)], run_optimize),
    ]
    why_not = kernels_available() if cfg.kernels == "auto" else "disabled by configuration (kernels = off)"
    if why_not:
        log(f"kernels: skipped ({why_not})")
    else:
        stages.append(Stage("kernels", [fp32], {}, [cpu, sidecar(cpu)], run_kernels))
    if "fp16" in cfg.precisions:
        stages.append(Stage("fp16", [opt], {}, [fp16, sidecar(fp16)], run_fp16))
    if "int8" in cfg.precisions:
        if cfg.data:
            params = {k: getattr(cfg, k) for k in ("data", "split", "calibration_clips", "calibration_method",
                                                    "calibration_target", "max_drop", "eval_clips")}
            stages.append(Stage("int8", [fp32, *data_files], params, [int8, sidecar(int8)], run_int8))
        else:
            log("int8: skipped (no --data to calibrate on)")
    return stages


ARTIFACTS = {"fp32": "model.onnx", "fp32-opt": "model.opt.onnx", "fp32-kernels": "model.kernels.onnx",
             "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}


def _artifacts(cfg: PipelineConfig, stages: Sequence[Stage], log: Log) -> dict[str, Path]:
    """The graphs this run's stages made or kept, by label. A graph in the folder that no stage of this run
    makes (left by a run with other precisions, or a kernel graph from another machine, whose library may not
    load here) is named in the log and left out: parity, bench, the report and Triton speak only for what
    this run's settings made."""
    out = Path(cfg.out)
    made = {p.resolve() for stage in stages for p in stage.outputs}
    found: dict[str, Path] = {}
    for label, name in ARTIFACTS.items():
        path = out / name
        if path.resolve() in made and path.is_file():
            found[label] = path
        elif path.is_file():
            log(f"{label}: {name} is left from an earlier run, not made by this one's settings; not checked")
    return found


def stale_triton_models(repo: Path, served: dict[str, Path]) -> list[str]:
    """Model folders in the Triton repository that this run does not write (e.g. aarm_int8 from a run with
    other precisions): Triton would load them beside this run's models."""
    ours = {f"aarm_{label.replace('-', '_')}" for label in served}
    return sorted(p.name for p in repo.glob("aarm_*") if p.is_dir() and p.name not in ours)


def verification_stages(cfg: PipelineConfig, artifacts: dict[str, Path], log: Log) -> list[Stage]:
    """TensorRT engines, parity, bench, report and Triton, over the artifacts the earlier stages made."""
    out = Path(cfg.out)
    ckpt = Path(cfg.checkpoint)
    engines: dict[str, Path] = {}
    stages: list[Stage] = []

    why_not = tensorrt_available() if cfg.tensorrt == "auto" else "disabled by configuration (tensorrt = off)"
    if why_not:
        log(f"tensorrt: skipped ({why_not})")
    else:
        from export.tensorrt_build import BuildOptions, build_engine, parse_batch

        for name in ("fp32", "fp16", "int8"):
            if name not in artifacts:
                continue
            engine = out / f"model.{name}.engine"
            engines[name] = engine

            def run_build(src: Path = artifacts[name], engine: Path = engine) -> dict[str, Any]:
                options = BuildOptions(batch=parse_batch(cfg.trt_batch), output=engine, force=True,
                                       timing_cache=out / "timing.cache")
                path, sc = build_engine(src, options)
                return {"engine": str(path), "tensorrt": sc.versions.get("tensorrt")}

            stages.append(Stage(f"tensorrt-{name}", [artifacts[name]], {"batch": cfg.trt_batch},
                                [engine, engine.with_name(engine.name + ".json")], run_build))

    parity_json, bench_json = out / "parity.json", out / "bench.json"
    targets = {**artifacts, **{f"trt-{k}": v for k, v in engines.items()}}

    def run_parity() -> dict[str, Any]:
        from export.verify import compare_with_rebuild
        from runtime.backends import open_runner
        from runtime.lineage import check_lineage
        from runtime.parity import check_parent, compare, labelled_batches, runner_tolerances

        results, summary = [], {}
        with open_runner(ckpt, threads=cfg.threads) as reference:
            for label, path in targets.items():
                check_lineage(path, ckpt)  # as `aarm-export parity` does: the artifact descends from the checkpoint
                with open_runner(path, threads=cfg.threads) as runner:
                    data = None
                    if cfg.data:
                        data = labelled_batches(cfg.data, runner.preprocessing[0], [s.name for s in runner.input_specs],
                                                classes=runner.classes, split=cfg.split, samples=0)
                    res = compare(runner, reference, samples=cfg.parity_samples, data=data,
                                  tolerances=runner_tolerances(runner, reference))
                    if runner.precision == "fp16" and Path(path).suffix == ".onnx":
                        res.add_rebuild(compare_with_rebuild(path, threads=cfg.threads))
                        check_parent(res, reference, threads=cfg.threads)
                results.append(res.to_dict())
                summary[label] = {"passed": bool(res), "failures": res.failures, "metrics": res.metrics}
                log(f"  {label}: parity {'holds' if res else 'FAILED: ' + '; '.join(res.failures)}")
        write_json(parity_json, results)
        return summary

    def run_bench() -> dict[str, Any]:
        from runtime.backends import open_runner
        from runtime.bench import benchmark

        runners = [open_runner(ckpt, threads=cfg.threads)] + [open_runner(p, threads=cfg.threads)
                                                               for p in targets.values()]
        result = benchmark(runners, batches=cfg.bench_batches, iterations=cfg.bench_iterations)
        write_json(bench_json, result.to_json())
        return {"rows": len(result.rows)}

    stages.append(Stage("parity", [ckpt, *targets.values(), *_dataset_files(cfg.data)],
                        {"samples": cfg.parity_samples, "data": cfg.data}, [parity_json], run_parity))
    stages.append(Stage("bench", [ckpt, *targets.values()],
                        {"batches": cfg.bench_batches, "iterations": cfg.bench_iterations, "threads": cfg.threads},
                        [bench_json], run_bench))

    report = out / "report.html"
    extra_images = sorted(out.glob("attention*.png"))

    def run_report() -> dict[str, Any]:
        from runtime.report import build_report

        html, md = build_report([bench_json, parity_json], report, force=True, images=extra_images)
        return {"html": str(html), "markdown": str(md)}

    stages.append(Stage("report", [bench_json, parity_json, *extra_images], {}, [report, report.with_suffix(".md")],
                        run_report))
    if cfg.triton:
        repo = out / "triton"

        def run_triton() -> dict[str, Any]:
            from export.triton import TritonOptions, write_triton_model

            made = {}
            for label, path in served.items():
                options = TritonOptions(name=f"aarm_{label.replace('-', '_')}", force=True,
                                        max_batch=cfg.triton_max_batch if path.suffix == ".onnx" else None,
                                        kind="gpu")
                made[label] = str(write_triton_model(path, repo, options))
            return made

        # Triton's onnxruntime backend has no AARM kernel library: the kernel graph stays a local CPU artifact.
        served = {k: v for k, v in targets.items() if k != "fp32-kernels"}
        if len(served) < len(targets):
            log(f"triton: {', '.join(sorted(set(targets) - set(served)))} left out (custom ops that Triton's "
                "onnxruntime backend cannot load)")
        stale = stale_triton_models(repo, served)
        if stale:
            log(f"triton: {', '.join(stale)} in {repo} left from an earlier run, not made by this one; Triton "
                "serves every model in the folder, so remove them to serve only this run's")
        stages.append(Stage("triton", list(served.values()), {"max_batch": cfg.triton_max_batch},
                            [repo / f"aarm_{k.replace('-', '_')}" / "config.pbtxt" for k in served], run_triton))
    return stages


def run_pipeline(cfg: PipelineConfig, *, log: Log = print, force: bool = False) -> PipelineResult:
    """Run every stage in order, skipping the up-to-date ones; returns what each stage did.

    A stage whose existing outputs were made from other settings or inputs is an error unless `force`.
    """
    if not cfg.checkpoint or not Path(cfg.checkpoint).is_file():
        raise ConfigError(f"checkpoint not found: {cfg.checkpoint or '(none given)'}")
    if cfg.data and not Path(cfg.data).is_dir():
        raise ConfigError(f"dataset folder not found: {cfg.data}")
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file; the pipeline writes into a folder (--out)")
    out.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(out / "pipeline.json")
    result = PipelineResult(out=out)
    made_now: set[str] = set()

    def execute(stage: Stage) -> None:
        key = stage_key(stage)
        if manifest.up_to_date(stage, key):
            log(f"{stage.name}: unchanged, skipped")
            result.stages[stage.name] = StageRun(True, 0.0, manifest.result(stage.name))
            return
        why = None if force else manifest.conflict(stage, made_now)
        if why:
            raise ConfigError(f"pipeline stage {stage.name}: {why}; pass --force to replace it, or choose "
                              "another --out")
        log(f"{stage.name}: running")
        started = time.perf_counter()
        try:
            summary = stage.run()
        except AarmError as exc:
            raise type(exc)(f"pipeline stage {stage.name}: {exc}") from exc
        seconds = time.perf_counter() - started
        manifest.record(stage, key, summary, seconds)
        made_now.update(str(p.resolve()) for p in stage.outputs)
        result.stages[stage.name] = StageRun(False, seconds, summary)
        log(f"{stage.name}: done in {seconds:.1f} s")

    built = build_stages(cfg, log)
    for stage in built:
        execute(stage)
    result.artifacts = _artifacts(cfg, built, log)
    for stage in verification_stages(cfg, result.artifacts, log):
        execute(stage)
    return result

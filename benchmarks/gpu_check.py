"""One-call GPU check: environment, the gpu-marked tests, the PyTorch CUDA runner, onnxruntime's GPU providers and
TensorRT engines where importable, with parity against the CPU FP32 reference and the paper's speed goal.

    python benchmarks/gpu_check.py --out DIR              # one H100/H200: about 8 minutes at most
    python benchmarks/gpu_check.py --dry-run --out DIR    # the same code paths on the CPU, tiny model, < 1 minute

Sections, each recorded as ran / skipped (with the reason) / failed (with the error), never silently dropped:
1. environment: GPU, driver, CUDA, cuDNN, torch, onnxruntime and its providers, tensorrt, Polygraphy.
2. gpu tests: `pytest -m gpu` in a subprocess (the dry run selects one small file).
3. torch: AARM-ResNet-50 and plain ResNet-50 (TSN, K = 3, 224x224, 101 classes; random weights with batch-norm
   statistics re-estimated on random clips, so each layer's activations are normalised) at batch 1, 8, 32
   in FP32, FP16, FP16 + channels-last, FP16 + channels-last + CUDA graphs and BF16 + channels-last. Latency
   per call is timed two ways, interleaving the two models round by round: `infer` (numpy in, numpy out,
   host copies included) and device-only (`TorchRunner.forward` on a tensor already on the GPU), with CUDA
   events on a GPU. Parity of every configuration against the CPU FP32 reference on the same clips, judged
   by the precision's default limits (runtime.parity; bf16 has none yet and is reported only).
4. onnxruntime: the exported FP32 and FP16 graphs on the CUDA and TensorRT execution providers (the dry run:
   CPU provider); 5. TensorRT: engines built from those graphs, parity and latency.
6. goal: AARM-ResNet-50 at batch 32 in FP16 within 1.15x of plain ResNet-50's device latency on the same GPU
   (each model at its fastest FP16 configuration).

Writes DIR/gpu_check.json and DIR/gpu_check.md, then exits 0; 1 when a section or configuration failed with an
error (or, in the dry run, a judged parity check failed: on the CPU those paths must hold), listed on stderr; 2 on
a usage error. A failed parity check on a GPU is a finding, recorded in the files.
"""

import argparse
import ctypes
import functools
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aarm  # noqa: E402
from aarm.data.preprocessing import Preprocessing  # noqa: E402
from aarm.errors import AarmError  # noqa: E402
from aarm.fileio import write_json, write_text  # noqa: E402
from runtime.backends import open_runner  # noqa: E402
from runtime.backends.torch_backend import TorchRunner  # noqa: E402
from runtime.bench import settle  # noqa: E402
from runtime.compare import NONFINITE, judge, score_metrics  # noqa: E402
from runtime.host import software_versions  # noqa: E402
from runtime.parity import default_tolerances  # noqa: E402
from runtime.runner import Runner  # noqa: E402
from runtime.tensorrt_engine import tensorrt_version  # noqa: E402

GOAL_RATIO = 1.15  # the paper's goal: AARM-ResNet-50 FP16 batch 32 within 1.15x of plain ResNet-50
VARIANTS: dict[str, dict[str, Any]] = {
    "fp32": {"precision": "fp32"},
    "fp16": {"precision": "fp16"},
    "fp16+cl": {"precision": "fp16", "channels_last": True},
    "fp16+cl+graphs": {"precision": "fp16", "channels_last": True, "cuda_graphs": True},
    "bf16+cl": {"precision": "bf16", "channels_last": True},
}


@dataclass(frozen=True)
class Setup:
    """What one run measures: the full check on a GPU, or the dry run's tiny version on the CPU."""

    backbone: str
    size: int
    segments: int
    classes: int
    batches: tuple[int, ...]
    parity_clips: int
    device: str
    timed_calls: int
    rounds: int
    gpu_tests: tuple[str, ...]
    ort_providers: tuple[str, ...]
    exported: tuple[str, ...]  # models exported to ONNX for onnxruntime / TensorRT
    budget_s: float

    @classmethod
    def full(cls, device: str, budget_s: float) -> "Setup":
        return cls("resnet50", 224, 3, 101, (1, 8, 32), 32, device, 20, 4, ("tests",), ("cuda", "tensorrt"),
                   ("aarm", "plain"), budget_s)

    @classmethod
    def dry(cls, budget_s: float) -> "Setup":
        return cls("resnet18", 32, 2, 5, (1, 2), 4, "cpu", 4, 2, ("tests/runtime/test_tensorrt_engine.py",), ("cpu",),
                   ("aarm",), budget_s)


@dataclass
class Check:
    """Collects sections and rows; each section ran, was skipped (reason) or failed (error)."""

    setup: Setup
    dry_run: bool
    started: float = field(default_factory=time.perf_counter)
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)

    def left(self) -> float:
        return self.setup.budget_s - (time.perf_counter() - self.started)

    def section(self, name: str, fn: Callable[[], dict[str, Any]], *, needs_s: float = 0.0) -> dict[str, Any]:
        t0 = time.perf_counter()
        if self.left() < needs_s:
            result = {"status": "skipped", "reason": f"time budget: {self.left():.0f} s left, needs ~{needs_s:.0f} s"}
        else:
            try:
                result = {"status": "ran", **fn()}
            except Skip as skip:
                result = {"status": "skipped", "reason": str(skip), **skip.details}
            except (AarmError, RuntimeError, OSError, ValueError, ImportError, subprocess.SubprocessError) as exc:
                result = {"status": "failed", "error": f"{type(exc).__name__}: {' '.join(str(exc).split())}",
                          "traceback": traceback.format_exc(limit=6)}
        result["seconds"] = round(time.perf_counter() - t0, 1)
        self.sections[name] = result
        print(f"[{time.perf_counter() - self.started:6.1f} s] {name}: {result['status']}"
              f"{' - ' + result.get('reason', result.get('error', '')) if result['status'] != 'ran' else ''}",
              flush=True)
        return result


class Skip(Exception):  # noqa: N818 - a section's reason for not running, not an error
    """A section that cannot run here, with the reason and what it did before it stopped."""

    def __init__(self, reason: str, **details: Any) -> None:
        super().__init__(reason)
        self.details = details


# -- 1. environment ----------------------------------------------------------------------------------------
def _driver_version() -> str | None:
    """The NVIDIA driver's CUDA version (cuDriverGetVersion) and, where nvidia-smi exists, its release."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    v = ctypes.c_int()
    cuda = f"CUDA {v.value // 1000}.{v.value % 1000 // 10}" if lib.cuDriverGetVersion(ctypes.byref(v)) == 0 else "?"
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        release = smi.stdout.strip().splitlines()[0] if smi.returncode == 0 and smi.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        release = None
    return f"{release} ({cuda})" if release else cuda


def ort_provider_usable(provider: str) -> bool:
    """Whether onnxruntime really starts `provider` (cpu | cuda | tensorrt) on a one-node graph: a GPU build lists
    its providers even where their libraries or the GPU are missing, and then quietly runs on the CPU."""
    try:
        import onnxruntime
        from onnx import TensorProto, helper
    except ImportError:
        return False
    full = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
    if full[provider] not in onnxruntime.get_available_providers():
        return False
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4
    try:
        session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=[full[provider]])
    except Exception:  # noqa: BLE001 - onnxruntime's pybind errors share no base; any failure means "not here"
        return False
    return full[provider] in session.get_providers()


def environment() -> dict[str, Any]:
    versions = software_versions()
    env: dict[str, Any] = {
        "python": platform.python_version(), "machine": platform.machine(), "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "cuda_available": torch.cuda.is_available(), "driver": _driver_version(),
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "bf16_supported": torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        "onnxruntime": versions["onnxruntime-gpu"] or versions["onnxruntime"], "tensorrt": tensorrt_version(),
        "polygraphy": versions["polygraphy"],
    }
    try:
        import onnxruntime

        env["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except ImportError:
        env["onnxruntime_providers"] = []
    env["ort_usable"] = {p: ort_provider_usable(p) for p in ("cuda", "tensorrt")}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env["gpu0"] = {"name": props.name, "compute_capability": f"{props.major}.{props.minor}",
                       "memory_gib": round(props.total_memory / 2**30, 1), "sms": props.multi_processor_count}
    return env


# -- 2. gpu-marked tests -----------------------------------------------------------------------------------
def gpu_tests(paths: Sequence[str], timeout_s: float) -> dict[str, Any]:
    """`pytest -m gpu PATHS` in a subprocess; its summary line and outcome."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-rs", *paths]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
    lines = proc.stdout.strip().splitlines()
    summary = lines[-1] if lines else proc.stderr.strip()[-300:]
    return {"command": " ".join(cmd[1:]), "returncode": proc.returncode, "summary": summary,
            "passed": proc.returncode in (0, 5), "output_tail": "\n".join(lines[-40:])}


# -- models and the CPU reference --------------------------------------------------------------------------
def make_model(setup: Setup, attention: str, seed: int = 0) -> tuple[torch.nn.Module, Preprocessing]:
    """A randomly initialised TSN with batch-norm statistics re-estimated on random clips (eval mode after)."""
    torch.manual_seed(seed)
    model = aarm.create_model(setup.backbone, num_classes=setup.classes, attention=attention, segments=setup.segments)
    prep = Preprocessing.for_model(model.aarm_config, size=setup.size)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the passes below
    gen = torch.Generator().manual_seed(seed + 1)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(prep.input_shape(2), generator=gen))
    for m in norms:
        m.momentum = 0.1
    return model.eval(), prep


def clips(prep: Preprocessing, n: int, seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(prep.input_shape(n), dtype=np.float32)


def cpu_reference(model: torch.nn.Module, x: np.ndarray, chunk: int = 8) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate([model(torch.from_numpy(x[i:i + chunk])).numpy() for i in range(0, len(x), chunk)])


# -- parity ------------------------------------------------------------------------------------------------
def parity(scores: np.ndarray, reference: np.ndarray, precision: str) -> dict[str, Any]:
    """Scores (N, C) against the CPU FP32 reference: runtime.compare's metrics, judged by the precision's
    general default limits (runtime.parity; the per-backbone table is for onnxruntime CPU)."""
    m = score_metrics(scores, reference)
    finite = not (m["artifact_nonfinite"] or m["reference_nonfinite"])
    metrics = {"clips": int(len(scores)), "finite": finite,
               **{k: m[k] for k in ("max_abs", "max_rel", "min_cosine", "mean_cosine", "top1", "top5")}}
    try:
        tol = default_tolerances(precision)
    except AarmError as exc:
        return {**metrics, "judged": False, "ok": None, "note": str(exc)}
    failures = [] if finite else ["non-finite scores"]
    failures += [f"{f.metric} {f.measured:.4g} {'>' if f.kind == 'max' else '<'} {f.limit:g}"
                 for f in judge(m, tol, "gpu") if f.metric not in NONFINITE]
    return {**metrics, "judged": True, "ok": not failures, "failures": failures}


def run_all(runner: Runner, x: np.ndarray, batch: int) -> np.ndarray:
    """The runner's scores for all clips of `x`, `batch` clips per call (a short last batch is padded)."""
    out = []
    for i in range(0, len(x), batch):
        part = x[i:i + batch]
        if len(part) < batch:
            part = np.concatenate([part, np.repeat(part[-1:], batch - len(part), axis=0)])
        out.append(runner.infer({runner.input_specs[0].name: part})[runner.output_names[0]][: len(x) - i])
    return np.concatenate(out)


# -- timing ------------------------------------------------------------------------------------------------
def _timer(device: str) -> Callable[[Callable[[], Any]], float]:
    """ms of one call: CUDA events on the runner's GPU (after the call's work is done), perf_counter on the CPU."""
    if device.startswith("cuda"):
        dev = torch.device(device)

        def cuda_time(call: Callable[[], Any]) -> float:
            with torch.cuda.device(dev):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                call()
                end.record()
                end.synchronize()
                return float(start.elapsed_time(end))

        return cuda_time

    def cpu_time(call: Callable[[], Any]) -> float:
        t0 = time.perf_counter_ns()
        call()
        return (time.perf_counter_ns() - t0) / 1e6

    return cpu_time


def interleaved(calls: dict[str, Callable[[], Any]], device: str, n: int, rounds: int) -> dict[str, dict[str, float]]:
    """Median and spread (ms) of each call, `n` timed calls each split over `rounds` rounds that rotate the
    order; each turn starts with the bench's untimed switch calls (`runtime.bench.settle`)."""
    timer = _timer(device)
    samples: dict[str, list[float]] = {k: [] for k in calls}
    for call in calls.values():
        call()
    names = list(calls)
    per_round = max(1, n // rounds)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            settle(functools.partial(timer, calls[name]))
            samples[name] += [timer(calls[name]) for _ in range(per_round)]
    return {k: {"p50": float(np.median(v)), "p10": float(np.percentile(v, 10)), "p90": float(np.percentile(v, 90)),
                "calls": len(v)} for k, v in samples.items()}


# -- 3. the PyTorch runner ---------------------------------------------------------------------------------
@contextmanager
def recorded(row: dict[str, Any], runners: dict[str, Any]) -> Iterator[None]:
    """One row's work: status "ran" when it finishes, "skipped" with the reason for a configuration the device
    refuses (AarmError, e.g. CUDA graphs on the CPU), "failed" with the error for a RuntimeError; the row's
    runners are deactivated either way."""
    try:
        yield
        row["status"] = "ran"
    except AarmError as exc:
        row.update(status="skipped", reason=str(exc))
    except RuntimeError as exc:
        row.update(status="failed", error=" ".join(str(exc).split())[:500])
    finally:
        for r in runners.values():
            r.deactivate()


def torch_section(check: Check, models: dict[str, tuple[torch.nn.Module, Preprocessing]],
                  refs: dict[str, np.ndarray], x: np.ndarray) -> dict[str, Any]:
    setup = check.setup
    if setup.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN time its kernels once
    rows = []
    for variant, options in VARIANTS.items():
        for batch in setup.batches:
            if check.left() < 20:
                rows.append({"variant": variant, "batch": batch, "status": "skipped", "reason": "time budget"})
                continue
            row: dict[str, Any] = {"variant": variant, "batch": batch, **options}
            runners: dict[str, TorchRunner] = {}
            with recorded(row, runners):
                for name, (model, prep) in models.items():
                    runners[name] = TorchRunner(model, preprocessing=prep, name=name, device=setup.device, **options)
                    runners[name].activate()
                row["parity"] = {name: parity(run_all(r, x, batch), refs[name], r.precision)
                                 for name, r in runners.items()}
                feed = {"input": np.resize(x, (batch, *x.shape[1:]))}
                on_device = {name: r.to_device(feed["input"]) for name, r in runners.items()}
                row["infer_ms"] = interleaved(
                    {name: (lambda r=r, f=feed: r.infer(f)) for name, r in runners.items()},
                    setup.device, setup.timed_calls, setup.rounds)
                row["device_ms"] = interleaved(
                    {name: (lambda r=r, t=on_device[name]: r.forward(t)) for name, r in runners.items()},
                    setup.device, setup.timed_calls, setup.rounds)
            rows.append(row)
            print(f"    torch {variant} batch {batch}: {row['status']}", flush=True)
    return {"device": setup.device, "cudnn_benchmark": setup.device.startswith("cuda"), "rows": rows}


# -- 4./5. onnxruntime providers and TensorRT engines ------------------------------------------------------
def export_graphs(check: Check, models: dict[str, tuple[torch.nn.Module, Preprocessing]], work: Path
                  ) -> dict[str, dict[str, Path]]:
    """model.onnx and model.fp16.onnx (+ sidecars) of each model, through the project's exporter."""
    from export.fp16 import convert_onnx
    from export.onnx_export import export_onnx

    classes = [f"class{i}" for i in range(check.setup.classes)]
    graphs = {}
    for name in check.setup.exported:
        model, prep = models[name]
        fp32 = work / name / "model.onnx"
        fp32.parent.mkdir(parents=True, exist_ok=True)
        export_onnx(model, fp32, classes=classes, preprocessing=prep, trained=False, force=True)
        fp16 = work / name / "model.fp16.onnx"
        convert_onnx(fp32, fp16, force=True)
        graphs[name] = {"fp32": fp32, "fp16": fp16}
    return graphs


def artifact_rows(check: Check, opened: Callable[[str, str], Runner], names: Sequence[str], what: Sequence[str],
                  refs: dict[str, np.ndarray], x: np.ndarray, batch: int) -> list[dict[str, Any]]:
    """Parity and interleaved latency of the models `names` (aarm, plain) as each artifact kind in `what`
    (fp32, fp16) at one batch size."""
    rows = []
    for kind in what:
        row: dict[str, Any] = {"artifact": kind, "batch": batch}
        runners: dict[str, Runner] = {}
        with recorded(row, runners):
            for name in names:
                runners[name] = opened(name, kind)
                runners[name].activate()
            row["provider"] = {n: r.provider for n, r in runners.items()}
            row["parity"] = {n: parity(run_all(r, x, batch), refs[n], r.precision) for n, r in runners.items()}
            feed = {n: {r.input_specs[0].name: np.resize(x, (batch, *x.shape[1:]))} for n, r in runners.items()}
            device = next(iter(runners.values())).device
            row["infer_ms"] = interleaved({n: (lambda r=r, f=feed[n]: r.infer(f)) for n, r in runners.items()},
                                          device, check.setup.timed_calls, check.setup.rounds)
        rows.append(row)
    return rows


def ort_section(check: Check, graphs: dict[str, dict[str, Path]], refs: dict[str, np.ndarray], x: np.ndarray
                ) -> dict[str, Any]:
    import onnxruntime

    available = onnxruntime.get_available_providers()
    full = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
    out: dict[str, Any] = {"available": available, "providers": {}}
    for provider in check.setup.ort_providers:
        if full[provider] not in available:
            out["providers"][provider] = {"status": "skipped", "reason": f"{full[provider]} is not in this "
                                          f"onnxruntime build ({', '.join(available)})"}
            continue
        rows = []
        for batch in check.setup.batches:
            rows += artifact_rows(check, lambda name, kind, p=provider: open_runner(graphs[name][kind], providers=[p]),
                                  list(graphs), ("fp32", "fp16"), refs, x, batch)
        out["providers"][provider] = {"status": "ran", "rows": rows}
    return out


def tensorrt_section(check: Check, graphs: dict[str, dict[str, Path]], refs: dict[str, np.ndarray], x: np.ndarray
                     ) -> dict[str, Any]:
    from export.tensorrt_build import BuildOptions, build_engine, build_plan
    from runtime.artifact import read_sidecar

    batches = (min(check.setup.batches), sorted(check.setup.batches)[len(check.setup.batches) // 2],
               max(check.setup.batches))
    plans = {f"{name}.{kind}": build_plan(path, read_sidecar(path), BuildOptions(batch=batches)).to_dict()["profiles"]
             for name, kinds in graphs.items() for kind, path in kinds.items()}
    if tensorrt_version() is None:
        raise Skip("tensorrt is not importable here; the build plans were made (`plans`)", plans=plans)
    engines: dict[str, dict[str, Path]] = {}
    built = {}
    for name, kinds in graphs.items():
        for kind, path in kinds.items():
            if check.left() < 90:
                built[f"{name}.{kind}"] = "skipped: time budget"
                continue
            t0 = time.perf_counter()
            engine, _ = build_engine(path, BuildOptions(batch=batches, device=check.setup.device, force=True))
            engines.setdefault(name, {})[kind] = engine
            built[f"{name}.{kind}"] = round(time.perf_counter() - t0, 1)
    rows = []
    for batch in check.setup.batches:
        rows += artifact_rows(check, lambda name, kind: open_runner(engines[name][kind], device=check.setup.device),
                              list(engines), ("fp32", "fp16"), refs, x, batch)
    return {"build_seconds": built, "rows": rows}


# -- 6. the goal -------------------------------------------------------------------------------------------
def goal(torch_result: dict[str, Any], dry_run: bool) -> dict[str, Any]:
    """AARM vs plain at the largest batch in FP16, each at its fastest FP16 configuration, device time."""
    rows = [r for r in torch_result.get("rows", []) if r.get("status") == "ran" and r["precision"] == "fp16"]
    if not rows:
        return {"status": "not measured", "reason": "no FP16 configuration ran"}
    batch = max(r["batch"] for r in rows)
    best = {}
    for name in ("aarm", "plain"):
        fastest = min((r for r in rows if r["batch"] == batch), key=lambda r, n=name: r["device_ms"][n]["p50"])
        best[name] = {"variant": fastest["variant"], "p50_ms": fastest["device_ms"][name]["p50"]}
    ratio = best["aarm"]["p50_ms"] / best["plain"]["p50_ms"]
    return {"batch": batch, "aarm": best["aarm"], "plain": best["plain"], "ratio": ratio,
            "limit": GOAL_RATIO, "status": ("pass" if ratio <= GOAL_RATIO else "fail"),
            "note": "dry run: tiny model on the CPU, not the paper's goal" if dry_run else
            "AARM-ResNet-50 vs ResNet-50, FP16, device time"}


# -- report ------------------------------------------------------------------------------------------------
def _fmt_parity(p: dict[str, Any] | None) -> str:
    if not p:
        return "-"
    verdict = "reported" if not p.get("judged") else ("ok" if p["ok"] else "FAIL: " + "; ".join(p["failures"]))
    return f"{p['max_rel']:.2g} / {p['min_cosine']:.5f} / {p['top1']:.0%} ({verdict})"


def markdown(result: dict[str, Any]) -> str:
    env = result["sections"]["environment"]
    lines = [f"# GPU check {'(dry run) ' if result['dry_run'] else ''}- {result['created']}", ""]
    if env.get("status") == "ran":
        lines += [f"GPU: {', '.join(env['gpus']) or 'none'}; driver {env['driver']}; "
                  f"CUDA (torch) {env['torch_cuda']}; torch {env['torch']}; onnxruntime {env['onnxruntime']} "
                  f"({', '.join(env['onnxruntime_providers'])}); tensorrt {env['tensorrt'] or 'not importable'}; "
                  f"polygraphy {env['polygraphy']}", ""]
    lines += ["| section | status | seconds | note |", "|---|---|---|---|"]
    for name, sec in result["sections"].items():
        note = sec.get("reason") or sec.get("error") or sec.get("summary") or ""
        lines.append(f"| {name} | {sec['status']} | {sec['seconds']} | {note[:160]} |")
    g = result["goal"]
    lines += ["", "## Goal", ""]
    if "ratio" in g:
        lines.append(f"AARM {g['aarm']['p50_ms']:.2f} ms ({g['aarm']['variant']}) vs plain "
                     f"{g['plain']['p50_ms']:.2f} ms ({g['plain']['variant']}) at batch {g['batch']}: "
                     f"**{g['ratio']:.3f}x** (limit {g['limit']}x) -> **{g['status']}** ({g['note']})")
    else:
        lines.append(f"{g['status']}: {g.get('reason', '')}")
    torch_sec = result["sections"].get("torch", {})
    if torch_sec.get("rows"):
        lines += ["", "## PyTorch runner", "",
                  "| variant | batch | AARM device ms | plain device ms | ratio | AARM infer ms | plain infer ms | "
                  "AARM parity (max rel / min cos / top-1) | plain parity |", "|---|---|---|---|---|---|---|---|---|"]
        for r in torch_sec["rows"]:
            if r["status"] != "ran":
                why = r.get("reason", r.get("error", ""))[:80]
                lines.append(f"| {r['variant']} | {r['batch']} | {r['status']}: {why} | | | | | | |")
                continue
            d, i = r["device_ms"], r["infer_ms"]
            lines.append(f"| {r['variant']} | {r['batch']} | {d['aarm']['p50']:.2f} | {d['plain']['p50']:.2f} | "
                         f"{d['aarm']['p50'] / d['plain']['p50']:.2f} | {i['aarm']['p50']:.2f} | "
                         f"{i['plain']['p50']:.2f} | {_fmt_parity(r['parity']['aarm'])} | "
                         f"{_fmt_parity(r['parity']['plain'])} |")
    ort_rows = [(p, row) for p, sec in result["sections"].get("onnxruntime", {}).get("providers", {}).items()
                for row in sec.get("rows", [])]
    trt_rows = [("engine", row) for row in result["sections"].get("tensorrt", {}).get("rows", [])]
    for title, rows in (("onnxruntime", ort_rows), ("TensorRT", trt_rows)):
        if not rows:
            continue
        lines += ["", f"## {title}", "",
                  "| provider | artifact | batch | model | ms | parity (max rel / min cos / top-1) |",
                  "|---|---|---|---|---|---|"]
        for provider, r in rows:
            if r["status"] != "ran":
                why = r.get("reason", r.get("error", ""))[:100]
                lines.append(f"| {provider} | {r['artifact']} | {r['batch']} | {r['status']}: {why} | | |")
                continue
            for name, timing in r["infer_ms"].items():
                lines.append(f"| {provider} | {r['artifact']} | {r['batch']} | {name} | {timing['p50']:.2f} | "
                             f"{_fmt_parity(r['parity'][name])} |")
    return "\n".join(lines) + "\n"


def problems(result: dict[str, Any]) -> list[str]:
    """Errors of the run: failed sections and configurations, and (dry run) failed parity checks."""
    found = [f"{name}: {sec['error']}" for name, sec in result["sections"].items() if sec["status"] == "failed"]
    rows = [("torch", r) for r in result["sections"].get("torch", {}).get("rows", [])]
    rows += [(f"onnxruntime {p}", r) for p, sec in result["sections"].get("onnxruntime", {}).get("providers", {})
             .items() for r in sec.get("rows", [])]
    rows += [("tensorrt", r) for r in result["sections"].get("tensorrt", {}).get("rows", [])]
    for where, r in rows:
        what = f"{where} {r.get('variant', r.get('artifact'))} batch {r['batch']}"
        if r["status"] == "failed":
            found.append(f"{what}: {r['error']}")
        elif result["dry_run"] and r["status"] == "ran":
            found += [f"{what} {name}: parity {'; '.join(p['failures'])}" for name, p in r["parity"].items()
                      if p.get("judged") and not p["ok"]]
    return found


# -- main --------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="Folder for gpu_check.json and gpu_check.md.")
    parser.add_argument("--dry-run", action="store_true", help="Same code paths on the CPU with a tiny model.")
    parser.add_argument("--device", default="cuda:0", help="GPU to check: cuda or cuda:<i> (ignored by --dry-run).")
    parser.add_argument("--budget", type=float, default=None,
                        help="Seconds the check may take; sections that would overrun are skipped [480, dry run 300].")
    args = parser.parse_args(argv)
    budget = args.budget or (300.0 if args.dry_run else 480.0)
    setup = Setup.dry(budget) if args.dry_run else Setup.full(args.device, budget)
    check = Check(setup, args.dry_run)
    if args.dry_run:
        torch.set_num_threads(1)  # a shared CI machine: correctness of the paths, not speed
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / "artifacts"

    env = check.section("environment", environment)
    if not args.dry_run and not env.get("cuda_available"):
        print("no CUDA GPU visible to torch; use --dry-run for the CPU version", file=sys.stderr)
        return 2
    check.section("gpu_tests", lambda: gpu_tests(setup.gpu_tests, timeout_s=max(30.0, min(240.0, check.left() - 180))),
                  needs_s=60)

    state: dict[str, Any] = {}

    def prepare() -> dict[str, Any]:
        state["models"] = {"aarm": make_model(setup, "aarm"), "plain": make_model(setup, "none")}
        prep = state["models"]["aarm"][1]
        state["x"] = clips(prep, setup.parity_clips)
        state["refs"] = {name: cpu_reference(model, state["x"]) for name, (model, _) in state["models"].items()}
        return {"models": {name: {"backbone": setup.backbone, "attention": m.aarm_config["attention"],
                                  "parameters": sum(p.numel() for p in m.parameters())}
                           for name, (m, _) in state["models"].items()},
                "input": list(prep.input_shape(1)), "parity_clips": setup.parity_clips}

    check.section("prepare", prepare)
    torch_result = check.section("torch", lambda: torch_section(check, state["models"], state["refs"], state["x"]),
                                 needs_s=30) if "models" in state else {}

    def graphs() -> dict[str, Any]:
        state["graphs"] = export_graphs(check, state["models"], work)
        return {"graphs": {n: {k: str(p) for k, p in g.items()} for n, g in state["graphs"].items()}}

    consumers = [p for p in setup.ort_providers if p == "cpu" or env.get("ort_usable", {}).get(p)]
    if tensorrt_version() is not None:
        consumers.append("tensorrt engines")
    if "models" in state and consumers:
        check.section("export", graphs, needs_s=60)
    elif "models" in state:
        check.sections["export"] = {
            "status": "skipped", "seconds": 0.0,
            "reason": "nothing here runs ONNX graphs on a GPU: no usable onnxruntime CUDA/TensorRT provider and "
                      "tensorrt is not importable (the dry run covers the export, onnxruntime and build-plan path)"}
        for name in ("onnxruntime", "tensorrt"):
            check.sections[name] = {"status": "skipped", "seconds": 0.0, "reason": "no graphs exported (see export)"}
    if "graphs" in state:
        check.section("onnxruntime", lambda: ort_section(check, state["graphs"], state["refs"], state["x"]), needs_s=30)
        check.section("tensorrt", lambda: tensorrt_section(check, state["graphs"], state["refs"], state["x"]),
                      needs_s=120)
    result = {"kind": "gpu_check", "version": 1, "created": datetime.now(UTC).isoformat(timespec="seconds"),
              "dry_run": args.dry_run, "setup": asdict(check.setup), "sections": check.sections,
              "goal": goal(torch_result, args.dry_run), "seconds": round(time.perf_counter() - check.started, 1)}
    write_json(args.out / "gpu_check.json", result)
    write_text(args.out / "gpu_check.md", markdown(result))
    print(markdown(result))
    print(f"wrote {args.out / 'gpu_check.json'} and {args.out / 'gpu_check.md'} in {result['seconds']} s")
    found = problems(result)
    for line in found:
        print(f"error: {line}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())

"""Latency, throughput, memory and FLOP-efficiency benchmark of one or more runners, interleaved.

Several runners are measured in one process in round-robin trials (each round runs every runner for a
slice of its iterations, the order rotating per round), so a slow phase of a shared machine hits all of
them alike and each one's ratio to the first runner holds even when absolute times wander.

Per (runner, batch): latency min/p50/p90/p99/mean/std in ms with every raw per-iteration sample,
throughput in clips/s and frames/s (frames per clip from the preprocessing), peak memory during
warm-up (CPU: growth of the resident set's high-water mark; CUDA: allocator peak), and the model's FLOPs
per clip times throughput as a fraction of a large matrix multiply timed in the same run.
"""

import math
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from aarm.errors import ConfigError
from runtime.runner import Runner

BENCH_VERSION = 1
ProgressFn = Callable[[str], None]


# -- statistics --------------------------------------------------------------------------------------
def latency_stats(samples_ms: Sequence[float]) -> dict[str, float]:
    """min / p50 / p90 / p99 / mean / std of latencies in ms (percentiles by linear interpolation)."""
    if len(samples_ms) == 0:
        raise ConfigError("no latency samples to summarise")
    a = np.asarray(samples_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"min": float(a.min()), "p50": float(p50), "p90": float(p90), "p99": float(p99),
            "mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0, "max": float(a.max())}


# -- host --------------------------------------------------------------------------------------------
def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def host_info() -> dict[str, Any]:
    """CPU, core count, OS, Python and the versions of the inference libraries."""
    info: dict[str, Any] = {
        "cpu": cpu_model(), "cores": os.cpu_count(), "machine": platform.machine(),
        "system": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
        "numpy": np.__version__, "torch": _version("torch"),
        "onnxruntime": _version("onnxruntime-gpu") or _version("onnxruntime"), "tensorrt": _version("tensorrt"),
    }
    gpu = _gpu_name()
    if gpu:
        info["gpu"] = gpu
    return info


def _torch_cuda() -> Any:
    """torch, if it is imported already or importable and has a usable CUDA device; else None."""
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def _gpu_name() -> str | None:
    torch = _torch_cuda()
    return torch.cuda.get_device_name(0) if torch is not None else None


# -- memory ------------------------------------------------------------------------------------------
def _proc_status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class _MemoryProbe:
    """Peak memory growth across a block: CPU resident set, and the CUDA allocator on a CUDA runner."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.cuda = _torch_cuda() if runner.device.startswith("cuda") else None

    def __enter__(self) -> "_MemoryProbe":
        self.method = "rss_hwm_delta"
        try:  # Linux: writing 5 resets VmHWM to the current RSS
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.base_kb = _proc_status_kb("VmRSS")
        except OSError:
            self.base_kb = None
        if self.base_kb is None:
            self.method = "ru_maxrss_delta"
            self.base_kb = self._maxrss_kb()
        if self.cuda is not None:
            dev = self.runner.device
            self.cuda.cuda.synchronize(dev)
            if self.runner.backend == "torch":
                self.cuda.cuda.reset_peak_memory_stats(dev)
                self.gpu_base = self.cuda.cuda.memory_allocated(dev)
            else:
                free, total = self.cuda.cuda.mem_get_info(dev)
                self.gpu_base = total - free
        return self

    @staticmethod
    def _maxrss_kb() -> int:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak // 1024 if sys.platform == "darwin" else peak

    def __exit__(self, *exc: object) -> None:
        peak_kb = _proc_status_kb("VmHWM") if self.method == "rss_hwm_delta" else self._maxrss_kb()
        self.result: dict[str, Any] = {"method": self.method,
                                       "cpu_peak_delta_mb": max(0, (peak_kb or 0) - self.base_kb) / 1024}
        if self.cuda is not None:
            dev = self.runner.device
            self.cuda.cuda.synchronize(dev)
            if self.runner.backend == "torch":
                used, how = self.cuda.cuda.max_memory_allocated(dev), "torch_max_memory_allocated"
            else:
                free, total = self.cuda.cuda.mem_get_info(dev)
                used, how = total - free, "device_used_delta"
            self.result.update(gpu_method=how, gpu_peak_delta_mb=max(0, used - self.gpu_base) / 2**20)


# -- timing ------------------------------------------------------------------------------------------
class _Timer:
    """Times one `infer` call in ms: CUDA events on a CUDA runner, perf_counter otherwise."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.cuda = _torch_cuda() if runner.device.startswith("cuda") else None
        self.method = "cuda_event" if self.cuda is not None else "perf_counter"

    def __call__(self, feed: dict[str, np.ndarray]) -> float:
        if self.cuda is not None:
            start = self.cuda.cuda.Event(enable_timing=True)
            end = self.cuda.cuda.Event(enable_timing=True)
            start.record()
            self.runner.infer(feed)
            end.record()
            end.synchronize()
            return float(start.elapsed_time(end))
        t0 = time.perf_counter_ns()
        self.runner.infer(feed)
        return (time.perf_counter_ns() - t0) / 1e6


# -- FLOPs -------------------------------------------------------------------------------------------
@dataclass
class FlopCount:
    """Multiply-add FLOPs (2 per MAC) of Conv/Gemm/MatMul nodes; `skipped` nodes lacked shapes."""

    flops: int
    counted: int
    skipped: int


def count_onnx_flops(path: str | Path, batch: int = 1) -> FlopCount:
    """FLOPs of one forward pass of an ONNX graph at `batch`, from shape inference.

    Counts 2 * MACs of Conv, ConvTranspose, Gemm, MatMul and their quantized forms (QLinearConv,
    QLinearMatMul, ConvInteger, MatMulInteger); element-wise work is left out (it is memory-bound).
    """
    import onnx
    from onnx import numpy_helper, shape_inference

    model = onnx.load(str(path), load_external_data=False)
    for value in model.graph.input:
        for i, dim in enumerate(value.type.tensor_type.shape.dim):
            if not dim.HasField("dim_value"):
                dim.ClearField("dim_param")
                dim.dim_value = batch if i == 0 else 1
    model = shape_inference.infer_shapes(model, data_prop=True)
    shapes: dict[str, list[int | None]] = {}
    for value in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute:
            attr = node.attribute[0]
            if attr.name == "value":
                shapes[node.output[0]] = list(numpy_helper.to_array(attr.t).shape)

    def known(name: str) -> list[int] | None:
        dims = shapes.get(name)
        return None if dims is None or any(d is None for d in dims) else dims  # type: ignore[return-value]

    def attr(node: Any, name: str, default: int) -> int:
        for a in node.attribute:
            if a.name == name:
                return int(a.i)
        return default

    macs, counted, skipped = 0, 0, 0
    for node in model.graph.node:
        op = node.op_type
        if op in ("Conv", "ConvInteger", "QLinearConv", "ConvTranspose"):
            w = known(node.input[3] if op == "QLinearConv" else node.input[1])
            x, y = known(node.input[0]), known(node.output[0])
            if w is None or y is None or (op == "ConvTranspose" and x is None):
                skipped += 1
                continue
            if op == "ConvTranspose":
                macs += math.prod(x) * math.prod(w[1:])
            else:
                macs += math.prod(y) * math.prod(w[1:])
        elif op in ("MatMul", "MatMulInteger", "QLinearMatMul", "Gemm"):
            a = known(node.input[0])
            y = known(node.output[0])
            if a is None or y is None:
                skipped += 1
                continue
            k = a[0] if op == "Gemm" and attr(node, "transA", 0) else a[-1]
            macs += math.prod(y) * k
        else:
            continue
        counted += 1
    return FlopCount(flops=2 * macs, counted=counted, skipped=skipped)


def count_torch_flops(model: Any, input_shape: Sequence[int]) -> int:
    """FLOPs of one forward pass of an nn.Module on a zero input, by torch.utils.flop_counter."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    param = next(model.parameters(), None)
    x = torch.zeros(tuple(input_shape), device=param.device if param is not None else "cpu")
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(x)
    return int(counter.get_total_flops())


def runner_flops(runner: Runner) -> int | None:
    """FLOPs per clip (batch 1) of what a runner runs: its ONNX graph, its engine's parent ONNX graph or
    its PyTorch module; None when none of them is at hand."""
    if runner.backend == "torch" and hasattr(runner, "model"):
        return count_torch_flops(runner.model, runner.input_specs[0].concrete(1))
    onnx_path = None
    if runner.backend == "onnxruntime" and runner.path is not None:
        onnx_path = runner.path
    elif runner.sidecar is not None and runner.sidecar.parent and str(runner.sidecar.parent).endswith(".onnx"):
        parent = Path(runner.sidecar.parent)
        if not parent.is_absolute() and runner.path is not None:
            parent = runner.path.parent / parent
        onnx_path = parent if parent.is_file() else None
    if onnx_path is None:
        return None
    count = count_onnx_flops(onnx_path)
    return count.flops if count.counted else None


def matmul_rate(device: str = "cpu", *, n: int = 1024, dtype: str = "float32", repeats: int = 8) -> float:
    """FLOP/s of an n x n matrix multiply, best of `repeats` (numpy on the CPU, torch on CUDA)."""
    flops = 2.0 * n**3
    if device.startswith("cuda"):
        torch = _torch_cuda()
        if torch is None:
            raise ConfigError(f"matmul reference on {device} needs PyTorch with CUDA")
        tdtype = {"float32": torch.float32, "float16": torch.float16}[dtype]
        a = torch.randn(n, n, device=device, dtype=tdtype)
        b = torch.randn(n, n, device=device, dtype=tdtype)
        a @ b
        best = math.inf
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            a @ b
            end.record()
            end.synchronize()
            best = min(best, start.elapsed_time(end) / 1e3)
        return flops / best
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32).astype(dtype)
    b = rng.standard_normal((n, n), dtype=np.float32).astype(dtype)
    a @ b
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return flops / best


# -- the benchmark -----------------------------------------------------------------------------------
def _trial_counts(iterations: int, rounds: int) -> list[int]:
    base, extra = divmod(iterations, rounds)
    return [base + (1 if r < extra else 0) for r in range(rounds)]


def benchmark(
    runners: Sequence[Runner],
    *,
    batches: Sequence[int] = (1,),
    iterations: int | None = None,
    duration: float | None = None,
    warmup: int = 5,
    rounds: int = 5,
    flops: bool = True,
    reference: bool = True,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Benchmark active-able runners at each batch size, interleaved; returns the JSON-ready result.

    iterations: timed calls per (runner, batch) (default 50), split over `rounds` round-robin rounds; or duration:
    seconds per (runner, batch), split likewise (at least one call per round). warmup: untimed calls
    first, during which peak memory is measured. flops: count each model's FLOPs; reference: time a
    large matmul (before and after the runners; the best rate counts) for the FLOP-efficiency column.
    progress: called once per (round, runner) slice.
    """
    if not runners:
        raise ConfigError("nothing to benchmark: no runners given")
    if iterations is not None and duration is not None:
        raise ConfigError("give either iterations or duration, not both")
    if duration is None:
        iterations = 50 if iterations is None else iterations
    if iterations is not None and iterations < 1:
        raise ConfigError(f"iterations must be >= 1, got {iterations}")
    if duration is not None and duration <= 0:
        raise ConfigError(f"duration must be > 0 seconds, got {duration}")
    if rounds < 1 or warmup < 0 or any(b < 1 for b in batches):
        raise ConfigError("rounds and batch sizes must be >= 1 and warmup >= 0")
    rounds = min(rounds, iterations) if iterations is not None else rounds
    rng = np.random.default_rng(seed)

    flop_counts = {id(r): (runner_flops(r) if flops else None) for r in runners}
    refs: dict[tuple[str, str], float] = {}

    def time_references() -> None:  # before and after the runners; the best rate seen counts
        for r in runners if reference else ():
            key = (r.device, "float16" if r.device.startswith("cuda") and r.precision != "fp32" else "float32")
            refs[key] = max(refs.get(key, 0.0), matmul_rate(key[0], dtype=key[1]))

    time_references()

    results: list[dict[str, Any]] = []
    for r in runners:
        r.activate()
    try:
        for batch in batches:
            feeds = {id(r): r.example_feed(batch, rng=rng) for r in runners}
            timers = {id(r): _Timer(r) for r in runners}
            memory: dict[int, dict[str, Any]] = {}
            for r in runners:
                with _MemoryProbe(r) as probe:
                    for _ in range(max(warmup, 1)):
                        r.infer(feeds[id(r)])
                memory[id(r)] = probe.result
            samples: dict[int, list[float]] = {id(r): [] for r in runners}
            counts = _trial_counts(iterations, rounds) if iterations is not None else None
            for rnd in range(rounds):
                order = list(runners[rnd % len(runners):]) + list(runners[: rnd % len(runners)])
                for r in order:
                    timer, feed, out = timers[id(r)], feeds[id(r)], samples[id(r)]
                    if counts is not None:
                        for _ in range(counts[rnd]):
                            out.append(timer(feed))
                    else:
                        deadline = time.perf_counter() + duration / rounds  # type: ignore[operator]
                        out.append(timer(feed))
                        while time.perf_counter() < deadline:
                            out.append(timer(feed))
                    if progress is not None:
                        progress(f"{r.name} batch {batch}")
            first_p50 = None
            for r in runners:
                stats = latency_stats(samples[id(r)])
                first_p50 = first_p50 if first_p50 is not None else stats["p50"]
                clips_per_s = batch * 1e3 / stats["mean"]
                fl = flop_counts[id(r)]
                ref_key = (r.device, "float16" if r.device.startswith("cuda") and r.precision != "fp32" else "float32")
                achieved = fl * clips_per_s if fl else None
                results.append({
                    **r.describe(),
                    "batch": batch,
                    "iterations": len(samples[id(r)]),
                    "timing": timers[id(r)].method,
                    "latency_ms": stats,
                    "samples_ms": [round(s, 6) for s in samples[id(r)]],
                    "throughput": {"clips_per_s": clips_per_s, "frames_per_s": clips_per_s * r.frames_per_clip},
                    "ratio_to_first": stats["p50"] / first_p50,
                    "flops_per_clip": fl,
                    "flops_per_s": achieved,
                    "fraction_of_matmul": (achieved, ref_key),  # resolved once the references are final
                    "memory": memory[id(r)],
                })
    finally:
        for r in runners:
            r.deactivate()
    time_references()
    for row in results:
        achieved, ref_key = row["fraction_of_matmul"]
        row["fraction_of_matmul"] = achieved / refs[ref_key] if achieved and ref_key in refs else None
    return {
        "kind": "bench",
        "version": BENCH_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": host_info(),
        "settings": {"batches": list(batches), "iterations": iterations, "duration": duration, "warmup": warmup,
                     "rounds": rounds, "seed": seed},
        "reference": [{"device": d, "dtype": t, "matmul_flops_per_s": v} for (d, t), v in refs.items()],
        "results": results,
    }


def bench_rows(result: dict[str, Any]) -> list[tuple[str, ...]]:
    """Table rows of a bench result: one per (runner, batch)."""
    rows = []
    for r in result["results"]:
        lat, thr = r["latency_ms"], r["throughput"]
        frac = r.get("fraction_of_matmul")
        mem = r["memory"].get("gpu_peak_delta_mb", r["memory"]["cpu_peak_delta_mb"])
        rows.append((
            r["name"], r["provider"].removesuffix("ExecutionProvider"), r["precision"], str(r["batch"]),
            f"{lat['p50']:.2f}", f"{lat['p90']:.2f}", f"{lat['p99']:.2f}", f"{thr['clips_per_s']:.1f}",
            f"{thr['frames_per_s']:.0f}",
            f"{r['ratio_to_first']:.2f}x",
            f"{r['flops_per_s'] / 1e9:.1f}" if r.get("flops_per_s") else "-",
            f"{100 * frac:.0f}%" if frac else "-",
            f"{mem:.0f}",
        ))
    return rows


BENCH_COLUMNS = ["artifact", "provider", "precision", "batch", "p50 ms", "p90 ms", "p99 ms", "clips/s", "frames/s",
                 "vs first", "GFLOP/s", "of matmul", "peak MB"]

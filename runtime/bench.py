"""Latency, throughput, memory and FLOP-efficiency benchmark of one or more runners, interleaved.

Method (docs/runtime.md, "Benchmarking"): all runners are measured in one process in rounds; each round
runs every runner for a slice of its timed calls, the order rotating per round, so a slow phase of a
shared machine hits all of them alike. After every switch to a runner its first call (and any further
`switch_warmup` calls) is untimed: it pays for caches and thread pools that the other runners took over,
and is reported apart as the switch cost. Before that first call the machine idles SWITCH_IDLE_S: onnxruntime's
intra-op workers spin waiting for more work after a call (its default), and the next runner's first calls
shared the cores with them. The untimed calls go on for at least SWITCH_WARM_S: calls after a pause run slow
for a while whatever their length (both measured in docs/runtime.md). Every column comes from one statistic,
the median (p50) of the timed calls: clips/s = batch / p50, frames/s = clips/s x frames per clip, speed-up =
p50 of the first runner / p50 of this one (higher is faster). Each speed-up has a bootstrap interval over the
interleaved rounds (rounds drawn with replacement, the same rounds for both runners, calls drawn within each),
flagged as wide when it spans more than WIDE_INTERVAL of the value.

Per (runner, batch) the result also holds min/p90/p99/mean/std and every raw sample; peak memory of the
artifact measured in a fresh process (resident-set high-water mark over that process's footprint before
it opened the artifact; CUDA: allocator peak or device memory in use); and the model's FLOPs per clip
times throughput as a fraction of a large matrix multiply timed in the same run. The host, thread
counts, versions and how busy the machine was (runtime.host.CpuUse) are recorded with it.
"""

import functools
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from aarm.errors import ConfigError
from aarm.progress import Progress
from runtime.artifact import file_sha256
from runtime.bench_result import (
    BenchResult,
    BenchRow,
    BenchSettings,
    MatmulReference,
    PeakMemory,
    Speedup,
    Throughput,
)
from runtime.host import CpuUse, host_info, thread_settings, usable_cores
from runtime.runner import Runner

# A speed-up whose interval spans more than this fraction of its value ((high - low) / value) is flagged
# "wide": the run cannot tell it apart from values 10% away; rerun with more rounds on a quieter machine.
WIDE_INTERVAL = 0.10


# -- statistics --------------------------------------------------------------------------------------
def latency_stats(samples_ms: Sequence[float]) -> dict[str, float]:
    """min / p50 / p90 / p99 / mean / std / max of latencies in ms (percentiles by linear interpolation)."""
    if len(samples_ms) == 0:
        raise ConfigError("no latency samples to summarise")
    a = np.asarray(samples_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"min": float(a.min()), "p50": float(p50), "p90": float(p90), "p99": float(p99),
            "mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0, "max": float(a.max())}


def _bootstrap_medians(rounds: Sequence[Sequence[float]], picks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Median of each bootstrap resample (B,): resample b takes the rounds `picks[b]` (B, R indices) and,
    within each, as many calls as that round had, drawn with replacement."""
    n = np.array([len(r) for r in rounds])
    width = int(n.max())
    data = np.full((len(rounds), width), np.nan)
    for i, r in enumerate(rounds):
        data[i, : len(r)] = r
    counts = n[picks]  # (B, R)
    within = np.floor(rng.random((*picks.shape, width)) * counts[..., None]).astype(np.int64)  # (B, R, W)
    values = data[picks[..., None], within]
    values[np.arange(width) >= counts[..., None]] = np.nan  # a round with fewer calls than the widest
    return np.nanmedian(values.reshape(len(picks), -1), axis=1)


def speedup_interval(
    baseline: Sequence[Sequence[float]],
    other: Sequence[Sequence[float]],
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Speed-up of `other` over `baseline` (median latency of baseline / median latency of other; higher is
    faster) with its percentile bootstrap interval; returns (speed-up, low, high).

    Both are lists of rounds, each a list of latencies (ms) timed in the same interleaved round. The
    bootstrap is paired and two-stage: each resample draws rounds with replacement (the same rounds for
    both runners, so a slow phase of the machine moves both), then calls with replacement within each
    drawn round. Seeded, so the same samples always give the same interval.
    """
    if len(baseline) != len(other) or not baseline or any(len(r) == 0 for r in [*baseline, *other]):
        raise ConfigError("speed-up needs the same rounds, each with at least one call, for both runners")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be between 0 and 1, got {confidence}")
    value = float(np.median(np.concatenate(baseline)) / np.median(np.concatenate(other)))
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(baseline), size=(resamples, len(baseline)))
    ratios = _bootstrap_medians(baseline, picks, rng) / _bootstrap_medians(other, picks, rng)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(ratios, [alpha, 1 - alpha])
    return value, float(min(low, value)), float(max(high, value))


# -- host --------------------------------------------------------------------------------------------
def _torch_cuda() -> Any:
    """torch, if it is imported already or importable and has a usable CUDA device; else None."""
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


# -- memory ------------------------------------------------------------------------------------------
def _reopen_spec(runner: Runner) -> dict[str, Any] | None:
    """How to open the runner's artifact again in another process (None for a runner with no file)."""
    if runner.path is None or runner.backend not in ("torch", "onnxruntime", "tensorrt"):
        return None
    spec: dict[str, Any] = {"path": str(Path(runner.path).resolve()), "backend": runner.backend,
                            "threads": getattr(runner, "threads", None)}
    if runner.backend == "onnxruntime":
        spec["providers"] = list(getattr(runner, "requested_providers", None) or []) or None
        spec["inter_threads"] = getattr(runner, "inter_threads", None)
        spec["optimization"] = getattr(runner, "optimization", "all")
    else:
        spec["device"] = runner.device
    if runner.backend == "torch":
        given = {"precision": runner.precision, "channels_last": getattr(runner, "channels_last", False),
                 "cuda_graphs": getattr(runner, "cuda_graphs", False)}
        spec["torch_options"] = {k: v for k, v in given.items() if v not in (False, "fp32")}  # beyond the defaults
    if runner.preprocessing:  # the K or T chosen for this run (runtime.temporal.choose_temporal)
        prep = runner.preprocessing[0]
        spec["temporal"] = {"segments": prep.segments} if prep.layout == "NKCHW" else {"frames": prep.frames}
    return spec


class _MemoryProbe:
    """Peak memory of running one artifact, measured in a fresh Python process.

    In-process figures cannot be trusted: the resident set's high-water mark of a process that already
    holds other models and arenas does not move for a new one (it read 0 MB in every row). The child
    imports the backend, notes its resident set, opens and activates the artifact, then per batch (in
    ascending order) resets the high-water mark (Linux: /proc/self/clear_refs), runs `warmup` calls and
    reads it back: peak = high-water mark - footprint before opening, so it counts weights, session and
    the largest working set of a call. CUDA: the PyTorch allocator's peak for a checkpoint, else the rise
    in device memory in use. `result` maps batch -> {"cpu_peak_mb", "gpu_peak_mb"?} plus "method"; a
    runner that has no artifact file is not measured (`result` says why).
    """

    def __init__(self, runner: Runner, batches: Sequence[int], warmup: int, *, timeout: float = 600.0) -> None:
        self.runner, self.batches, self.warmup, self.timeout = runner, sorted(set(batches)), warmup, timeout

    def measure(self) -> dict[str, Any]:
        spec = _reopen_spec(self.runner)
        if spec is None:
            return {"method": None, "reason": "no artifact file to open in a fresh process"}
        spec.update(batches=self.batches, warmup=max(self.warmup, 1))
        root = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        try:
            proc = subprocess.run([sys.executable, "-c", "from runtime.bench import _memory_child; _memory_child()"],
                                  input=json.dumps(spec), capture_output=True, text=True, env=env,
                                  timeout=self.timeout, check=False)
        except subprocess.TimeoutExpired:
            return {"method": None, "reason": f"the memory probe took over {self.timeout:.0f} s"}
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
            return {"method": None, "reason": f"the memory probe failed: {last}"}
        return json.loads(proc.stdout.strip().splitlines()[-1])


def _proc_status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    """Reset this process's resident high-water mark to its current resident set (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _memory_child() -> None:
    """The fresh process of `_MemoryProbe`: reads the spec from stdin, prints one JSON line."""
    import resource

    spec = json.loads(sys.stdin.read())
    backend = spec["backend"]
    if backend == "torch":
        import runtime.backends.torch_backend  # noqa: F401 - its imports are the footprint, not the artifact's
    elif backend == "onnxruntime":
        import runtime.backends.onnxruntime_backend  # noqa: F401
    from runtime.backends import open_runner

    def rss_kb() -> int:
        kb = _proc_status_kb("VmRSS")
        return kb if kb is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def hwm_kb() -> int:
        kb = _proc_status_kb("VmHWM")
        return kb if kb is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    options: dict[str, Any] = {"threads": spec.get("threads")}
    if spec.get("providers"):
        options["providers"] = spec["providers"]
    if backend == "onnxruntime":
        options.update(inter_threads=spec.get("inter_threads"), optimization=spec.get("optimization") or "all")
    if spec.get("device"):
        options["device"] = spec["device"]
    options.update(spec.get("torch_options") or {})
    if backend == "tensorrt":
        options = {"device": spec["device"]}
    cuda = None
    if str(spec.get("device") or "").startswith("cuda") or any("cuda" in p.lower() or "tensorrt" in p.lower()
                                                                for p in spec.get("providers") or []):
        cuda = _torch_cuda()
    if cuda is not None:
        cuda.cuda.init()
        free, total = cuda.cuda.mem_get_info()
        gpu_base = total - free
    base = rss_kb()
    runner = open_runner(spec["path"], backend=backend, **options)
    if spec.get("temporal"):
        from runtime.temporal import choose_temporal

        choose_temporal(runner, **spec["temporal"])
    resets = True
    out: dict[str, Any] = {"method": "fresh_process_rss_hwm", "batches": {}}
    rng = np.random.default_rng(0)
    with runner:
        for batch in spec["batches"]:
            feed = runner.example_feed(batch, rng=rng)
            resets = _reset_hwm() and resets
            if cuda is not None and backend == "torch":
                cuda.cuda.reset_peak_memory_stats()
            for _ in range(spec["warmup"]):
                runner.infer(feed)
            row: dict[str, Any] = {"cpu_peak_mb": max(0, hwm_kb() - base) / 1024}
            if cuda is not None:
                cuda.cuda.synchronize()
                if backend == "torch":
                    row.update(gpu_peak_mb=cuda.cuda.max_memory_allocated() / 2**20, gpu_method="torch_max_allocated")
                else:
                    free, total = cuda.cuda.mem_get_info()
                    row.update(gpu_peak_mb=max(0, total - free - gpu_base) / 2**20, gpu_method="device_used_delta")
            out["batches"][str(batch)] = row
    if not resets:  # the high-water mark only grows: each batch's figure is the peak up to that batch
        out["method"] = "fresh_process_rss_hwm_cumulative"
    print(json.dumps(out))


# -- timing ------------------------------------------------------------------------------------------
def timing_gpu(device: str) -> int | None:
    """The GPU index whose stream CUDA events time a runner on `device` ("cuda:<i>" -> i, "cuda" -> 0, the
    runners' convention); None for a CPU runner."""
    if not device.startswith("cuda"):
        return None
    from runtime.tensorrt_engine import cuda_device_index

    return cuda_device_index(device)


class _Timer:
    """Times one `infer` call in ms: CUDA events on a CUDA runner, recorded on its own GPU's current stream
    (under `torch.cuda.device(i)`, so a runner on cuda:1 is not timed on cuda:0), perf_counter otherwise."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.gpu = timing_gpu(runner.device)
        self.cuda = _torch_cuda() if self.gpu is not None else None
        self.method = "cuda_event" if self.cuda is not None else "perf_counter"

    def __call__(self, feed: dict[str, np.ndarray]) -> float:
        if self.cuda is not None:
            with self.cuda.cuda.device(self.gpu):
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


def count_onnx_flops(
    path: str | Path, batch: int = 1, shapes: Sequence[Sequence[int | str]] | None = None,
) -> FlopCount:
    """FLOPs of one forward pass of an ONNX graph at `batch`, from shape inference.

    The inputs' dynamic axes other than the batch (K segments, T frames) take their sizes from `shapes` (one
    per input, e.g. a runner's specs), else from the graph's sidecar (what its preprocessing samples); a
    dynamic axis with no known size is an error, since guessing one would scale the count.
    Counts 2 * MACs of Conv, ConvTranspose, Gemm, MatMul and their quantized forms (QLinearConv,
    QLinearMatMul, ConvInteger, MatMulInteger); element-wise work is left out (it is memory-bound).
    """
    from onnx import numpy_helper, shape_inference

    from runtime.artifact import read_sidecar, sidecar_path
    from runtime.onnx_file import load_onnx

    model = load_onnx(path, load_external_data=False)
    if shapes is None and sidecar_path(path).is_file():
        shapes = read_sidecar(path, verify=False).input_shapes()
    for k, value in enumerate(model.graph.input):
        for i, dim in enumerate(value.type.tensor_type.shape.dim):
            if not dim.HasField("dim_value"):
                known = shapes[k][i] if shapes is not None and k < len(shapes) else None
                if i > 0 and not isinstance(known, int):
                    raise ConfigError(f"{path}: input {value.name} axis {i} ({dim.dim_param or '?'}) is dynamic "
                                      "and no size is known for it; give the input shapes")
                dim.ClearField("dim_param")
                dim.dim_value = batch if i == 0 else int(known)  # type: ignore[arg-type]
    _shape_standins(model)
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


def _shape_standins(model: Any) -> None:
    """Replace, in place, AARM's fused CPU ops (`export.kernels`, domain com.aarm), which onnx's shape inference
    does not know, by standard ops with the same output shapes, so the convolutions after them keep their shapes
    and are counted: AarmGate(M, ...) -> Identity(M); AarmPool(M) -> (GlobalAveragePool(M) (N, C, 1, ...), a
    channel ReduceMean (N, 1, *S)). Their own work is element-wise and not counted anyway."""
    from onnx import TensorProto, helper

    from runtime.kernel_library import DOMAIN

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    nodes = []
    for node in model.graph.node:
        if node.domain == DOMAIN and node.op_type == "AarmGate":
            nodes.append(helper.make_node("Identity", [node.input[0]], [node.output[0]], name=node.name))
        elif node.domain == DOMAIN and node.op_type == "AarmPool":
            m, (g, c) = node.input[0], node.output
            nodes.append(helper.make_node("GlobalAveragePool", [m], [g], name=f"{node.name}/global"))
            if opset >= 18:
                axes = f"{node.name}/axes"
                model.graph.initializer.append(helper.make_tensor(axes, TensorProto.INT64, [1], [1]))
                nodes.append(helper.make_node("ReduceMean", [m, axes], [c], name=f"{node.name}/channel"))
            else:
                nodes.append(helper.make_node("ReduceMean", [m], [c], axes=[1], name=f"{node.name}/channel"))
        else:
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)


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
    """FLOPs per clip (batch 1) of what a runner runs: its ONNX graph, its engine's parent ONNX graph (only
    with the sha256 its sidecar records) or its PyTorch module; None when none of them is at hand."""
    if runner.backend == "torch" and hasattr(runner, "model"):
        return count_torch_flops(runner.model, runner.input_specs[0].concrete(1))
    onnx_path = None
    if runner.backend == "onnxruntime" and runner.path is not None:
        onnx_path = runner.path
    elif runner.sidecar is not None and runner.sidecar.parent and str(runner.sidecar.parent).endswith(".onnx"):
        parent = Path(runner.sidecar.parent)
        if not parent.is_absolute() and runner.path is not None:
            parent = runner.path.parent / parent
        # the sidecar's parent is only the engine's graph if it has the recorded sha256: no count beats a wrong one
        want = runner.sidecar.parent_sha256
        onnx_path = parent if want and parent.is_file() and file_sha256(parent) == want else None
    if onnx_path is None:
        return None
    count = count_onnx_flops(onnx_path, shapes=[spec.concrete(1) for spec in runner.input_specs])
    return count.flops if count.counted and not count.skipped else None  # a partial count would be a wrong rate


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


def _reference_key(runner: Runner) -> tuple[str, str]:
    return runner.device, "float16" if runner.device.startswith("cuda") and runner.precision != "fp32" else "float32"


SWITCH_IDLE_S = 0.05  # longer than onnxruntime's workers spin after a call (measured: docs/runtime.md, "Benchmarking")
SWITCH_WARM_S = 0.1  # calls after a pause run slow for 30-100 ms (measured: docs/runtime.md, "Benchmarking")


def settle(call: Callable[[], float], calls: int = 1, warm_s: float | None = None) -> float:
    """The untimed calls after a switch to a runner: `call()` (one timed run, returning its milliseconds) at
    least `calls` times and for `warm_s` (default SWITCH_WARM_S); returns the first call's milliseconds, the
    switch cost.

    Calls right after a pause in a runner's work run slower for 30-100 ms whatever their length, so a fixed
    count of warm-up calls left short calls' first timed ones slow and biased speed-ups against short calls.
    """
    warm_s = SWITCH_WARM_S if warm_s is None else warm_s
    start = time.perf_counter()
    first = call()
    done = 1
    while done < calls or time.perf_counter() - start < warm_s:
        call()
        done += 1
    return first


def switch_to(call: Callable[[], float]) -> float:
    """A switch to another runner outside `benchmark`: SWITCH_IDLE_S idle (the last runner's spinning threads
    stop), then `settle(call)`; returns the first call's milliseconds."""
    time.sleep(SWITCH_IDLE_S)
    return settle(call)


def benchmark(
    runners: Sequence[Runner],
    *,
    batches: Sequence[int] = (1,),
    iterations: int | None = None,
    duration: float | None = None,
    warmup: int = 5,
    rounds: int = 10,
    switch_warmup: int = 1,
    flops: bool = True,
    reference: bool = True,
    memory: bool = True,
    confidence: float = 0.95,
    seed: int = 0,
    progress: Progress | None = None,
) -> BenchResult:
    """Benchmark runners at each batch size, interleaved; `to_json()` of the result is the `kind: bench` file.

    iterations: timed calls per (runner, batch) (default 50), split over `rounds` interleaved rounds (at most
    one round per call); or duration: seconds of timed calls per (runner, batch), split likewise (at least
    one call per round). warmup: untimed calls per runner before the first round. switch_warmup: untimed
    calls each time a round switches to a runner; the first of them is timed apart as the switch cost.
    memory: measure each artifact's peak memory in a fresh process (`_MemoryProbe`). flops: count each
    model's FLOPs; reference: time a large matmul (before and after the runners; the best rate counts)
    for the FLOP-efficiency column. confidence: of the speed-up intervals. progress: `progress("peak memory",
    probes done, runners)` after each memory probe, `progress("<runner name> batch <b>", rounds done, rounds)`
    after each (round, runner) slice.
    """
    iterations, rounds = _checked_counts(runners, batches, iterations, duration, warmup, rounds, switch_warmup)
    rng = np.random.default_rng(seed)
    memory_of = _measure_memory(runners, batches, warmup, progress) if memory else [NOT_MEASURED] * len(runners)
    flop_counts = [runner_flops(r) if flops else None for r in runners]
    refs = _matmul_rates(runners if reference else [], {})  # before and after the runners; the best rate counts
    timed: list[_Timed] = []
    for r in runners:
        r.activate()
    try:
        threads = thread_settings()
        with CpuUse() as cpu_use:
            for batch in batches:
                timed += _bench_batch(runners, batch, rng=rng, iterations=iterations, duration=duration,
                                      warmup=warmup, rounds=rounds, switch_warmup=switch_warmup,
                                      confidence=confidence, seed=seed, progress=progress)
    finally:
        for r in runners:
            r.deactivate()
    refs = _matmul_rates(runners if reference else [], refs)
    n = len(runners)  # timed: per batch, one per runner in the runners' order
    rows = [_row(t, flop_counts[i % n], refs.get(_reference_key(t.runner)), memory_of[i % n])
            for i, t in enumerate(timed)]
    settings = BenchSettings(batches=list(batches), iterations=iterations, duration=duration, warmup=warmup,
                             rounds=rounds, switch_warmup=switch_warmup, statistic="median", confidence=confidence,
                             wide_interval=WIDE_INTERVAL, memory=memory, seed=seed, switch_idle_s=SWITCH_IDLE_S,
                             switch_warm_s=SWITCH_WARM_S)
    return BenchResult(created=datetime.now(UTC).isoformat(timespec="seconds"), host=host_info(), threads=threads,
                       load=cpu_use.result(), settings=settings,
                       reference=[MatmulReference(d, t, v) for (d, t), v in refs.items()], rows=rows)


NOT_MEASURED: dict[str, Any] = {"method": None, "reason": "not asked for"}


def _checked_counts(
    runners: Sequence[Runner], batches: Sequence[int], iterations: int | None, duration: float | None, warmup: int,
    rounds: int, switch_warmup: int,
) -> tuple[int | None, int]:
    """The timed calls per (runner, batch) (default 50 unless a duration is given) and the rounds they are split
    over (no more rounds than calls); a ConfigError for a setting out of range."""
    if not runners:
        raise ConfigError("nothing to benchmark: no runners given")
    if iterations is not None and duration is not None:
        raise ConfigError("give either iterations or duration, not both")
    if duration is None:
        iterations = 50 if iterations is None else iterations
    if iterations is not None and iterations < 1:
        raise ConfigError(f"iterations must be >= 1, got {iterations}")
    if duration is not None and not duration > 0:
        raise ConfigError(f"duration must be > 0 seconds, got {duration}")
    for name, value in (("rounds", rounds), ("warmup", warmup), ("switch_warmup", switch_warmup)):
        if value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")
    if not batches or any(b < 1 for b in batches):
        raise ConfigError(f"batch sizes must be >= 1, got {list(batches)}")
    return iterations, min(rounds, iterations) if iterations is not None else rounds


def _measure_memory(
    runners: Sequence[Runner], batches: Sequence[int], warmup: int, progress: Progress | None,
) -> list[dict[str, Any]]:
    """Each runner's peak memory per batch (`_MemoryProbe`), before any timing: the probes' processes run side
    by side, one per usable core."""
    memory_of: list[dict[str, Any]] = [NOT_MEASURED] * len(runners)
    with ThreadPoolExecutor(max_workers=max(1, min(len(runners), len(usable_cores())))) as pool:
        futures = {pool.submit(_MemoryProbe(r, batches, warmup).measure): k for k, r in enumerate(runners)}
        for done, future in enumerate(as_completed(futures), start=1):
            memory_of[futures[future]] = future.result()
            if progress is not None:
                progress("peak memory", done, len(runners))
    return memory_of


def _matmul_rates(runners: Sequence[Runner], best: dict[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    """The best matmul rate seen per (device, dtype) of the runners: `best`'s, or a new measurement if higher."""
    rates = dict(best)
    for r in runners:
        key = _reference_key(r)
        rates[key] = max(rates.get(key, 0.0), matmul_rate(key[0], dtype=key[1]))
    return rates


@dataclass
class _Timed:
    """The calls of one runner at one batch size, in ms: timed ones per interleaved round, and the first calls
    after a switch (untimed in the statistics); its speed-up over the first runner. `described`: what the runner
    said of itself while active (an onnxruntime session's providers are gone after)."""

    runner: Runner
    described: dict[str, Any]
    batch: int
    timing: str
    rounds_ms: list[list[float]]
    switch_ms: list[float]
    speedup: Speedup


def _row(t: _Timed, flops: int | None, ref: float | None, mem: dict[str, Any]) -> BenchRow:
    """A timed runner's row: statistics and throughput from the median, its FLOP columns (against the matmul
    rate `ref`) and its runner's memory at the row's batch (a `_MemoryProbe` result)."""
    samples = [s for block in t.rounds_ms for s in block]
    stats = latency_stats(samples)
    clips_per_s = t.batch * 1e3 / stats["p50"]
    switch_p50 = float(np.median(t.switch_ms)) if t.switch_ms else None
    achieved = flops * clips_per_s if flops else None
    return BenchRow(
        runner=t.described, threads=t.runner.threads, batch=t.batch, iterations=len(samples),
        timing=t.timing, latency_ms=stats, samples_ms=[round(s, 6) for s in samples],
        rounds_ms=[[round(s, 6) for s in block] for block in t.rounds_ms],
        switch_ms=[round(s, 6) for s in t.switch_ms],
        switch_cost_ms=None if switch_p50 is None else switch_p50 - stats["p50"],
        throughput=Throughput(clips_per_s=clips_per_s, frames_per_s=clips_per_s * t.runner.frames_per_clip),
        speedup=t.speedup, flops_per_clip=flops, flops_per_s=achieved,
        fraction_of_matmul=achieved / ref if achieved and ref else None,
        memory=PeakMemory(method=mem["method"], **mem.get("batches", {}).get(str(t.batch), {}))
        if mem["method"] else PeakMemory(**mem),
    )


def _bench_batch(
    runners: Sequence[Runner],
    batch: int,
    *,
    rng: np.random.Generator,
    iterations: int | None,
    duration: float | None,
    warmup: int,
    rounds: int,
    switch_warmup: int,
    confidence: float,
    seed: int,
    progress: Progress | None,
) -> list[_Timed]:
    """The interleaved rounds of one batch size: the calls of each runner, in the runners' order."""
    feeds = [r.example_feed(batch, rng=rng) for r in runners]
    timers = [_Timer(r) for r in runners]
    for r, feed in zip(runners, feeds, strict=True):
        for _ in range(warmup):
            r.infer(feed)
    timed: list[list[list[float]]] = [[] for _ in runners]  # [runner][round] -> calls in ms
    switch: list[list[float]] = [[] for _ in runners]
    counts = _trial_counts(iterations, rounds) if iterations is not None else None
    previous = None
    for rnd in range(rounds):
        shift = rnd % len(runners)
        for k in [*range(shift, len(runners)), *range(shift)]:
            timer, feed = timers[k], feeds[k]
            if previous is not None and previous != k:
                time.sleep(SWITCH_IDLE_S)  # the last runner's spinning threads stop before this one is timed
            # untimed, never in the statistics; no warm time where a round starts with the runner that ended the
            # last (the order rotates), since it has not paused
            first = settle(functools.partial(timer, feed), switch_warmup, None if previous != k else 0.0)
            if previous != k:
                switch[k].append(first)
            previous = k
            block = []
            if counts is not None:
                block = [timer(feed) for _ in range(counts[rnd])]
            else:
                deadline = time.perf_counter() + duration / rounds  # type: ignore[operator]
                block.append(timer(feed))
                while time.perf_counter() < deadline:
                    block.append(timer(feed))
            timed[k].append(block)
            if progress is not None:
                progress(f"{runners[k].name} batch {batch}", rnd + 1, rounds)
    out = []
    for k in range(len(runners)):
        if k == 0:
            value = low = high = 1.0
        else:
            value, low, high = speedup_interval(timed[0], timed[k], confidence=confidence, seed=seed)
        speedup = Speedup(value=value, low=low, high=high, confidence=confidence, baseline=runners[0].name,
                          is_baseline=k == 0, wide=(high - low) / value > WIDE_INTERVAL)
        out.append(_Timed(runners[k], runners[k].describe(), batch, timers[k].method, timed[k], switch[k], speedup))
    return out

"""Latency-regression checks that hold on a noisy, shared machine: ratios, never absolute times.

Two uses, one measurement (`measure_ratio`): trials of calls of runner A and runner B, a short block of each
per trial (A then B, B then A, ...) so both see the same moments of a busy machine; each trial's fastest A over
fastest B, then the median of those per-trial ratios with a bootstrap confidence interval. Each block starts
after the bench's idle time and untimed calls (`runtime.bench.switch_to`): alternating call by call, each
runner ran beside the other's spinning onnxruntime workers at more than one thread (the demo's kernel graph
over its exported graph at 2 threads: 0.965x [0.70, 1.36] call by call, where the bench measures 0.84x).

- `assert_ratio(a, b, max_ratio)`: A may cost at most `max_ratio` times B (optimised vs exported graph,
  AARM vs its plain backbone). Fails only when the whole interval lies above the budget.
- `check_regression(artifact, baseline_file)`: A is the artifact, B a fixed reference workload (an
  onnxruntime graph of compute-bound and memory-bound matmuls, on the artifact's provider and threads);
  the ratio is compared with the one `record_baseline` recorded in the baseline file for this machine's
  hardware+software fingerprint, failing when the interval lies above baseline * (1 + tolerance). On a
  machine whose fingerprint has no baseline it is skipped.
"""

import functools
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from aarm.errors import AarmError, ConfigError
from aarm.fileio import write_json
from runtime.backends import open_runner
from runtime.bench import switch_to
from runtime.host import host_info
from runtime.runner import Runner

BASELINE_FORMAT = "aarm-latency-baseline"
BASELINE_VERSION = 1
REFERENCE_WORKLOADS = ("mixed", "matmul", "stream")
FINGERPRINT_FIELDS = ("cpu", "cores", "machine", "system", "gpu", "onnxruntime", "torch", "numpy")


class LatencyRegression(AarmError):
    """A runner slower than its budget or its recorded baseline, beyond the measurement's noise."""


@dataclass
class RatioMeasurement:
    """Median of per-trial latency ratios A / B with a bootstrap interval; per-trial medians in ms."""

    a: str
    b: str
    ratio: float
    low: float
    high: float
    confidence: float
    ratios: list[float]
    a_ms: list[float]
    b_ms: list[float]
    iterations: int
    batch: int

    def __str__(self) -> str:
        return (f"{self.a} / {self.b} = {self.ratio:.3f}x ({100 * self.confidence:.0f}% interval "
                f"{self.low:.3f}-{self.high:.3f}, {len(self.ratios)} trials)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bootstrap_median_interval(
    values: Sequence[float], *, confidence: float = 0.95, resamples: int = 4000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the median of `values` (seeded, so reruns agree)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 1:
        return float(v[0]), float(v[0])
    rng = np.random.default_rng(seed)
    medians = np.median(v[rng.integers(0, v.size, size=(resamples, v.size))], axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(medians, [alpha, 1 - alpha])
    return float(low), float(high)


def _timed(runner: Runner, feed: dict[str, np.ndarray]) -> float:
    t0 = time.perf_counter_ns()
    runner.infer(feed)
    return (time.perf_counter_ns() - t0) / 1e6


def measure_ratio(
    a: Runner,
    b: Runner,
    *,
    trials: int = 7,
    iterations: int = 10,
    batch: int = 1,
    warmup: int = 2,
    confidence: float = 0.95,
    seed: int = 0,
) -> RatioMeasurement:
    """Latency of A relative to B from `trials` trials of a block of `iterations` calls of each.

    A trial runs `iterations` calls of A and of B, in blocks (A then B, or B then A, alternating by trial),
    each after SWITCH_IDLE_S idle and SWITCH_WARM_S of untimed calls, so both run under the same conditions of a busy
    machine and neither beside the other's spinning threads. A trial's ratio is its fastest A call over its
    fastest B call: interference from other work only ever adds time, so the
    minimum is the steadiest estimate of each one's own cost (medians swing with the load of a shared
    core). The result is the median of the trials' ratios with its bootstrap interval at `confidence`;
    a_ms / b_ms hold each trial's fastest call.
    """
    if trials < 1 or iterations < 1 or batch < 1:
        raise ConfigError("trials, iterations and batch must be >= 1")
    rng = np.random.default_rng(seed)
    ratios, a_ms, b_ms = [], [], []
    with a, b:
        feed_a, feed_b = a.example_feed(batch, rng=rng), b.example_feed(batch, rng=rng)
        for _ in range(warmup):
            a.infer(feed_a)
            b.infer(feed_b)
        for t in range(trials):
            block: dict[str, list[float]] = {}
            for key, runner, feed in (("a", a, feed_a), ("b", b, feed_b))[:: 1 if t % 2 == 0 else -1]:
                switch_to(functools.partial(_timed, runner, feed))  # idle, then the untimed switch calls
                block[key] = [_timed(runner, feed) for _ in range(iterations)]
            a_ms.append(min(block["a"]))
            b_ms.append(min(block["b"]))
            ratios.append(a_ms[-1] / b_ms[-1])
    low, high = bootstrap_median_interval(ratios, confidence=confidence, seed=seed)
    return RatioMeasurement(a=a.name, b=b.name, ratio=float(np.median(ratios)), low=low, high=high,
                            confidence=confidence, ratios=ratios, a_ms=a_ms, b_ms=b_ms, iterations=iterations,
                            batch=batch)


def _as_runner(x: Runner | str | Path, threads: int | None) -> Runner:
    return x if isinstance(x, Runner) else open_runner(x, threads=threads)


def assert_ratio(
    a: Runner | str | Path,
    b: Runner | str | Path,
    max_ratio: float,
    *,
    trials: int = 7,
    iterations: int = 10,
    batch: int = 1,
    threads: int | None = 1,
    seed: int = 0,
) -> RatioMeasurement:
    """Raise LatencyRegression unless A's latency is within `max_ratio` times B's.

    Artifacts given as paths are opened with `threads` intra-op threads (default 1: single-threaded runs
    are the least disturbed by other work on the machine). Fails when the interval's lower end exceeds
    the budget, i.e. when A is slower than allowed beyond the trials' spread. Returns the measurement.
    """
    if max_ratio <= 0:
        raise ConfigError(f"max_ratio must be > 0, got {max_ratio}")
    m = measure_ratio(_as_runner(a, threads), _as_runner(b, threads), trials=trials, iterations=iterations,
                      batch=batch, seed=seed)
    if m.low > max_ratio:
        raise LatencyRegression(f"{m}: over the budget of {max_ratio:.3f}x")
    return m


# -- reference workload ------------------------------------------------------------------------------
def _matmul_chain(prefix: str, x: str, sizes: Sequence[int], rng: np.random.Generator) -> tuple[list, list, str]:
    """MatMul + ReLU layers taking the last axis through `sizes` (seeded weights); returns nodes, inits, output."""
    from onnx import helper, numpy_helper

    nodes, inits, prev = [], [], x
    for i, (k, n) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        w = rng.standard_normal((k, n), dtype=np.float32) * np.float32(1 / np.sqrt(k))
        inits.append(numpy_helper.from_array(w, f"{prefix}_w{i}"))
        nodes.append(helper.make_node("MatMul", [prev, f"{prefix}_w{i}"], [f"{prefix}_m{i}"]))
        nodes.append(helper.make_node("Relu", [f"{prefix}_m{i}"], [f"{prefix}_h{i}"]))
        prev = f"{prefix}_h{i}"
    return nodes, inits, prev


def reference_runner(
    workload: str = "mixed", *, providers: Sequence[str] | None = None, threads: int | None = None
) -> Runner:
    """A fixed workload to measure artifacts against, in onnxruntime on the given providers and threads.

    matmul: four (128 x 384) @ (384 x 384) MatMuls, compute-bound with cache-resident weights.
    stream: four (1 x 2048) @ (2048 x 2048) MatMuls, bound by streaming 64 MB of weights from memory.
    mixed: matmul, then stream on its pooled output. Inference at small batch is partly each: other work
    competing for the memory bus slows a ResNet at batch 1 far more than a cache-resident matmul, so a
    reference with both parts follows an artifact's latency across a shared machine's moods best.
    Input "x" (N, 128, 384); seeded weights, so the workload is the same on every machine.
    """
    if workload not in REFERENCE_WORKLOADS:
        raise ConfigError(f"unknown reference workload {workload!r}; choose one of {', '.join(REFERENCE_WORKLOADS)}")
    from runtime.backends.onnxruntime_backend import OnnxRuntimeRunner

    return OnnxRuntimeRunner(_reference_graph(workload), name=f"reference:{workload}", providers=providers,
                             threads=threads)


@functools.cache
def _reference_graph(workload: str) -> bytes:
    """The serialized ONNX graph of a reference workload (built once per process)."""
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(1234)
    nodes, inits, out = [], [], "x"
    if workload in ("matmul", "mixed"):
        n, i, out = _matmul_chain("compute", out, [384] * 5, rng)
        nodes += n
        inits += i
    if workload in ("stream", "mixed"):
        axes = helper.make_tensor("pool_axes", TensorProto.INT64, [1], [1])
        nodes.append(helper.make_node("ReduceMean", [out, "pool_axes"], ["pooled"], keepdims=1))
        inits.append(axes)
        n, i, out = _matmul_chain("stream", "pooled", [384, 2048, 2048, 2048, 2048], rng)
        nodes += n
        inits += i
    nodes.append(helper.make_node("Identity", [out], ["y"]))
    out_shape = ["N", 128, 384] if workload == "matmul" else ["N", 1, 2048]
    graph = helper.make_graph(
        nodes, f"reference_{workload}", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 128, 384])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    onnx.checker.check_model(model)
    return model.SerializeToString()


# -- fingerprints and baselines ----------------------------------------------------------------------
def fingerprint(runner: Runner) -> dict[str, Any]:
    """What a latency ratio depends on: hardware, library versions, backend, provider and thread count."""
    host = host_info()
    fp = {k: host.get(k) for k in FINGERPRINT_FIELDS}
    fp.update(backend=runner.backend, provider=runner.provider, threads=runner.threads)
    return fp


def fingerprint_key(fp: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fp, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class RegressResult:
    """Outcome of one baseline check: status pass | fail | skipped | updated, and why."""

    status: str
    reason: str
    artifact: str
    key: str
    fingerprint: dict[str, Any]
    measurement: RatioMeasurement | None = None
    baseline_ratio: float | None = None
    threshold: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status != "fail"

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kind"] = "regress"
        return d


def read_baseline(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise AarmError(f"{path}: unreadable baseline file ({exc})") from None
    if data.get("format") != BASELINE_FORMAT or data.get("version") != BASELINE_VERSION:
        raise AarmError(f"{path}: not a latency baseline file (format {BASELINE_FORMAT} v{BASELINE_VERSION})")
    return data


def _differences(fp: dict[str, Any], entries: dict[str, Any]) -> str:
    if not entries:
        return "the baseline file has no entries"
    closest = min(entries.values(), key=lambda e: sum(e["fingerprint"].get(k) != v for k, v in fp.items()))
    diffs = [f"{k} {closest['fingerprint'].get(k)!r} -> {v!r}" for k, v in fp.items()
             if closest["fingerprint"].get(k) != v]
    return "; ".join(diffs)


def _measure_against_workload(artifact: Runner, workload: str, trials: int, iterations: int, batch: int,
                              seed: int) -> RatioMeasurement:
    reference = reference_runner(workload, providers=_providers_of(artifact), threads=artifact.threads)
    return measure_ratio(artifact, reference, trials=trials, iterations=iterations, batch=batch, seed=seed)


def check_regression(
    artifact: Runner, baseline: str | Path, *, key: str | None = None, workload: str = "mixed", trials: int = 7,
    iterations: int = 10, batch: int = 1, tolerance: float = 0.10, seed: int = 0,
) -> RegressResult:
    """Compare an artifact's latency, relative to the reference workload, with its recorded baseline.

    key: the artifact's name in the baseline file (default: the runner's name, so a rebuilt artifact is
    checked against its predecessor's baseline). A fingerprint with no baseline is skipped, not failed;
    `record_baseline` records one.
    """
    if tolerance < 0:
        raise ConfigError(f"tolerance must be >= 0, got {tolerance}")
    baseline = Path(baseline)
    key = key or artifact.name
    fp = fingerprint(artifact)
    fp_key = fingerprint_key(fp)
    if not baseline.exists():
        raise AarmError(f"baseline file {baseline} not found; record one with `record_baseline`")
    entries = read_baseline(baseline)["entries"]
    if fp_key not in entries:
        return RegressResult("skipped", f"fingerprint differs ({_differences(fp, entries)})", artifact.name, key, fp)
    entry = entries[fp_key]["artifacts"].get(key)
    if entry is None:
        raise AarmError(f"{baseline}: no baseline for {key!r} on this machine; record one with `record_baseline`")
    if entry["workload"] != workload or entry["batch"] != batch:
        raise ConfigError(f"{baseline}: the baseline for {key!r} was measured against {entry['workload']} at "
                          f"batch {entry['batch']}; check with the same settings")
    m = _measure_against_workload(artifact, workload, trials, iterations, batch, seed)
    threshold = entry["ratio"] * (1 + tolerance)
    over = m.low > threshold
    reason = (f"{m.ratio:.3f}x {workload} (interval {m.low:.3f}-{m.high:.3f}) against baseline "
              f"{entry['ratio']:.3f}x: {'over' if over else 'within'} the {100 * tolerance:.0f}% tolerance "
              f"({threshold:.3f}x)")
    return RegressResult("fail" if over else "pass", reason, artifact.name, key, fp, measurement=m,
                         baseline_ratio=entry["ratio"], threshold=threshold)


def record_baseline(
    artifact: Runner, baseline: str | Path, *, key: str | None = None, workload: str = "mixed", trials: int = 7,
    iterations: int = 10, batch: int = 1, seed: int = 0,
) -> RegressResult:
    """Measure an artifact's latency relative to the reference workload and record it in the baseline file
    (created if missing), replacing this machine's entry for `key` (default: the runner's name)."""
    baseline = Path(baseline)
    key = key or artifact.name
    fp = fingerprint(artifact)
    data = read_baseline(baseline) if baseline.exists() else {
        "format": BASELINE_FORMAT, "version": BASELINE_VERSION, "entries": {}}
    m = _measure_against_workload(artifact, workload, trials, iterations, batch, seed)
    data["entries"].setdefault(fingerprint_key(fp), {"fingerprint": fp, "artifacts": {}})["artifacts"][key] = {
        "ratio": m.ratio, "low": m.low, "high": m.high, "ratios": m.ratios, "trials": trials,
        "iterations": iterations, "batch": batch, "workload": workload,
        "sha256": artifact.sidecar.sha256 if artifact.sidecar is not None else None,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_json(baseline, data)
    return RegressResult("updated", f"recorded {m.ratio:.3f}x of {workload} in {baseline}", artifact.name, key, fp,
                         measurement=m, baseline_ratio=m.ratio)


def _providers_of(runner: Runner) -> list[str] | None:
    """Run the reference workload where the artifact runs: its onnxruntime providers, or CPU/CUDA."""
    if runner.requested_providers:
        return list(runner.requested_providers)
    return ["cuda"] if runner.device.startswith("cuda") else ["cpu"]

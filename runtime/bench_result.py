"""A bench result, typed, and its tables: what `runtime.bench.benchmark` returns, `bench`, the pipeline and the
report print, and `BenchResult.to_json()` is the `kind: bench` file (layout in docs/runtime.md, "bench").

    result = benchmark(runners)                      # BenchResult
    write_json("bench.json", result.to_json())
    print_table(title, bench_columns(result), bench_rows(result))
    again = BenchResult.from_json(json.loads(Path("bench.json").read_text()))
"""

from dataclasses import asdict, dataclass
from typing import Any

from aarm.errors import ConfigError

BENCH_VERSION = 2


@dataclass
class Speedup:
    """Median latency of the bench's first runner / this row's, at the same batch (higher is faster), with its
    bootstrap interval [low, high] at `confidence`; `wide` when the interval spans more than the bench's
    wide_interval of the value."""

    value: float
    low: float
    high: float
    confidence: float
    baseline: str
    is_baseline: bool
    wide: bool


@dataclass
class Throughput:
    """From the median latency: clips/s = batch / p50, frames/s = clips/s x frames per clip."""

    clips_per_s: float
    frames_per_s: float


@dataclass
class PeakMemory:
    """A runner's peak memory at one batch (`runtime.bench._MemoryProbe`): CPU resident-set peak and, on CUDA,
    the GPU peak and how it was read; `method` None when not measured, `reason` says why."""

    method: str | None
    reason: str | None = None
    cpu_peak_mb: float | None = None
    gpu_peak_mb: float | None = None
    gpu_method: str | None = None

    @property
    def peak_mb(self) -> float | None:
        """The GPU peak where there is one, else the CPU peak."""
        return self.gpu_peak_mb if self.gpu_peak_mb is not None else self.cpu_peak_mb

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k == "method" or v is not None}


# the keys of a row that are measurements; the others are the runner's `Runner.describe()` (threads may be either)
_MEASURED = ("batch", "iterations", "timing", "latency_ms", "samples_ms", "rounds_ms", "switch_ms", "switch_cost_ms",
             "throughput", "speedup", "flops_per_clip", "flops_per_s", "fraction_of_matmul", "memory")


@dataclass
class BenchRow:
    """One runner at one batch size: latency statistics (`runtime.bench.latency_stats`, ms) of the timed calls,
    every call (`samples_ms`, and per interleaved round `rounds_ms`), the untimed first calls after a switch and
    their median over p50 (`switch_cost_ms`), throughput and speed-up from the median, FLOPs per clip, achieved
    FLOP/s and its share of the matmul reference, and peak memory. `runner` is what `Runner.describe()` said."""

    runner: dict[str, Any]
    threads: int | None
    batch: int
    iterations: int
    timing: str
    latency_ms: dict[str, float]
    samples_ms: list[float]
    rounds_ms: list[list[float]]
    switch_ms: list[float]
    switch_cost_ms: float | None
    throughput: Throughput
    speedup: Speedup
    flops_per_clip: int | None
    flops_per_s: float | None
    fraction_of_matmul: float | None
    memory: PeakMemory

    @property
    def name(self) -> str:
        return self.runner["name"]

    @property
    def provider(self) -> str:
        return self.runner["provider"]

    @property
    def precision(self) -> str:
        return self.runner["precision"]

    @property
    def backend(self) -> str:
        return self.runner["backend"]

    @property
    def path(self) -> str | None:
        return self.runner.get("path")

    def to_json(self) -> dict[str, Any]:
        return {
            **self.runner, "threads": self.threads, "batch": self.batch, "iterations": self.iterations,
            "timing": self.timing, "latency_ms": self.latency_ms, "samples_ms": self.samples_ms,
            "rounds_ms": self.rounds_ms, "switch_ms": self.switch_ms, "switch_cost_ms": self.switch_cost_ms,
            "throughput": asdict(self.throughput), "speedup": asdict(self.speedup),
            "flops_per_clip": self.flops_per_clip, "flops_per_s": self.flops_per_s,
            "fraction_of_matmul": self.fraction_of_matmul, "memory": self.memory.to_json(),
        }

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> "BenchRow":
        return cls(
            runner={k: v for k, v in row.items() if k not in _MEASURED}, threads=row.get("threads"),
            batch=row["batch"], iterations=row["iterations"], timing=row["timing"], latency_ms=row["latency_ms"],
            samples_ms=row["samples_ms"], rounds_ms=row["rounds_ms"], switch_ms=row["switch_ms"],
            switch_cost_ms=row["switch_cost_ms"], throughput=Throughput(**row["throughput"]),
            speedup=Speedup(**row["speedup"]), flops_per_clip=row.get("flops_per_clip"),
            flops_per_s=row.get("flops_per_s"), fraction_of_matmul=row.get("fraction_of_matmul"),
            memory=PeakMemory(**row["memory"]),
        )


@dataclass
class BenchSettings:
    """How the bench ran: timed calls per (runner, batch) (`iterations`, or `duration` seconds of them) over
    `rounds` interleaved rounds, the warm-up calls, the statistic, the intervals' confidence and width flag."""

    batches: list[int]
    iterations: int | None
    duration: float | None
    warmup: int
    rounds: int
    switch_warmup: int
    statistic: str
    confidence: float
    wide_interval: float
    memory: bool
    seed: int
    switch_idle_s: float = 0.0  # idle time before the first call after a switch (0 in files from before it)
    switch_warm_s: float = 0.0  # the untimed calls after a switch last at least this long (0: from before it)


@dataclass
class MatmulReference:
    """The best rate of a large matrix multiply on a device and dtype, timed in the same run (FLOP/s)."""

    device: str
    dtype: str
    matmul_flops_per_s: float


@dataclass
class BenchResult:
    """A bench run: rows per batch size, one per runner in the runners' order (speed-ups over the first), and
    the host (`runtime.host.host_info`), threads (`thread_settings`) and load (`CpuUse.result`) it ran with.
    `video_stages`: `bench --videos`' stage splits (`runtime.timings.video_stage_bench`), where asked for."""

    created: str
    host: dict[str, Any]
    threads: dict[str, Any]
    load: dict[str, Any]
    settings: BenchSettings
    reference: list[MatmulReference]
    rows: list[BenchRow]
    video_stages: list[dict[str, Any]] | None = None

    def to_json(self) -> dict[str, Any]:
        """The `kind: bench` file."""
        out = {
            "kind": "bench", "version": BENCH_VERSION, "created": self.created, "host": self.host,
            "threads": self.threads, "load": self.load, "settings": asdict(self.settings),
            "reference": [asdict(r) for r in self.reference], "results": [r.to_json() for r in self.rows],
        }
        return out if self.video_stages is None else {**out, "video_stages": self.video_stages}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "BenchResult":
        """A `kind: bench` file's content; one of another version, or with a field missing or malformed, is a
        ConfigError."""
        if data.get("version") != BENCH_VERSION:
            raise ConfigError(f"bench result version {data.get('version')} is from another aarm; this one reads "
                              f"version {BENCH_VERSION}: rerun `benchmark`")
        try:
            return cls(
                created=data["created"], host=data["host"], threads=data.get("threads", {}), load=data["load"],
                settings=BenchSettings(**data["settings"]),
                reference=[MatmulReference(**r) for r in data["reference"]],
                rows=[BenchRow.from_json(r) for r in data["results"]], video_stages=data.get("video_stages"),
            )
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"bench result with a missing or malformed field ({exc})") from None


# -- tables ------------------------------------------------------------------------------------------
def speedup_label(baseline: str) -> str:
    """What a speed-up column means, for a table header."""
    return f"speed-up vs {baseline} (x, higher is faster)"


def bench_columns(result: BenchResult) -> list[str]:
    """Column names of `bench_rows` for this result (the speed-up column names its baseline)."""
    base = result.rows[0].speedup.baseline
    return ["artifact", "provider", "threads", "precision", "batch", "p50 ms", "p90 ms", "clips/s", "frames/s",
            speedup_label(base), f"{100 * result.settings.confidence:.0f}% interval", "GFLOP/s", "of matmul",
            "peak MB"]


def _interval_cell(s: Speedup) -> str:
    if s.is_baseline:
        return "baseline"
    return f"{s.low:.2f}-{s.high:.2f}" + (" WIDE" if s.wide else "")


def bench_rows(result: BenchResult) -> list[tuple[str, ...]]:
    """Table rows of a bench result: one per (runner, batch), every column from the median latency."""
    rows = []
    for r in result.rows:
        lat, thr, s, frac, mem = r.latency_ms, r.throughput, r.speedup, r.fraction_of_matmul, r.memory.peak_mb
        rows.append((
            r.name, r.provider.removesuffix("ExecutionProvider"), str(r.threads or "default"),
            r.precision, str(r.batch), f"{lat['p50']:.2f}", f"{lat['p90']:.2f}", f"{thr.clips_per_s:.1f}",
            f"{thr.frames_per_s:.0f}", f"{s.value:.2f}x", _interval_cell(s),
            f"{r.flops_per_s / 1e9:.1f}" if r.flops_per_s else "-",
            f"{100 * frac:.0f}%" if frac else "-",
            f"{mem:.0f}" if mem is not None else "-",
        ))
    return rows


def bench_notes(result: BenchResult) -> list[str]:
    """Lines that say how a bench result was measured and on what: method, host, threads, load (with a
    BUSY warning), versions, and switch costs that the statistics leave out."""
    st, host, load, rows = result.settings, result.host, result.load, result.rows
    per_round = f"{st.iterations} timed calls" if st.iterations else f"{st.duration:g} s of timed calls"
    switch = (f"untimed calls for at least {1000 * st.switch_warm_s:.0f} ms"
              f"{f' and {st.switch_warmup} calls' if st.switch_warmup > 1 else ''}" if st.switch_warm_s
              else f"{st.switch_warmup} untimed call(s)")
    idle = f"{1000 * st.switch_idle_s:.0f} ms idle, then " if st.switch_idle_s else ""
    lines = [
        f"Method: {per_round} per artifact and batch in {st.rounds} interleaved rounds (order rotating), "
        f"{st.warmup} warm-up calls first and, after every switch, {idle}{switch}; "
        f"every column from the median latency (p50): clips/s = batch / p50, speed-up = p50 of "
        f"{rows[0].speedup.baseline} / p50 of the artifact at the same batch (higher is faster), with a "
        f"{100 * st.confidence:.0f}% bootstrap interval over the rounds; WIDE: the interval spans more than "
        f"{100 * st.wide_interval:.0f}% of the value.",
        f"Host: {host.get('hostname')}, {host['cpu']}, {host.get('usable_cores')} of {host['cores']} cores usable, "
        f"{host['system']}{', GPU ' + host['gpu'] if host.get('gpu') else ''}; python {host['python']}, "
        f"onnxruntime {host.get('onnxruntime')}, torch {host.get('torch')}, numpy {host['numpy']}.",
    ]
    threads = result.threads
    torch_threads = (f"torch intra-op {threads['torch_intra_op']}, inter-op {threads['torch_inter_op']}"
                     if "torch_intra_op" in threads else "torch not loaded")
    env = ", ".join(f"{k}={v}" for k, v in threads.get("env", {}).items()) or "no thread variables set"
    lines.append(f"Threads: {torch_threads}; {env}; per artifact in the threads column (default: the backend's).")
    others = load.get("others_cores")
    lines.append(
        f"Load: load average {load.get('load_before')} before, {load.get('load_after')} after; this process used "
        f"{load['own_cores']:.2f} cores"
        + (f", other processes {others:.2f} cores" if others is not None else "")
        + f" during the {load['wall_s']:.0f} s of timed rounds.")
    if load["busy"]:
        lines.append(f"BUSY: {load['busy_rule']}; the figures may be noisy - rerun on a quiet machine.")
    slow = [r for r in rows if (r.switch_cost_ms or 0) > 0.5 * r.latency_ms["p50"]]
    if slow:
        lines.append("First call after a switch (untimed in the statistics): " + "; ".join(
            f"{r.name} batch {r.batch} {r.switch_cost_ms + r.latency_ms['p50']:.1f} ms against p50 "
            f"{r.latency_ms['p50']:.1f}" for r in slow) + ".")
    if any(r.precision == "int8" and r.fraction_of_matmul for r in rows):
        dtypes = ", ".join(sorted({f"{m.dtype} on {m.device}" for m in result.reference}))
        lines.append(f"of matmul: every row against the {dtypes} matmul, INT8 rows too (their int8 arithmetic "
                     "may pass 100% of it).")
    memory = {r.memory.method for r in rows}
    if None in memory:
        reasons = sorted({r.memory.reason or "" for r in rows if r.memory.method is None})
        which = "any artifact" if all(r.memory.method is None for r in rows) else "some artifacts"
        lines.append(f"Peak memory not measured for {which}: {'; '.join(reasons)}.")
    if memory - {None}:
        lines.append("Peak MB: the artifact's resident-set high-water mark in a fresh process over that process's "
                     "footprint before opening it (weights, session and the largest call's working set); "
                     "GPU rows: the CUDA peak.")
    return lines

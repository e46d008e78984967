"""Shared by the benchmarks: the synthetic dataset and training recipe used to get a trained model, and the
timing helpers (wait for a quiet machine, interleaved rounds, paired ratios with intervals, target rows)."""

import functools
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any


def synthetic_recipe() -> dict[str, Any]:
    """Synthetic set and ResNet-18 TSN training settings sized for a 2-core CPU (about six minutes per model).

    The four Move* classes differ only in the direction of motion; trails make the direction visible in
    single frames, which is what a 2D TSN with average consensus can learn from. Flips are off (the set
    says so). Trained from scratch (no ImageNet weights here), so the recipe departs from the paper's
    fine-tuning defaults where measurements said it must (GPU sweep, 2026-11-27, in docs/train.md):
    - AdamW, not SGD: from scratch, SGD (lr 0.01-0.03) left every AARM model at chance in the steps a CPU
      run affords; AdamW at 5e-4 learns. AARM's gates prefer the lower rate (1e-3 stalled more runs).
    - many videos seen few times: 150 per class with 24 epochs generalises to unseen backgrounds;
      30-60 per class seen 30 times memorised them (train 85-97%, held-out 30-70%).
    """
    return {
        "dataset": {"classes": 4, "videos_per_class": 150, "frames": 32, "size": 96, "seed": 0},
        "train": {"model": "resnet18", "epochs": 24, "batch_size": 16, "optimizer": "adamw", "lr": 5e-4,
                  "size": 64, "segments": 3, "schedule": "cosine", "workers": 2, "seed": 0},
    }


# ------------------------------------------------------------------------------ timing that tells the truth


def wait_for_quiet(max_load: float, timeout_s: float, *, poll_s: float = 5.0) -> dict[str, Any]:
    """Wait until the 1-minute load average is below `max_load`, at most `timeout_s` seconds.

    Returns {"quiet": bool, "waited_s", "load", "max_load"}; a machine still busy at the timeout is
    measured anyway and flagged (the caller prints the flag and stores it in the JSON)."""
    from runtime.host import load_average

    start = time.monotonic()
    load = load_average()
    while load is not None and load[0] >= max_load and time.monotonic() - start < timeout_s:
        time.sleep(poll_s)
        load = load_average()
    quiet = load is None or load[0] < max_load
    return {"quiet": quiet, "waited_s": round(time.monotonic() - start, 1), "load": load, "max_load": max_load}


class FreshSession:
    """A runner over an onnxruntime session that `renew()` replaces with a new one over the same graph.

    A session keeps its memory layout for life, and two sessions of one graph in one process measured up to 8 %
    apart (AARM-ResNet-50 kernel graph, 9 interleaved rounds, 2026-11-27): with one session per variant, that
    spread lands on one variant for the whole run. `interleaved_rounds` renews a FreshSession before each turn,
    so the spread shows in the rounds, and so in the intervals of the ratios, instead.
    make: () -> an onnxruntime InferenceSession; x: the input for its first input."""

    def __init__(self, make: Callable[[], Any], x: Any) -> None:
        self.make, self.x = make, x
        self.session: Any = None
        self.renew()

    def renew(self) -> None:
        """A new session, run twice untimed: onnxruntime records its memory pattern in a session's first run and
        allocates it (first-touch page faults) in the second."""
        self.session = None  # the old one goes before the new one is made
        self.session = self.make()
        self.feed = {self.session.get_inputs()[0].name: self.x}
        for _ in range(2):
            self.session.run(None, self.feed)

    def __call__(self) -> Any:
        return self.session.run(None, self.feed)


def _ms(call: Callable[[], Any]) -> float:
    start = time.perf_counter()
    call()
    return 1e3 * (time.perf_counter() - start)


def interleaved_rounds(
    runners: dict[str, Callable[[], Any]], rounds: int, *, warmup: int = 1, calls: int = 1,
    before: Callable[[str], None] | None = None, progress: Callable[[int, int], None] | None = None,
) -> dict[str, list[list[float]]]:
    """Latencies in ms, name -> rounds -> calls. Each round runs every runner `calls` times after the bench's
    switch (runtime.bench.switch_to: SWITCH_IDLE_S idle while the previous runner's threads stop spinning, then untimed
    calls for SWITCH_WARM_S, as caches refill), in an order rotated per round, so drift and other processes hit
    all runners alike and ratios can be paired by round.
    `before(name)` runs untimed before each runner's turn (e.g. to set PyTorch's thread count); a runner with a
    `renew()` (FreshSession) is renewed before its turn in every round."""
    from runtime.bench import switch_to

    names = list(runners)
    for name in names:
        if before:
            before(name)
        for _ in range(warmup):
            runners[name]()
    times: dict[str, list[list[float]]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            if before:
                before(name)
            if r > 0 and hasattr(runners[name], "renew"):
                runners[name].renew()
            switch_to(functools.partial(_ms, runners[name]))  # untimed: the switch (and a new session's first run)
            times[name].append([_ms(runners[name]) for _ in range(calls)])
        if progress:
            progress(r + 1, rounds)
    return times


def median_ms(rounds: Sequence[Sequence[float]]) -> float:
    return float(statistics.median(v for r in rounds for v in r))


def paired_ratio(baseline: Sequence[Sequence[float]], other: Sequence[Sequence[float]]) -> dict[str, float]:
    """Speed-up of `other` over `baseline` (baseline median / other median; > 1: other is faster) with the
    runtime's paired two-stage bootstrap 95% interval over the interleaved rounds."""
    from runtime.bench import speedup_interval

    value, low, high = speedup_interval(baseline, other)
    return {"value": value, "low": low, "high": high}


def overhead(plain: Sequence[Sequence[float]], aarm: Sequence[Sequence[float]]) -> dict[str, float]:
    """AARM's latency overhead over the plain model (aarm / plain - 1) with its interval, from `paired_ratio`."""
    r = paired_ratio(aarm, plain)  # aarm median / plain median
    return {"value": r["value"] - 1, "low": r["low"] - 1, "high": r["high"] - 1}


def target_row(name: str, measured: dict[str, float], limit: float, *, at_least: bool) -> dict[str, Any]:
    """A pass/fail row: the median ratio against the limit, with whether the whole interval clears it."""
    value, low, high = measured["value"], measured["low"], measured["high"]
    ok = value >= limit if at_least else value <= limit
    sure = low >= limit if at_least else high <= limit
    return {"target": name, "limit": limit, "at_least": at_least, "value": value, "low": low, "high": high,
            "pass": bool(ok), "interval_clears": bool(sure)}

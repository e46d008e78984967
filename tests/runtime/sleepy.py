"""Runners with a known cost, for testing the benchmark and the latency-regression harness."""

import time

import numpy as np

from runtime.runner import InputSpec, Runner


class SleepRunner(Runner):
    """Sleeps `seconds` per call; input (N, 4), output scores = input."""

    backend = "test"

    def __init__(self, name: str, seconds: float) -> None:
        super().__init__(name=name, inputs=[InputSpec("input", ("N", 4))], outputs=["scores"])
        self.seconds = seconds

    @property
    def provider(self) -> str:
        return "sleep"

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        time.sleep(self.seconds)
        return {"scores": feed["input"]}


class SpinningNeighbourRunner(SleepRunner):
    """Sleeps `seconds` per call, plus `penalty` on a call that starts within `spin` seconds of the end of another
    runner's call: onnxruntime's intra-op workers spin after a call and take cores from the next session."""

    ended: dict[str, float] = {}

    def __init__(self, name: str, seconds: float, penalty: float, spin: float) -> None:
        super().__init__(name, seconds)
        self.penalty, self.spin = penalty, spin

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        now = time.perf_counter()
        if any(now - end < self.spin for name, end in self.ended.items() if name != self.name):
            time.sleep(self.penalty)
        out = super().infer_impl(feed)
        self.ended[self.name] = time.perf_counter()
        return out


class WrappingRunner(Runner):
    """Runs another runner's graph under a new name: same inputs, outputs, classes, preprocessing, provider."""

    def __init__(self, inner: Runner, name: str) -> None:
        super().__init__(name=name, inputs=inner.input_specs, outputs=inner.output_names, classes=inner.classes,
                         preprocessing=inner.preprocessing, precision=inner.precision)
        self.inner, self.backend = inner, inner.backend

    @property
    def provider(self) -> str:
        return self.inner.provider

    def activate_impl(self) -> None:
        self.inner.activate()

    def deactivate_impl(self) -> None:
        self.inner.deactivate()


class SlowedRunner(WrappingRunner):
    """Wraps a runner and sleeps `seconds` after each of its calls: a deliberately slowed artifact."""

    def __init__(self, inner: Runner, seconds: float) -> None:
        super().__init__(inner, f"slowed:{inner.name}")
        self.seconds = seconds

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self.inner.infer(feed)
        time.sleep(self.seconds)
        return out


class RepeatRunner(WrappingRunner):
    """Runs another runner's graph `times` times per call: `RepeatRunner(r, 4)` costs exactly twice
    `RepeatRunner(r, 2)` (plus one feed check of a few microseconds), a known true speed-up of 0.5."""

    def __init__(self, inner: Runner, times: int) -> None:
        super().__init__(inner, f"{inner.name} x{times}")
        self.times = times

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for _ in range(self.times):
            out = self.inner.infer_impl(feed)
        return out


class ColdAfterPauseRunner(SleepRunner):
    """Sleeps `seconds` per call, plus `penalty` on a call that starts within `cold` seconds of the start of the
    first call after a pause (more than `pause` seconds since this runner's last call ended): on a shared VM the
    calls right after a pause ran slow for about 30 ms, whatever their length (docs/runtime.md)."""

    def __init__(self, name: str, seconds: float, penalty: float, cold: float, pause: float = 0.01) -> None:
        super().__init__(name, seconds)
        self.penalty, self.cold, self.pause = penalty, cold, pause
        self.ended, self.woke = -1e9, -1e9

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        now = time.perf_counter()
        if now - self.ended > self.pause:
            self.woke = now
        if now - self.woke < self.cold:
            time.sleep(self.penalty)
        out = super().infer_impl(feed)
        self.ended = time.perf_counter()
        return out

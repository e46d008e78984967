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


class SlowedRunner(Runner):
    """Wraps a runner and sleeps `seconds` after each of its calls: a deliberately slowed artifact."""

    def __init__(self, inner: Runner, seconds: float) -> None:
        super().__init__(name=f"slowed:{inner.name}", inputs=inner.input_specs, outputs=inner.output_names,
                         classes=inner.classes, preprocessing=inner.preprocessing, precision=inner.precision)
        self.inner, self.seconds, self.backend = inner, seconds, inner.backend

    @property
    def provider(self) -> str:
        return self.inner.provider

    def activate_impl(self) -> None:
        self.inner.activate()

    def deactivate_impl(self) -> None:
        self.inner.deactivate()

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self.inner.infer(feed)
        time.sleep(self.seconds)
        return out

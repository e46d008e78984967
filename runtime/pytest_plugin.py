"""pytest plugin: the `latency` marker and fixture for latency-regression tests.

Enable it in a conftest with `pytest_plugins = ["runtime.pytest_plugin"]`, then:

    @pytest.mark.latency
    def test_optimised_not_slower(latency, exported, optimised):
        latency.assert_ratio(optimised, exported, max_ratio=1.10)       # fails on a real slow-down
        latency.check_baseline(optimised, "tests/baselines/latency.json")  # skips on another machine

Both compare ratios measured in the same run (runtime.regress), never absolute times. Deselect with
`-m "not latency"`; `--latency-trials N` changes the number of interleaved trials.
"""

from pathlib import Path
from typing import Any

import pytest

from runtime.backends import open_runner
from runtime.regress import RatioMeasurement, RegressResult, assert_ratio, check_regression
from runtime.runner import Runner


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("latency", "latency-regression tests (runtime.regress)")
    group.addoption("--latency-trials", type=int, default=7,
                    help="interleaved trials per latency comparison (default 7)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "latency: latency-regression test comparing ratios measured in the same run (runtime.regress)")


class LatencyChecker:
    """What the `latency` fixture gives a test; measurements are attached to the test's report."""

    def __init__(self, node: pytest.Item, trials: int) -> None:
        self.node = node
        self.trials = trials

    def _record(self, name: str, value: Any) -> None:
        self.node.user_properties.append((name, value))

    def assert_ratio(self, a: Runner | str | Path, b: Runner | str | Path, max_ratio: float,
                     **kwargs: Any) -> RatioMeasurement:
        """Fail the test unless A's latency is within `max_ratio` times B's (see runtime.regress.assert_ratio)."""
        kwargs.setdefault("trials", self.trials)
        m = assert_ratio(a, b, max_ratio, **kwargs)
        self._record(f"latency {m.a} / {m.b}", str(m))
        return m

    def check_baseline(self, artifact: Runner | str | Path, baseline: str | Path, **kwargs: Any) -> RegressResult:
        """Check against a recorded baseline; skip the test where this machine has none, fail on a regression."""
        kwargs.setdefault("trials", self.trials)
        runner = artifact if isinstance(artifact, Runner) else open_runner(artifact, threads=1)
        result = check_regression(runner, baseline, **kwargs)
        self._record(f"latency baseline {result.key}", result.reason)
        if result.status == "skipped":
            pytest.skip(f"latency baseline: {result.reason}")
        if result.status == "fail":
            pytest.fail(f"latency regression of {result.key}: {result.reason}", pytrace=False)
        return result


@pytest.fixture
def latency(request: pytest.FixtureRequest) -> LatencyChecker:
    """Latency-regression helper bound to the running test (see LatencyChecker)."""
    return LatencyChecker(request.node, request.config.getoption("--latency-trials"))

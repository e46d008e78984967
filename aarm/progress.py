"""Progress of long library work: the one callback shape every layer takes, and plain lines for logs.

    train(cfg, progress=plain_progress())        # "epoch 1/5: 12/40 (30 %, 14 s)" at most every 10 s

Library functions take `progress: Progress | None` and call it as `progress(phase, done, total)`; the CLI
passes a rich bar on a terminal (export.progress) and `plain_progress` lines into a log or a pipe, where a live
bar shows nothing until the end. `plain_progress` writes one line per phase at most every `interval_s`
seconds, plus the phase's first and last step, so a long run logs at a steady pace however many steps it has.
"""

import time
from collections.abc import Callable
from typing import Protocol

PLAIN_PROGRESS_INTERVAL_S = 10.0  # seconds between two lines of one phase


class Progress(Protocol):
    """`progress(phase, done, total)`: `done` of `total` steps of `phase` are finished."""

    def __call__(self, phase: str, done: int, total: int) -> None: ...


def plain_progress(
    write: Callable[[str], None] = print, interval_s: float | None = None, clock: Callable[[], float] = time.monotonic
) -> Progress:
    """A `progress(phase, done, total)` callback that writes "phase: done/total (pct %, elapsed s)" lines:
    for each phase its first step, then at most one every `interval_s` seconds (default
    PLAIN_PROGRESS_INTERVAL_S, read at each call), and its last step (done == total)."""
    started: dict[str, float] = {}
    last_line: dict[str, float] = {}

    def report(phase: str, done: int, total: int) -> None:
        now = clock()
        if phase not in started or done <= 1:
            started[phase] = now
            last_line.pop(phase, None)
        interval = PLAIN_PROGRESS_INTERVAL_S if interval_s is None else interval_s
        due = phase not in last_line or now - last_line[phase] >= interval
        if due or done >= total:
            last_line[phase] = now
            percent = f"{100 * done / total:.0f} %, " if total > 0 else ""
            write(f"{phase}: {done}/{total} ({percent}{now - started[phase]:.0f} s)")

    return report

"""`aarm-export regress`: latency-regression check of an artifact against a baseline or another artifact."""

from pathlib import Path
from typing import Annotated

import typer

from aarm.errors import ConfigError
from aarm.fileio import check_writable, write_json
from export.console import console
from export.options import DeviceOpt, ProviderOpt, at_least, open_cli_runner


def regress(
    artifact: Annotated[Path, typer.Argument(help="Artifact to check (.onnx, .engine, .pt).")],
    baseline: Annotated[Path | None, typer.Option(help="Baseline file (JSON) keyed by machine fingerprint.")] = None,
    update: Annotated[
        bool, typer.Option(help="Measure and record this machine's baseline instead of checking.")
    ] = False,
    key: Annotated[str | None, typer.Option(help="Artifact name in the baseline (default: its file name).")] = None,
    against: Annotated[Path | None, typer.Option(help="Compare with this artifact instead of a baseline.")] = None,
    max_ratio: Annotated[
        float | None, typer.Option(help="With --against: allowed latency ratio ARTIFACT / AGAINST.",
                                   callback=at_least(0, strict=True))
    ] = None,
    reference_workload: Annotated[
        str, typer.Option(help="Fixed workload the ratio is taken to: mixed, matmul (compute-bound) or stream "
                          "(memory-bound).")
    ] = "mixed",
    trials: Annotated[int, typer.Option(help="Interleaved trials.", callback=at_least(1))] = 7,
    iterations: Annotated[int, typer.Option(help="Calls per trial and runner (the fastest counts).",
                                            callback=at_least(1))] = 10,
    batch: Annotated[int, typer.Option(help="Batch size.", callback=at_least(1))] = 1,
    tolerance: Annotated[float, typer.Option(help="Allowed slow-down over the baseline ratio (0.10 = 10%).",
                                             callback=at_least(0))] = 0.10,
    provider: ProviderOpt = None,
    device: DeviceOpt = None,
    threads: Annotated[int, typer.Option(help="Intra-op threads (1 is the least disturbed by other work).",
                                         callback=at_least(1))] = 1,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the outcome as JSON.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite the --json file.")] = False,
) -> None:
    """Latency-regression check against a recorded baseline (or, with --against, another artifact).

    The artifact's latency is taken as a ratio to a reference workload timed in the same run. Exit 1 on a
    regression beyond the tolerance and the trials' spread; on a machine with another fingerprint the check
    is skipped (exit 0).
    """
    from runtime.regress import LatencyRegression, assert_ratio, check_regression, record_baseline

    if json_out:
        check_writable(json_out, force)
    runner = open_cli_runner(artifact, provider, device, threads)
    if against is not None:
        if max_ratio is None or baseline is not None or update:
            raise ConfigError("--against takes --max-ratio, and no --baseline or --update")
        other = open_cli_runner(against, provider, device, threads)
        outcome = {"kind": "regress", "artifact": runner.name, "key": key or runner.name, "fingerprint": {},
                   "baseline_ratio": None, "threshold": max_ratio, "against": str(against)}
        try:
            m = assert_ratio(runner, other, max_ratio, trials=trials, iterations=iterations, batch=batch)
        except LatencyRegression as exc:
            if json_out:
                write_json(json_out, {**outcome, "status": "fail", "reason": str(exc), "measurement": None})
            raise
        reason = f"{m}, within {max_ratio:.3f}x"
        if json_out:
            write_json(json_out, {**outcome, "status": "pass", "reason": reason, "measurement": m.to_dict()})
        console.print(f"pass: {reason}", highlight=False)
        return
    if baseline is None:
        raise ConfigError("give --baseline FILE (or --against ARTIFACT --max-ratio R)")
    measure = dict(key=key, workload=reference_workload, trials=trials, iterations=iterations, batch=batch)
    result = (record_baseline(runner, baseline, **measure) if update
              else check_regression(runner, baseline, tolerance=tolerance, **measure))
    if json_out:
        write_json(json_out, result.to_dict())
    if result.status == "fail":
        raise LatencyRegression(f"{result.key}: latency regression: {result.reason}")
    console.print(f"{result.status}: {result.reason} [{result.key}]", highlight=False, soft_wrap=True, markup=False)


def register(app: typer.Typer) -> None:
    app.command("regress")(regress)

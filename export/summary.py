"""The pipeline's summary: accuracy, parity and speed per artifact, from its parity and bench JSONs."""

import json
from pathlib import Path
from typing import Any

from aarm.errors import ConfigError
from runtime.bench_result import BENCH_VERSION, BenchResult, speedup_label


def summary_rows(parity_json: Path, bench_json: Path) -> list[dict[str, Any]]:
    """One row per artifact (PyTorch first): precision, accuracy on labelled clips, top-1 agreement and max abs
    error against PyTorch (on the labelled clips where parity had them, else on random inputs), and at the
    largest benchmarked batch the median latency, clips/s from it and the speed-up over PyTorch eager measured
    in the same run (its p50 / the artifact's p50, higher is faster) with the bench's interval where PyTorch
    was the bench's baseline."""
    parity = {Path(r["artifact"]["path"]).name: r for r in json.loads(parity_json.read_text())}
    bench_data = json.loads(bench_json.read_text())
    if bench_data.get("version") != BENCH_VERSION:
        raise ConfigError(f"{bench_json}: bench result version {bench_data.get('version')} is from another aarm; "
                          f"rerun the bench stage (delete the file)")
    bench = BenchResult.from_json(bench_data)
    largest = max(r.batch for r in bench.rows)
    rows_at = [r for r in bench.rows if r.batch == largest]
    torch_row = next((r for r in rows_at if r.backend == "torch"), rows_at[0])
    from_bench = torch_row.speedup.is_baseline  # the bench's own interval is over this baseline
    rows = []
    for r in rows_at:
        name = Path(r.path).name if r.path else r.name
        p = parity.get(name)
        data = (p or {}).get("metrics", {}).get("data", {})
        agreement = data or (p or {}).get("metrics", {}).get("random", {})
        if r.backend == "torch" and parity:
            any_data = next((q["metrics"].get("data") for q in parity.values() if q["metrics"].get("data")), None)
            data = {"accuracy": any_data["reference_accuracy"]} if any_data else {}
        s = r.speedup
        rows.append({
            "artifact": name,
            "backend": r.backend,
            "precision": r.precision,
            "accuracy": data.get("accuracy"),
            "top1_agreement": agreement.get("top1"),
            "max_abs": agreement.get("max_abs"),
            "parity": None if p is None else bool(p["passed"]),
            "batch": largest,
            "p50_ms": r.latency_ms["p50"],
            "clips_per_s": r.throughput.clips_per_s,
            "baseline": Path(torch_row.path).name if torch_row.path else torch_row.name,
            "speedup": torch_row.latency_ms["p50"] / r.latency_ms["p50"],
            "speedup_interval": (s.low, s.high, s.wide) if from_bench and r is not torch_row else None,
            "confidence": bench.settings.confidence,
        })
    return rows


def format_rows(rows: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}%"

    def interval(r: dict[str, Any]) -> str:
        if r["artifact"] == r["baseline"]:
            return "baseline"
        if r["speedup_interval"] is None:
            return "-"
        low, high, wide = r["speedup_interval"]
        return f"{low:.2f}-{high:.2f}" + (" WIDE" if wide else "")

    return [(
        r["artifact"], r["precision"], pct(r["accuracy"]), pct(r["top1_agreement"]),
        "-" if r["max_abs"] is None else f"{r['max_abs']:.1e}",
        {None: "reference", True: "pass", False: "FAIL"}[r["parity"]],
        f"{r['p50_ms']:.1f}", f"{r['clips_per_s']:.1f}", f"{r['speedup']:.2f}x", interval(r),
    ) for r in rows]


def summary_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The summary table's columns; the speed-up column names its baseline (PyTorch eager)."""
    base, confidence = (rows[0]["baseline"], rows[0]["confidence"]) if rows else ("PyTorch", 0.95)
    return ["artifact", "precision", "accuracy", "top-1 agree", "max abs err", "parity", "p50 ms", "clips/s",
            speedup_label(base), f"{100 * confidence:.0f}% interval"]

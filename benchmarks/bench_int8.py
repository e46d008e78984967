"""INT8 post-training quantization of an AARM ResNet-18: accuracy kept, CPU speed gained.

    .venv/bin/python benchmarks/bench_int8.py [--checkpoint best.pt --data SYNTH] [--work runs/bench_int8]

Without --checkpoint it makes the synthetic dataset and trains an AARM ResNet-18 TSN on it with
`aarm.training.train` (the recipe of benchmarks/common.py `synthetic_recipe()` when that exists, else the
small 64x64 one below). The model is exported and run through the project's graph passes (export.passes,
as the export pipeline does before calibration; --no-optimize skips them). Then, for every calibration
method (minmax, entropy, percentile) and target (cpu, tensorrt), `calibration.calibrate` quantizes that
graph on the dataset's train clips, keeping layers in float while the top-1 drop on the dataset's test
clips is over --max-drop, and the benchmark reports:

- accuracy at the trained resolution on a *second* synthetic dataset (another seed: new scenes, same
  classes) that neither training nor the exclusion search has seen: FP32 and INT8 top-1, the drop, and
  top-1 agreement between the two graphs;
- onnxruntime CPU throughput at 224x224 (conv nets are resolution-agnostic: the trained weights are exported
  a second time with a 224x224 input and quantized with the same ranges and float layers), FP32 and every
  INT8 graph timed in interleaved trials in this one run, and the ratio to FP32; with a plain ResNet-18
  (no attention) timed alongside as the ratio onnxruntime's int8 kernels reach on this CPU without AARM.

Prints a table and writes benchmarks/results/int8.json. Goals: drop <= 1 point; target cpu >= 2.5x FP32.

`--users-path` measures instead the path users take at full size (issue 13): AARM-ResNet-50 and ResNet-50
(TSN K = 1, batch 8, 224x224, random weights) exported with `export_onnx`, then INT8 through `calibrate` on
the *exported* graph exactly as `aarm-export calibrate` runs it (the standard-op passes first, the cpu
target, unlabelled synthetic clips, so no accuracy budget: the trained ResNet-18 run above is the accuracy
check). FP32 is the optimised standard-op graph. Every graph is timed at 1 and 2 intra-op threads in
interleaved rounds after waiting for a quiet machine; ratios are paired by round with bootstrap intervals
(benchmarks/common.py); the report's kept-in-float nodes and their verdict in onnxruntime's optimised session
are recorded. Targets: AARM INT8 >= 2.5x FP32 at both thread counts; moonshot: AARM INT8 within 15% of plain
ResNet-50 INT8. `--quick` smoke-tests it at 64x64, batch 2, 3 rounds (writes int8_users_path.quick.json).
"""

import argparse
import importlib.util
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import aarm  # noqa: E402
from aarm.checkpoint import load_checkpoint  # noqa: E402
from aarm.data.preprocessing import Preprocessing  # noqa: E402
from aarm.data.synthetic import make_synthetic  # noqa: E402
from aarm.fileio import write_json  # noqa: E402
from aarm.progress import plain_progress  # noqa: E402
from aarm.training import TrainConfig, train  # noqa: E402
from calibration.cache import load_ranges, ranges_from_json, ranges_to_json  # noqa: E402
from calibration.quantize import (  # noqa: E402
    METHODS,
    TARGETS,
    CalibrationConfig,
    calibrate,
    compute_ranges,
    prepare_graph,
    quantize_graph,
)
from calibration.reader import ClipReader, ClipSet, find_clips  # noqa: E402
from calibration.sensitivity import graph_scores, session  # noqa: E402
from export.onnx_export import export_onnx  # noqa: E402
from runtime.bench import host_info, latency_stats  # noqa: E402

console = Console(width=150)
CPU_SPEEDUP_GOAL = 2.5

# Fallback recipe (benchmarks/common.py `synthetic_recipe()` wins when present): 8 classes, 40 videos each.
DEFAULT_DATASET = {"classes": 8, "videos_per_class": 40, "frames": 24, "size": 80}
DEFAULT_TRAIN = {"model": "resnet18", "attention": "aarm", "size": 64, "segments": 3, "epochs": 40, "batch_size": 16,
                 "lr": 0.005, "weight_decay": 1e-4, "schedule": "cosine", "workers": 2}


def recipe() -> tuple[dict[str, Any], dict[str, Any], str]:
    """(make_synthetic kwargs, TrainConfig kwargs, where they came from)."""
    common = ROOT / "benchmarks" / "common.py"
    if common.is_file():
        spec = importlib.util.spec_from_file_location("bench_common", common)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if hasattr(module, "synthetic_recipe"):
            r = module.synthetic_recipe()
            if isinstance(r, TrainConfig):
                return dict(DEFAULT_DATASET), r.to_dict(), "benchmarks/common.py"
            if isinstance(r, dict) and ("train" in r or "dataset" in r):
                train_cfg = r.get("train", {})
                train_cfg = train_cfg.to_dict() if isinstance(train_cfg, TrainConfig) else dict(train_cfg)
                return {**DEFAULT_DATASET, **dict(r.get("dataset", {}))}, train_cfg, "benchmarks/common.py"
            if isinstance(r, dict):
                return dict(DEFAULT_DATASET), dict(r), "benchmarks/common.py"
            raise SystemExit(f"benchmarks/common.py synthetic_recipe() returned {type(r).__name__}; expected a "
                             "TrainConfig or a dict")
    return dict(DEFAULT_DATASET), dict(DEFAULT_TRAIN), "bench_int8.py default"


def _overrides(items: list[str]) -> dict[str, Any]:
    """KEY=VALUE strings -> {key: value}, values read as JSON where they parse (numbers, booleans)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"expected KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def get_model(args: argparse.Namespace, work: Path) -> tuple[Path, Path, dict[str, Any]]:
    """(checkpoint, calibration dataset root, how it was made)."""
    dataset, train_cfg, source = recipe()
    dataset.update(_overrides(args.dataset_option))
    train_cfg.update(_overrides(args.train_option))
    if args.dataset_option or args.train_option:
        source += f" with {' '.join(args.dataset_option + args.train_option)}"
    data = Path(args.data) if args.data else work / "synthetic"
    if not args.data and not (data / "dataset.json").is_file():
        console.print(f"making the synthetic dataset {data} ({dataset})")
        make_synthetic(data, **{"seed": 0, **dataset}, workers=args.workers, progress=plain_progress(), force=True)
    if args.checkpoint:
        return Path(args.checkpoint), data, {"checkpoint": args.checkpoint, "data": str(data)}
    ckpt = work / "train" / "best.pt"
    info = {"recipe": source, "dataset": dataset, "train": train_cfg, "data": str(data)}
    cfg = TrainConfig(**{"seed": 0, **train_cfg, "attention": "aarm", "data": str(data), "out": str(work / "train")})
    resume = (work / "train" / "last.pt").is_file() and not args.retrain
    console.print(f"{'resuming' if resume else 'training'} {cfg.model} ({cfg.attention}) at {cfg.size}x{cfg.size} "
                  f"for {cfg.epochs} epochs in {cfg.out} (--retrain starts over)")
    result = train(cfg, resume=resume, force=not resume, on_epoch=lambda row: console.print(
        f"  epoch {row['epoch'] + 1}: loss {row['train_loss']:.3f}, held-out top-1 {row['val_top1']:.1%}"))
    info["best_top1"], info["best_epoch"] = result.best_top1, result.best_epoch
    info["log"] = result.log
    return ckpt, data, info


def export_graph(ckpt: Any, prep: Preprocessing, out: Path, *, optimize: bool) -> Path:
    """The checkpoint's model as a float ONNX artifact for `prep`'s input; with `optimize`, after the
    project's graph passes (export.passes: AARM's channel fusion rewritten to elementwise ops, global
    pools), as the export pipeline feeds calibration."""
    export_onnx(ckpt.model, out, classes=ckpt.classes, preprocessing=prep, trained=True, force=True)
    if not optimize:
        return out
    from export.passes import optimize_onnx

    optimized = out.with_name(out.name.replace(".onnx", ".opt.onnx"))
    optimize_onnx(out, optimized, force=True)
    return optimized


def report_set(work: Path, data: Path, args: argparse.Namespace) -> Path:
    """A second synthetic dataset (seed 1, same classes and sizes) that nothing was fitted or searched on."""
    meta = json.loads((data / "dataset.json").read_text())
    root = work / "synthetic-report"
    if not (root / "dataset.json").is_file():
        params = {k: v for k, v in meta["params"].items() if k in ("frames", "size", "trails")}
        console.print(f"making the report dataset {root} (seed 1)")
        make_synthetic(root, classes=len(meta["classes"]), videos_per_class=args.report_videos, seed=1,
                       workers=args.workers, progress=plain_progress(), force=True, **params)
    return root


def correspondence(small: Path, big: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Tensor and node names of the `small`-input graph -> those of the same model exported with a bigger
    input. The exporter numbers a few nodes differently per input size, so nodes are paired by position:
    both graphs must have the same ops in the same order."""
    a, b = onnx.load(str(small)), onnx.load(str(big))
    if [n.op_type for n in a.graph.node] != [n.op_type for n in b.graph.node]:
        raise SystemExit(f"{small} and {big} are not the same graph at two input sizes")
    tensors = {t.name: t.name for t in a.graph.initializer}
    tensors.update({i.name: i.name for i in a.graph.input})
    nodes = {}
    for na, nb in zip(a.graph.node, b.graph.node, strict=True):
        nodes[na.name] = nb.name
        tensors.update(zip(na.output, nb.output, strict=True))
    return tensors, nodes


class ArrayReader:
    """A calibration reader over in-memory arrays (random inputs: ranges for timing-only graphs)."""

    def __init__(self, name: str, x: np.ndarray) -> None:
        self.name, self.x, self.i, self.end = name, x, 0, len(x)

    def __len__(self) -> int:
        return len(self.x)

    def set_range(self, start: int, end: int) -> None:
        self.i, self.end = start, min(end, len(self.x))

    def rewind(self) -> None:
        self.set_range(0, len(self.x))

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= self.end:
            return None
        self.i += 1
        return {self.name: self.x[self.i - 1 : self.i]}


def reference_graphs(work: Path, prep: Preprocessing, classes: list[str]) -> dict[str, Path]:
    """A plain ResNet-18 TSN (no attention, random weights) as FP32 and CPU-target INT8 graphs with the
    same input: the ratio onnxruntime's int8 kernels reach on this CPU without AARM's extra ops."""
    model = aarm.create_model("resnet18", num_classes=len(classes), attention="none", segments=prep.segments).eval()
    fp32 = work / "reference.fp32.onnx"
    export_onnx(model, fp32, classes=classes, preprocessing=prep, trained=False, force=True)
    prepared = prepare_graph(fp32, work / "reference.prepared.onnx")
    x = np.random.default_rng(0).standard_normal((4, *prep.input_shape(1)[1:]), dtype=np.float32)
    ranges = compute_ranges(prepared, ArrayReader("input", x), "minmax", workdir=work)
    int8 = work / "reference.cpu.int8.onnx"
    quantize_graph(prepared, int8, ranges, target="cpu", method="minmax")
    return {"reference fp32": fp32, "reference cpu int8": int8}


def interleaved_throughput(
    graphs: dict[str, Path], shape: tuple[int, ...], *, trials: int, threads: int,
) -> dict[str, dict[str, Any]]:
    """Clips per second of each graph on onnxruntime CPU: `trials` interleaved rounds (benchmarks.common:
    rotating order, the bench's untimed switch calls before each timed one, a new session every round) ->
    median latency -> throughput."""
    from benchmarks.common import FreshSession, interleaved_rounds

    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    runners = {name: FreshSession(lambda p=path: session(p, threads=threads), x) for name, path in graphs.items()}
    times = interleaved_rounds(runners, trials, warmup=1, progress=lambda d, n: console.print(
        f"  timing round {d}/{n}", end="\r"))
    out = {}
    for name, rounds in times.items():
        stats = latency_stats([ms for r in rounds for ms in r])
        out[name] = {"latency_ms": stats, "clips_per_s": shape[0] / (stats["p50"] / 1000),
                     "providers": runners[name].session.get_providers()}
    return out


def users_path(args: argparse.Namespace) -> None:
    """INT8 vs FP32 for AARM-ResNet-50 and ResNet-50 on `calibrate`'s exported-graph path (module docstring)."""
    import os
    import tempfile

    from benchmarks.common import (
        FreshSession,
        interleaved_rounds,
        median_ms,
        overhead,
        paired_ratio,
        target_row,
        wait_for_quiet,
    )
    from export.passes import optimize_onnx, run_passes
    from runtime.host import CpuUse, load_average, thread_settings
    from runtime.host import host_info as host_facts

    size, batch, rounds = (64, 2, 3) if args.quick else (args.timing_size, args.batch, args.trials)
    threads_list = [int(v) for v in args.users_threads.split(",")]
    out = Path(args.out if args.out != str(ROOT / "benchmarks" / "results" / "int8.json") else
               ROOT / "benchmarks" / "results" / ("int8_users_path.quick.json" if args.quick else
                                                 "int8_users_path.json"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    models = {"aarm": "AARM-ResNet-50", "none": "ResNet-50"}
    graphs: dict[str, Path] = {}
    reports: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="aarm-bench-int8-") as tmp:
        work = Path(tmp)
        clips = work / "clips"
        make_synthetic(clips, classes=2, videos_per_class=4, frames=8, size=96, seed=0, force=True)
        folder = work / "unlabelled"
        folder.mkdir()
        for i, video in enumerate(sorted((clips / "videos").rglob("*.*"))):
            (folder / f"clip{i}{video.suffix}").write_bytes(video.read_bytes())
        for attention, label in models.items():
            from benchmarks.bench_export import build_model  # fusion weights off their 1 / 0 start

            model = build_model(attention, "resnet50")
            prep = Preprocessing.for_model(model.aarm_config, size=size)
            exported = work / f"{attention}.onnx"
            console.print(f"{label}: export, optimise, calibrate the exported graph")
            export_onnx(model, exported, classes=[f"c{i}" for i in range(101)], preprocessing=prep, trained=False)
            optimize_onnx(exported, work / f"{attention}.opt.onnx")
            result = calibrate(exported, work / f"{attention}.int8.onnx", CalibrationConfig(
                data=folder, clips=8, target="cpu", max_drop=1.0, require_labels=False), graph_passes=run_passes)
            graphs[f"{attention}/fp32"] = work / f"{attention}.opt.onnx"
            graphs[f"{attention}/int8"] = result.output
            r = result.report.to_json()
            reports[attention] = {"graph_passes": r["quantization"]["graph_passes"], "session": r["session"],
                                  "float_nodes": [{"node": e["node"], "in_session": e.get("in_session"),
                                                   "reason": e["reason"]} for e in r["excluded"]],
                                  "budget_note": r["budget_note"]}
        x = np.random.default_rng(0).standard_normal((batch, 1, 3, size, size), dtype=np.float32)
        quiet = wait_for_quiet(0.5 * cores, 0.0 if args.quick else args.wait)
        if not quiet["quiet"]:
            console.print(f"[bold yellow]BUSY:[/] load {quiet['load']} after {quiet['waited_s']:.0f} s; "
                          "measuring anyway")
        results: dict[str, Any] = {}
        rows: list[dict[str, Any]] = []
        for threads in threads_list:
            runners = {k: FreshSession(lambda p=p, t=threads: session(p, threads=t), x) for k, p in graphs.items()}
            load_before = load_average()
            with CpuUse() as use:
                times = interleaved_rounds(runners, rounds, warmup=1)
            ratios = {f"{a}: int8 over fp32": paired_ratio(times[f"{a}/fp32"], times[f"{a}/int8"]) for a in models}
            ratios["AARM overhead, int8"] = overhead(times["none/int8"], times["aarm/int8"])
            ratios["AARM overhead, fp32"] = overhead(times["none/fp32"], times["aarm/fp32"])
            rows += [{**target_row("AARM-ResNet-50 INT8 (calibrated on the exported graph) >= 2.5x FP32",
                                   ratios["aarm: int8 over fp32"], 2.5, at_least=True), "threads": threads},
                     {**target_row("moonshot: AARM INT8 within 15% of ResNet-50 INT8", ratios["AARM overhead, int8"],
                                   0.15, at_least=False), "threads": threads}]
            results[str(threads)] = {"load_before": load_before, "cpu_use": use.result(), "latency_ms": times,
                                     "median_ms": {k: median_ms(v) for k, v in times.items()}, "ratios": ratios}
            table = Table(title=f"INT8 vs FP32 on the users' path, {threads} thread(s), batch {batch} x {size}x{size}, "
                                f"{rounds} interleaved rounds")
            for col in ("graph", "median ms"):
                table.add_column(col)
            for k, v in results[str(threads)]["median_ms"].items():
                table.add_row(f"{models[k.split('/')[0]]} {k.split('/')[1]}", f"{v:.1f}")
            for k, v in ratios.items():
                fmt = (lambda z: f"{100 * z:+.1f}%") if "overhead" in k else (lambda z: f"{z:.2f}x")
                table.add_row(k, f"{fmt(v['value'])} [{fmt(v['low'])}, {fmt(v['high'])}]")
            console.print(table)
    busy = not quiet["quiet"] or any(v["cpu_use"]["busy"] for v in results.values())
    table = Table(title="Targets (issue 13)" + (" - BUSY machine, rerun quiet" if busy else ""))
    for col in ("threads", "target", "value", "pass", "sure"):
        table.add_column(col)
    for row in rows:
        pct = "overhead" in row["target"] or "within" in row["target"]
        value = f"{100 * row['value']:+.1f}%" if pct else f"{row['value']:.2f}x"
        table.add_row(str(row["threads"]), row["target"], value, "PASS" if row["pass"] else "FAIL",
                      "yes" if row["interval_clears"] else "no")
    console.print(table)
    for attention, rep in reports.items():
        console.print(f"{models[attention]}: {len(rep['float_nodes'])} node(s) kept in float, in onnxruntime's "
                      f"optimised session: {sorted({e['in_session'] for e in rep['float_nodes']}) or '-'}; "
                      f"{rep['session'].get('int8_kernels')} int8 kernels")
    write_json(out, {
        "benchmark": "int8_users_path", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": host_facts(),
        "threads_settings": thread_settings(), "quiet_wait": quiet, "busy": busy,
        "config": {"models": list(models.values()), "batch": batch, "size": size, "segments": 1, "rounds": rounds,
                   "threads": threads_list, "quick": args.quick, "fp32": "optimised standard-op graph",
                   "int8": "calibrate(exported graph, graph_passes=run_passes, target cpu, percentile, 8 clips)"},
        "calibration": reports, "results": results, "targets": rows,
    })
    console.print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="Trained AARM checkpoint; default: train one on the synthetic set.")
    parser.add_argument("--data", help="Calibration dataset (train split calibrates, test split searches).")
    parser.add_argument("--work", default=str(ROOT / "runs" / "bench_int8"), help="Working folder.")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "int8.json"))
    parser.add_argument("--methods", default="minmax,entropy,percentile")
    parser.add_argument("--targets", default="cpu,tensorrt")
    parser.add_argument("--clips", type=int, default=64, help="Calibration clips.")
    parser.add_argument("--max-drop", type=float, default=1.0)
    parser.add_argument("--report-videos", type=int, default=40, help="Videos per class of the report set.")
    parser.add_argument("--timing-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8, help="Clips per timed run.")
    parser.add_argument("--trials", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads for timing.")
    parser.add_argument("--workers", type=int, default=2, help="Processes for dataset synthesis.")
    parser.add_argument("--retrain", action="store_true")
    parser.add_argument("--dataset-option", action="append", default=[], metavar="KEY=VALUE",
                        help="Override a make_synthetic setting of the recipe (repeatable).")
    parser.add_argument("--train-option", action="append", default=[], metavar="KEY=VALUE",
                        help="Override a TrainConfig setting of the recipe (repeatable).")
    parser.add_argument("--no-optimize", dest="optimize", action="store_false",
                        help="Quantize the exported graph as it is, without the project's graph passes.")
    parser.add_argument("--no-reference", dest="reference", action="store_false",
                        help="Skip timing a plain ResNet-18 (the int8 ratio this CPU reaches without AARM).")
    parser.add_argument("--users-path", action="store_true",
                        help="AARM-ResNet-50 / ResNet-50 INT8 vs FP32 through calibrate on the exported graph")
    parser.add_argument("--users-threads", default="1,2", help="Thread counts for --users-path.")
    parser.add_argument("--wait", type=float, default=600.0, help="--users-path: seconds to wait for a quiet machine")
    parser.add_argument("--quick", action="store_true", help="--users-path smoke test: 64x64, batch 2, 3 rounds")
    args = parser.parse_args()
    if args.users_path:
        users_path(args)
        return
    methods, targets = args.methods.split(","), args.targets.split(",")
    for m in methods:
        assert m in METHODS, f"unknown method {m}"
    for t in targets:
        assert t in TARGETS, f"unknown target {t}"
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    ckpt_path, data, model_info = get_model(args, work)
    ckpt = load_checkpoint(ckpt_path)
    fp32 = export_graph(ckpt, ckpt.preprocessing, work / "model.onnx", optimize=args.optimize)

    # Accuracy on the report set, at the trained resolution.
    report_root = report_set(work, data, args)
    train_part, test_part = (find_clips(report_root, subset=s) for s in ("train", "test"))
    held = ClipSet(train_part.records + test_part.records, train_part.classes, source=f"{report_root} (all)")
    if held.classes != ckpt.classes:
        raise SystemExit(f"report set classes {held.classes} differ from the model's {ckpt.classes}")
    reader = ClipReader(held, ckpt.preprocessing, "input")
    x, labels = reader.arrays(), reader.labels
    ref = graph_scores(fp32, x)
    fp32_top1 = float(100 * np.mean(ref.argmax(1) == labels))
    console.print(f"FP32 top-1 on the report set ({len(labels)} clips): {fp32_top1:.2f}%")

    # The same weights with a 224x224 input, prepared once, for timing.
    big_prep = replace(ckpt.preprocessing, size=args.timing_size, scale_size=args.timing_size * 8 // 7)
    fp32_big = export_graph(ckpt, big_prep, work / f"model.{args.timing_size}.onnx", optimize=args.optimize)
    prepared_big = prepare_graph(fp32_big, work / f"model.{args.timing_size}.prepared.onnx")
    tensor_map, node_map = correspondence(prepare_graph(fp32, work / "model.prepared.onnx"), prepared_big)

    cache = work / "calibration-cache.json"
    rows: list[dict[str, Any]] = []
    timing_graphs: dict[str, Path] = {"fp32": fp32_big}
    for target in targets:
        for method in methods:
            name = f"{target}/{method}"
            out = work / f"model.{target}.{method}.int8.onnx"
            console.print(f"[bold]{name}[/]: calibrating")
            t0 = time.perf_counter()
            config = CalibrationConfig(data=data, clips=args.clips, method=method, target=target,
                                       max_drop=args.max_drop, cache=cache)
            result = calibrate(fp32, out, config, force=True)
            seconds = time.perf_counter() - t0
            r = result.report.to_json()
            scores = graph_scores(out, x)
            top1 = float(100 * np.mean(scores.argmax(1) == labels))
            excluded = [e["node"] for e in r["excluded"]]
            big = work / f"model.{args.timing_size}.{target}.{method}.int8.onnx"
            ranges = load_ranges(cache, r["calibration"]["cache"]["key"])
            ranges = ranges_from_json(ranges.calibration_method.name,
                                      {tensor_map[k]: v for k, v in ranges_to_json(ranges).items()})
            quantize_graph(prepared_big, big, ranges, target=target, method=method,
                           exclude=[node_map[n] for n in excluded])
            timing_graphs[name] = big
            rows.append({
                "target": target, "method": method, "int8_top1": top1, "drop": fp32_top1 - top1,
                "agreement": float(100 * np.mean(scores.argmax(1) == ref.argmax(1))),
                "search_set": r["accuracy"], "float_groups": r["float_groups"],
                "float_nodes": {"total": len(excluded),
                                "speed": sum("slower in int8" in e["reason"] for e in r["excluded"]),
                                "sensitivity": sum(e["group"] is not None for e in r["excluded"])},
                "calibrate_seconds": round(seconds, 1), "cache_hit": r["calibration"]["cache"]["hit"],
                "graph": str(out),
            })
            console.print(f"  top-1 {top1:.2f}% (drop {fp32_top1 - top1:+.2f}), float groups {r['float_groups']}")

    console.print(f"timing {len(timing_graphs)} graphs at {args.timing_size}x{args.timing_size}, batch {args.batch}, "
                  f"{args.threads} thread(s), {args.trials} interleaved rounds")
    if args.reference:
        timing_graphs.update(reference_graphs(work, big_prep, ckpt.classes))
    shape = (args.batch, *big_prep.input_shape(1)[1:])
    timing = interleaved_throughput(timing_graphs, shape, trials=args.trials, threads=args.threads)
    base = timing["fp32"]["clips_per_s"]
    reference = None
    if args.reference:
        reference = {"model": "resnet18 TSN, attention none, random weights, cpu target minmax",
                     "fp32_clips_per_s": timing["reference fp32"]["clips_per_s"],
                     "int8_clips_per_s": timing["reference cpu int8"]["clips_per_s"],
                     "speedup": timing["reference cpu int8"]["clips_per_s"] / timing["reference fp32"]["clips_per_s"]}
    for row in rows:
        t = timing[f"{row['target']}/{row['method']}"]
        row["throughput_clips_per_s"], row["speedup"] = t["clips_per_s"], t["clips_per_s"] / base
        row["latency_ms"] = t["latency_ms"]

    table = Table(title=f"INT8 vs FP32: AARM {ckpt.config['name']}, accuracy at {ckpt.preprocessing.size}px on "
                        f"{len(labels)} unseen clips, onnxruntime CPU throughput at {args.timing_size}px")
    for col in ("target", "method", "top-1 %", "drop", "agreement %", "float groups", "clips/s", "vs FP32"):
        table.add_column(col, justify="left" if col in ("target", "method") else "right")
    table.add_row("fp32", "-", f"{fp32_top1:.2f}", "-", "100.0", "-", f"{base:.2f}", "1.00x")
    for row in rows:
        table.add_row(row["target"], row["method"], f"{row['int8_top1']:.2f}", f"{row['drop']:+.2f}",
                      f"{row['agreement']:.1f}", str(len(row["float_groups"])),
                      f"{row['throughput_clips_per_s']:.2f}", f"{row['speedup']:.2f}x")
    if reference:
        table.add_row("reference", "plain R18", "-", "-", "-", "-",
                      f"{reference['int8_clips_per_s']:.2f}", f"{reference['speedup']:.2f}x")
    console.print(table)
    cpu_rows = [r for r in rows if r["target"] == "cpu"]
    best_cpu = max((r["speedup"] for r in cpu_rows), default=None)
    summary = {
        "max_drop": args.max_drop, "accuracy_held": all(r["drop"] <= args.max_drop for r in rows),
        "cpu_speedup_goal": CPU_SPEEDUP_GOAL, "best_cpu_speedup": best_cpu,
        "cpu_speedup_met": None if best_cpu is None else best_cpu >= CPU_SPEEDUP_GOAL,
    }
    console.print(summary)
    results = {
        "benchmark": "int8", "host": host_info(), "threads": args.threads, "model": ckpt.config,
        "model_source": model_info, "checkpoint": str(ckpt_path), "trained_size": ckpt.preprocessing.size,
        "graph": "export + export.passes (optimize_onnx)" if args.optimize else "export",
        "calibration": {"data": str(data), "clips": args.clips, "search_set": "test split of the calibration data"},
        "report_set": {"data": str(report_root), "clips": len(labels), "seed": 1},
        "timing": {"size": args.timing_size, "batch": args.batch, "trials": args.trials,
                   "fp32": timing["fp32"], "reference": reference},
        "fp32_top1": fp32_top1, "results": rows, "summary": summary,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json(args.out, results)
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

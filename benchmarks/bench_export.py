"""Exported vs optimised vs FP16 ONNX graphs on onnxruntime CPU, next to PyTorch eager, for AARM-ResNet-50 and
plain ResNet-50 (TSN with K = 1, a batch of 8 frames at 224x224, 101 classes).

    .venv/bin/python benchmarks/bench_export.py                      # table + benchmarks/results/export.json
    .venv/bin/python benchmarks/bench_export.py --trials 15 --workdir /tmp/aarm-bench --reuse

Every variant runs once per trial, interleaved in a rotating order so drift and other processes on the shared
machine hit them alike; latencies are medians (min and quartiles beside). Targets, as ratios from one run:
- optimised AARM-ResNet-50 graph at least 2x faster than PyTorch eager AARM-ResNet-50;
- AARM's latency overhead over the plain ResNet-50 graph (both optimised) at most 15%.
Both are reported for the portable standard-op graph and for the graph with the fused CPU kernels
(`aarm-export optimize --kernels`), which is what meets the overhead target on onnxruntime's CPU provider.
"""

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aarm  # noqa: E402
from aarm.data.preprocessing import Preprocessing  # noqa: E402
from aarm.errors import BackendUnavailable  # noqa: E402
from aarm.fileio import write_json  # noqa: E402
from export.console import console, print_table  # noqa: E402
from export.fp16 import convert_onnx  # noqa: E402
from export.onnx_export import export_onnx  # noqa: E402
from export.passes import optimize_onnx  # noqa: E402
from export.verify import compare_graphs  # noqa: E402
from runtime.artifact import software_versions  # noqa: E402

MODELS = {"aarm": "AARM-ResNet-50", "none": "ResNet-50"}


def build_artifacts(workdir: Path, reuse: bool, kernels: bool) -> dict[str, Any]:
    """Export, optimise and convert both models; returns {attention: {"model": nn.Module, "paths": {...}}}."""
    built: dict[str, Any] = {}
    for attention in MODELS:
        torch.manual_seed(0)
        model = aarm.create_model("resnet50", num_classes=101, attention=attention, segments=1).eval()
        prep = Preprocessing.for_model(model.aarm_config, size=224)
        paths = {k: workdir / f"resnet50_{attention}.{k}.onnx" for k in ("exported", "optimised", "fp16")}
        if kernels and attention == "aarm":
            paths["kernels"] = workdir / f"resnet50_{attention}.kernels.onnx"

        def needed(kind: str, paths: dict[str, Path] = paths) -> bool:
            path = paths[kind]
            return not (reuse and path.is_file() and path.with_name(path.name + ".json").is_file())

        with console.status(f"{MODELS[attention]}: export, optimise, FP16"):
            if needed("exported"):
                export_onnx(model, paths["exported"], classes=[f"c{i}" for i in range(101)], preprocessing=prep,
                            trained=False, force=True)
            if needed("optimised"):
                optimize_onnx(paths["exported"], paths["optimised"], force=True)
            if needed("fp16"):
                convert_onnx(paths["optimised"], paths["fp16"], force=True)
            if "kernels" in paths and needed("kernels"):
                optimize_onnx(paths["exported"], paths["kernels"], kernels=True, force=True)
        built[attention] = {"model": model, "paths": paths}
    return built


def sessions(built: dict[str, Any], threads: int) -> dict[str, Any]:
    """name -> callable(x) running one batch, for every onnxruntime graph and both PyTorch models."""
    import onnxruntime as ort

    from export.verify import uses_custom_ops

    runners: dict[str, Any] = {}
    for attention, item in built.items():
        model = item["model"]

        def eager(x: np.ndarray, m=model) -> None:
            with torch.inference_mode():
                m(torch.from_numpy(x))

        runners[f"{attention}/pytorch-eager"] = eager
        for kind, path in item["paths"].items():
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.log_severity_level = 3
            if uses_custom_ops(path):
                from export.kernels import custom_op_library

                opts.register_custom_ops_library(str(custom_op_library()))
            sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            name = sess.get_inputs()[0].name
            runners[f"{attention}/ort-{kind}"] = lambda x, s=sess, n=name: s.run(None, {n: x})
    return runners


def measure(runners: dict[str, Any], x: np.ndarray, trials: int, warmup: int) -> dict[str, list[float]]:
    from rich.progress import Progress

    names = list(runners)
    for name in names:
        for _ in range(warmup):
            runners[name](x)
    times: dict[str, list[float]] = {n: [] for n in names}
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("interleaved trials", total=trials * len(names))
        for t in range(trials):
            order = names[t % len(names):] + names[: t % len(names)]  # rotate who goes first
            for name in order:
                start = time.perf_counter()
                runners[name](x)
                times[name].append(time.perf_counter() - start)
                bar.advance(task)
    return times


def summarise(times: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    out = {}
    for name, ts in times.items():
        q = np.percentile(ts, [25, 75])
        out[name] = {"median_ms": 1e3 * statistics.median(ts), "min_ms": 1e3 * min(ts), "p25_ms": 1e3 * q[0],
                     "p75_ms": 1e3 * q[1], "trials_ms": [1e3 * t for t in ts]}
    return out


def ratios(stats: dict[str, dict[str, float]]) -> dict[str, float]:
    med = {k: v["median_ms"] for k, v in stats.items()}
    r = {
        "aarm_eager_over_optimised": med["aarm/pytorch-eager"] / med["aarm/ort-optimised"],
        "aarm_overhead_exported": med["aarm/ort-exported"] / med["none/ort-exported"] - 1,
        "aarm_overhead_optimised": med["aarm/ort-optimised"] / med["none/ort-optimised"] - 1,
        "aarm_overhead_fp16": med["aarm/ort-fp16"] / med["none/ort-fp16"] - 1,
        "aarm_overhead_eager": med["aarm/pytorch-eager"] / med["none/pytorch-eager"] - 1,
        "aarm_optimised_speedup_over_exported": med["aarm/ort-exported"] / med["aarm/ort-optimised"],
        "plain_eager_over_ort": med["none/pytorch-eager"] / med["none/ort-optimised"],
    }
    if "aarm/ort-kernels" in med:
        r["aarm_eager_over_kernels"] = med["aarm/pytorch-eager"] / med["aarm/ort-kernels"]
        r["aarm_overhead_kernels"] = med["aarm/ort-kernels"] / med["none/ort-optimised"] - 1
    return r


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op and torch threads")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the graphs here (default: a temp dir)")
    parser.add_argument("--reuse", action="store_true", help="reuse graphs already in --workdir")
    parser.add_argument("--no-kernels", action="store_true", help="skip the fused-kernel graph")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "export.json")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    kernels = not args.no_kernels
    if kernels:
        try:
            from export.kernels import custom_op_library

            custom_op_library()
        except BackendUnavailable as exc:
            console.print(f"[yellow]fused kernels unavailable, skipping them:[/] {exc}")
            kernels = False
    with tempfile.TemporaryDirectory(prefix="aarm-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        built = build_artifacts(workdir, args.reuse and args.workdir is not None, kernels)
        parity = {
            kind: compare_graphs(built["aarm"]["paths"]["exported"], path, samples=2, batch=2)
            for kind, path in built["aarm"]["paths"].items() if kind != "exported"
        }
        runners = sessions(built, args.threads)
        x = np.random.default_rng(0).standard_normal((args.batch, 1, 3, 224, 224), dtype=np.float32)
        stats = summarise(measure(runners, x, args.trials, args.warmup))
    r = ratios(stats)

    rows = []
    for name, s in stats.items():
        attention, variant = name.split("/")
        rows.append((MODELS[attention], variant, f"{s['median_ms']:.0f}", f"{s['min_ms']:.0f}",
                     f"{s['p25_ms']:.0f}-{s['p75_ms']:.0f}"))
    print_table(f"Latency, batch {args.batch} x 224x224, onnxruntime CPU ({args.threads} threads), "
                f"{args.trials} interleaved trials", ["model", "variant", "median ms", "min ms", "IQR ms"], rows)
    targets = {
        "optimised_2x_faster_than_eager": r["aarm_eager_over_optimised"] >= 2.0,
        "overhead_optimised_at_most_15pct": r["aarm_overhead_optimised"] <= 0.15,
    }
    if "aarm_overhead_kernels" in r:
        targets["kernels_2x_faster_than_eager"] = r["aarm_eager_over_kernels"] >= 2.0
        targets["overhead_kernels_at_most_15pct"] = r["aarm_overhead_kernels"] <= 0.15
    print_table("Ratios (medians of this run)", ["ratio", "value"],
                [(k, f"{100 * v:+.1f}%" if "overhead" in k else f"{v:.2f}x") for k, v in r.items()])
    print_table("Targets", ["target", "met"], [(k, "yes" if v else "NO") for k, v in targets.items()])
    print_table("Parity vs the exported AARM graph (onnxruntime CPU)", ["graph", "max abs error", "top-1 agreement"],
                [(k, f"{v['max_abs_error']:.2e}", f"{100 * v['top1_agreement']:.0f}%") for k, v in parity.items()])
    write_json(args.out, {
        "benchmark": "export",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "versions": software_versions(),
        "config": {"batch": args.batch, "input": [args.batch, 1, 3, 224, 224], "classes": 101, "threads": args.threads,
                   "trials": args.trials, "warmup": args.warmup, "kernels": kernels},
        "latency": stats,
        "ratios": r,
        "targets": targets,
        "parity_vs_exported": parity,
    })
    console.print(f"wrote {args.out}", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

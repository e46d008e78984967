"""The project's ONNX graphs against what users would do without it, for AARM-ResNet-50 and plain ResNet-50
(TSN with K = 1, a batch of 8 frames at 224x224, 101 classes), at 1 and 2 intra-op threads.

    .venv/bin/python benchmarks/bench_export.py                 # table + benchmarks/results/export.json
    .venv/bin/python benchmarks/bench_export.py --quick         # smoke test: 64x64, batch 2, 3 rounds
    .venv/bin/python benchmarks/bench_export.py --investigate   # + opset 18 and static-batch graphs
    .venv/bin/python benchmarks/bench_export.py --only-onnx --profile  # + time per op type in each graph

Variants per model, all timed in this one process:
- `naive`: a plain `torch.onnx.export(model, x, path)` with default settings (fixed batch, the exporter's
  default opset), run on onnxruntime with default session options: the obvious path;
- `exported` (the project's `export_onnx`: dynamic batch N, opset 17), `optimised` (its standard-op passes),
  `kernels` (AARM only, `optimize --kernels`, where a C++ compiler built the custom ops; run as the runtime
  runs it, with its kernels on onnxruntime's blocked layout: `runtime.blocked_kernels`);
- `eager` (PyTorch, inference mode), `compile` (`torch.compile`, default mode), and `eager-train`
  (forward + backward in train mode: what training runs);
- with --investigate: `optimised-opset18` (exported at opset 18, no down-conversion) and `optimised-static`
  (the optimised graph with its batch axis fixed to --batch).

Method (DESIGN, "Speed"): wait for a quiet machine (1-minute load average under --max-load, at most
--wait seconds; a machine still busy is measured anyway and flagged BUSY), then per thread count
interleaved rounds (every variant once per round after the bench's untimed switch calls, the order rotated;
each onnxruntime variant in a new session every round, `benchmarks.common.FreshSession`),
medians, and every ratio paired by round with the runtime's two-stage bootstrap 95% interval. Host facts
(CPU model, cores, load before/after, other processes' CPU use, thread settings, versions) go into the JSON.
The issue's targets print as pass/fail rows (pass: the median meets the limit; "sure": the interval does).
"""

import argparse
import os
import sys
import tempfile
import time
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aarm  # noqa: E402
from aarm.data.preprocessing import Preprocessing  # noqa: E402
from aarm.errors import BackendUnavailable  # noqa: E402
from aarm.fileio import write_json  # noqa: E402
from benchmarks.common import (  # noqa: E402
    FreshSession,
    interleaved_rounds,
    median_ms,
    overhead,
    paired_ratio,
    target_row,
    wait_for_quiet,
)
from export.console import console, print_table  # noqa: E402
from export.onnx_export import export_onnx  # noqa: E402
from export.passes import optimize_onnx  # noqa: E402
from runtime.host import CpuUse, host_info, load_average, thread_settings  # noqa: E402

MODELS = {"aarm": "AARM-resnet50", "none": "resnet50"}  # labels; --backbone renames them
CLASSES = 101


def build_model(attention: str, backbone: str) -> torch.nn.Module:
    """A randomly initialised model, with the fusion weights and biases moved off their 1 / 0 start (as
    training leaves them), so no pass can drop a Mul by 1 or an Add of 0 that a trained model would keep."""
    torch.manual_seed(0)
    model = aarm.create_model(backbone, num_classes=CLASSES, attention=attention, segments=1).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("fuse.conv.weight"):
                p.add_(0.1 * torch.randn_like(p))
            elif name.endswith("fuse.conv.bias"):
                p.copy_(0.05 * torch.randn_like(p))
    return model


def naive_export(model: torch.nn.Module, x: torch.Tensor, path: Path) -> Path:
    """What a user without this project writes: torch.onnx.export with its defaults."""
    import contextlib
    import io
    import warnings

    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path))
    return path


def static_batch(src: Path, out: Path, batch: int) -> Path:
    """A copy of `src` with the batch axis of its inputs and outputs fixed to `batch`."""
    model = onnx.load(str(src))
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_param")
            dims[0].dim_value = batch
    del model.graph.value_info[:]
    onnx.save(model, str(out))
    return out


def build_graphs(
    workdir: Path, models: dict[str, torch.nn.Module], x: torch.Tensor, size: int, kernels: bool, investigate: bool,
) -> dict[str, dict[str, Path]]:
    """attention -> variant -> graph path."""
    graphs: dict[str, dict[str, Path]] = {}
    for attention, model in models.items():
        prep = Preprocessing.for_model(model.aarm_config, size=size)
        p = {k: workdir / f"{attention}.{k}.onnx" for k in ("naive", "exported", "optimised")}
        labels = [f"c{i}" for i in range(CLASSES)]
        with console.status(f"{MODELS[attention]}: naive export, export, optimise"):
            naive_export(model, x, p["naive"])
            export_onnx(model, p["exported"], classes=labels, preprocessing=prep, trained=False, force=True)
            optimize_onnx(p["exported"], p["optimised"], force=True)
            if kernels and attention == "aarm":
                p["kernels"] = workdir / f"{attention}.kernels.onnx"
                optimize_onnx(p["exported"], p["kernels"], kernels=True, force=True)
            if investigate:
                e18 = workdir / f"{attention}.exported-opset18.onnx"
                export_onnx(model, e18, classes=labels, preprocessing=prep, trained=False, opset=18, force=True)
                p["optimised-opset18"] = workdir / f"{attention}.optimised-opset18.onnx"
                optimize_onnx(e18, p["optimised-opset18"], force=True)
                p["optimised-static"] = static_batch(p["optimised"], workdir / f"{attention}.optimised-static.onnx",
                                                     x.shape[0])
        graphs[attention] = p
    return graphs


def ort_session(path: Path, threads: int, profile_prefix: str | None = None) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    if profile_prefix:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    model, library = session_model(path)
    if library is not None:
        opts.register_custom_ops_library(str(library))
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


@cache
def session_model(path: Path) -> tuple[str | bytes, Path | None]:
    """What a session opens for `path` and the custom-op library it registers: a kernel graph as the runtime
    opens it (runtime.backends.onnxruntime_backend), with its kernels on onnxruntime's blocked layout."""
    from export.verify import uses_custom_ops

    if not uses_custom_ops(path):
        return str(path), None
    from export.kernels import custom_op_library
    from runtime.blocked_kernels import blocked_kernel_graph

    library = custom_op_library()
    blocked = blocked_kernel_graph(str(path), library)
    return (blocked.SerializeToString() if blocked is not None else str(path)), library


def parity(graphs: dict[str, dict[str, Path]], models: dict[str, torch.nn.Module], x: np.ndarray) -> dict[str, Any]:
    """Max abs score difference of every graph against PyTorch eager on the benchmark input."""
    out: dict[str, Any] = {}
    for attention, paths in graphs.items():
        with torch.inference_mode():
            want = models[attention](torch.from_numpy(x)).numpy()
        for variant, path in paths.items():
            sess = ort_session(path, 1)
            got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
            out[f"{attention}/{variant}"] = {"max_abs_error": float(np.abs(got - want).max()),
                                             "top1_agreement": float((got.argmax(1) == want.argmax(1)).mean())}
    return out


def op_profile(path: Path, x: np.ndarray, threads: int, workdir: Path, runs: int = 3) -> dict[str, Any]:
    """Where one graph's time goes in onnxruntime: per op type (after onnxruntime's own fusions and layout
    changes, e.g. ReorderInput/ReorderOutput around ops that have no blocked-layout kernel), the kernel time
    per run in ms and the node count, from onnxruntime's profiler over `runs` runs after one warm-up."""
    import json
    from collections import Counter

    sess = ort_session(path, threads, profile_prefix=str(workdir / f"profile-{path.stem}"))
    feed = {sess.get_inputs()[0].name: x}
    sess.run(None, feed)
    for _ in range(runs):
        sess.run(None, feed)
    events = json.loads(Path(sess.end_profiling()).read_text())
    total: Counter[str] = Counter()
    nodes: Counter[str] = Counter()
    model_runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    run_ms = [e["dur"] / 1000 for e in model_runs[1:]]
    warm_end = model_runs[0]["ts"] + model_runs[0]["dur"]  # the warm-up run is not counted
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] > warm_end:
            total[e["args"]["op_name"]] += e["dur"]
            nodes[e["args"]["op_name"]] += 1
    return {"threads": threads, "run_ms_median": float(np.median(run_ms)) if run_ms else None,
            "ops": {op: {"ms_per_run": us / 1000 / runs, "nodes": nodes[op] // runs}
                    for op, us in total.most_common()}}


def runners_for(
    graphs: dict[str, dict[str, Path]], models: dict[str, torch.nn.Module], compiled: dict[str, Any], x: np.ndarray,
    threads: int, train: bool, eager: bool,
) -> dict[str, Any]:
    runners: dict[str, Any] = {}
    xt = torch.from_numpy(x)
    for attention, model in models.items():
        def forward(m=model) -> None:
            with torch.inference_mode():
                m(xt)

        if eager:
            runners[f"{attention}/eager"] = forward
        if attention in compiled:
            def comp(m=compiled[attention]) -> None:
                with torch.inference_mode():
                    m(xt)

            runners[f"{attention}/compile"] = comp
        if train:
            def step(m=model) -> None:
                m.train()
                try:
                    m.zero_grad(set_to_none=True)
                    m(xt).sum().backward()
                finally:
                    m.eval()

            runners[f"{attention}/eager-train"] = step
        for variant, path in graphs[attention].items():  # a new session every round (FreshSession)
            runners[f"{attention}/{variant}"] = FreshSession(lambda p=path: ort_session(p, threads), x)
    return runners


def ratios_and_targets(t: dict[str, list[list[float]]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Paired ratios of one thread count's rounds and the issue's target rows."""
    r: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    for attention in MODELS:
        a = attention
        if f"{a}/naive" in t:
            r[f"{a}: optimised over naive"] = paired_ratio(t[f"{a}/naive"], t[f"{a}/optimised"])
            rows.append(target_row(f"{MODELS[a]}: optimised standard-op graph >= 1.10x naive export",
                                   r[f"{a}: optimised over naive"], 1.10, at_least=True))
            r[f"{a}: exported over naive"] = paired_ratio(t[f"{a}/naive"], t[f"{a}/exported"])
            for extra in ("kernels", "optimised-opset18", "optimised-static"):
                if f"{a}/{extra}" in t:
                    r[f"{a}: {extra} over naive"] = paired_ratio(t[f"{a}/naive"], t[f"{a}/{extra}"])
        if f"{a}/eager" in t and f"{a}/optimised" in t:
            r[f"{a}: optimised over eager"] = paired_ratio(t[f"{a}/eager"], t[f"{a}/optimised"])
        if f"{a}/compile" in t and f"{a}/optimised" in t:
            r[f"{a}: optimised over torch.compile"] = paired_ratio(t[f"{a}/compile"], t[f"{a}/optimised"])
        if f"{a}/compile" in t and f"{a}/eager" in t:
            r[f"{a}: torch.compile over eager"] = paired_ratio(t[f"{a}/eager"], t[f"{a}/compile"])
    overheads = {"optimised": ("optimised", 0.15), "kernels": ("kernels", 0.08), "eager": ("eager", 0.30),
                 "eager-train": ("eager-train", 0.30), "naive": ("naive", None), "exported": ("exported", None),
                 "compile": ("compile", None)}
    for label, (variant, limit) in overheads.items():
        plain = "optimised" if variant == "kernels" else variant  # kernels: against the plain optimised graph
        if f"aarm/{variant}" not in t or f"none/{plain}" not in t:
            continue
        r[f"AARM overhead, {label}"] = overhead(t[f"none/{plain}"], t[f"aarm/{variant}"])
        if limit is not None:
            what = {"optimised": "standard-op graph", "kernels": "--kernels graph", "eager": "PyTorch eager forward",
                    "eager-train": "PyTorch eager forward+backward"}[label]
            rows.append(target_row(f"AARM overhead over plain {MODELS['none']}, {what} <= {100 * limit:.0f}%",
                                   r[f"AARM overhead, {label}"], limit, at_least=False))
    return r, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2", help="intra-op thread counts, comma-separated")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--max-load", type=float, default=None,
                        help="quiet means a 1-min load average under this (default: 0.5 x usable cores)")
    parser.add_argument("--wait", type=float, default=600.0, help="seconds to wait for a quiet machine")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--no-train", action="store_true", help="skip the eager forward+backward variant")
    parser.add_argument("--no-kernels", action="store_true", help="skip the fused-kernel graph")
    parser.add_argument("--investigate", action="store_true", help="add opset-18 and static-batch graphs")
    parser.add_argument("--only-onnx", action="store_true", help="onnxruntime graphs only (no PyTorch variants)")
    parser.add_argument("--only-pytorch", action="store_true", help="PyTorch variants only (no ONNX graphs)")
    parser.add_argument("--profile", action="store_true",
                        help="also profile each ONNX graph by op type at the first thread count (after the timing)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 64x64, batch 2, 3 rounds, no waiting")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the graphs here (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON (default benchmarks/results/export.json; --quick: export.quick.json)")
    args = parser.parse_args(argv)
    if args.only_onnx:
        args.no_compile = args.no_train = True
    MODELS.update(aarm=f"AARM-{args.backbone}", none=args.backbone)
    if args.quick:
        args.size, args.batch, args.rounds, args.wait = 64, 2, 3, 0.0
    out = args.out or ROOT / "benchmarks" / "results" / ("export.quick.json" if args.quick else "export.json")
    thread_counts = [int(v) for v in args.threads.split(",")]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    max_load = args.max_load if args.max_load is not None else 0.5 * cores

    kernels = not args.no_kernels
    if kernels:
        try:
            from export.kernels import custom_op_library

            custom_op_library()
        except BackendUnavailable as exc:
            console.print(f"[yellow]fused kernels unavailable, skipping them:[/] {exc}")
            kernels = False

    models = {a: build_model(a, args.backbone) for a in MODELS}
    x = np.random.default_rng(0).standard_normal((args.batch, 1, 3, args.size, args.size), dtype=np.float32)
    compiled: dict[str, Any] = {}
    results: dict[str, Any] = {}
    all_rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="aarm-bench-export-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        graphs = ({a: {} for a in models} if args.only_pytorch else
                  build_graphs(workdir, models, torch.from_numpy(x), args.size, kernels, args.investigate))
        checks = parity(graphs, models, x)
        graph_info = {a: {k: graph_facts(p) for k, p in v.items()} for a, v in graphs.items()}
        if not args.no_compile:
            with console.status("torch.compile (first calls compile)"):
                for a, m in models.items():
                    compiled[a] = torch.compile(m)
                    with torch.inference_mode():
                        compiled[a](torch.from_numpy(x))
        quiet = wait_for_quiet(max_load, args.wait)
        if not quiet["quiet"]:
            console.print(f"[bold yellow]BUSY:[/] 1-min load average {quiet['load'][0]:.2f} >= {max_load:.2f} after "
                          f"waiting {quiet['waited_s']:.0f} s; measuring anyway, the figures are flagged",
                          highlight=False)
        for threads in thread_counts:
            runners = runners_for(graphs, models, compiled, x, threads, train=not args.no_train,
                                  eager=not args.only_onnx)

            def set_threads(_: str, n: int = threads) -> None:
                torch.set_num_threads(n)

            load_before = load_average()
            with CpuUse() as use, console.status(f"{threads} thread(s): {args.rounds} interleaved rounds") as status:
                times = interleaved_rounds(runners, args.rounds, warmup=args.warmup, before=set_threads,
                                           progress=lambda d, n, s=status, k=threads: s.update(
                                               f"{k} thread(s): round {d}/{n}"))
            r, rows = ratios_and_targets(times)
            for row in rows:
                row["threads"] = threads
            all_rows += rows
            results[str(threads)] = {
                "load_before": load_before, "cpu_use": use.result(), "latency_ms": times,
                "median_ms": {k: median_ms(v) for k, v in times.items()}, "ratios": r, "targets": rows,
            }
            med = results[str(threads)]["median_ms"]
            print_table(f"Latency, {threads} thread(s), batch {args.batch} x {args.size}x{args.size}, "
                        f"{args.rounds} interleaved rounds (medians)", ["model", "variant", "median ms"],
                        [(MODELS[k.split('/')[0]], k.split('/')[1], f"{v:.1f}") for k, v in med.items()])
            print_table(f"Ratios, {threads} thread(s) (median, 95% paired bootstrap interval)", ["ratio", "value"],
                        [(k, _fmt(k, v)) for k, v in r.items()])
        profiles = {f"{a}/{k}": op_profile(p, x, thread_counts[0], workdir)
                    for a, v in graphs.items() for k, p in v.items()} if args.profile else {}
    for name, prof in profiles.items():
        print_table(f"Where the time goes: {name}, {prof['threads']} thread(s), onnxruntime profiler "
                    f"(median run {prof['run_ms_median']:.0f} ms)", ["op type", "ms per run", "nodes"],
                    [(op, f"{v['ms_per_run']:.1f}", str(v["nodes"])) for op, v in list(prof["ops"].items())[:10]])
    busy = (not quiet["quiet"]) or any(v["cpu_use"]["busy"] for v in results.values())
    print_table("Targets (issue 13)" + (" - BUSY machine, rerun quiet" if busy else ""),
                ["threads", "target", "value", "interval", "pass", "sure"],
                [(str(row["threads"]), row["target"], _fmt(row["target"], row),
                  f"{_num(row['target'], row['low'])}..{_num(row['target'], row['high'])}",
                  "PASS" if row["pass"] else "FAIL", "yes" if row["interval_clears"] else "no") for row in all_rows])
    console.print("parity vs PyTorch eager (max abs score error): " + ", ".join(
        f"{k} {v['max_abs_error']:.1e}" for k, v in checks.items()), highlight=False)
    write_json(out, {
        "benchmark": "export", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": host_info(), "threads_settings": thread_settings(), "quiet_wait": quiet, "busy": busy,
        "config": {"backbone": args.backbone, "batch": args.batch, "size": args.size, "segments": 1,
                   "classes": CLASSES, "threads": thread_counts, "rounds": args.rounds, "warmup": args.warmup,
                   "quick": args.quick, "kernels": kernels, "compile": not args.no_compile,
                   "train": not args.no_train, "investigate": args.investigate, "only_onnx": args.only_onnx,
                   "only_pytorch": args.only_pytorch, "profile": args.profile,
                   "naive": "torch.onnx.export(model, (x,), path), default settings; onnxruntime default options"},
        "graphs": graph_info,
        "results": results, "targets": all_rows, "parity_vs_eager": checks, "op_profiles": profiles,
    })
    console.print(f"wrote {out}", highlight=False)
    return 0


def graph_facts(path: Path) -> dict[str, Any]:
    """Default-domain opset, input shape (batch fixed or symbolic) and node count of a graph."""
    model = onnx.load(str(path), load_external_data=False)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    facts = {"opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None),
             "input": [d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims],
             "nodes": len(model.graph.node)}
    if any(o.domain == "com.aarm" for o in model.opset_import):  # what ort_session opens: rewritten or as written
        from runtime.blocked_kernels import block_size

        blocked = isinstance(session_model(path)[0], bytes)
        facts["kernel_layout"] = f"nchwc (block {block_size()})" if blocked else "plain"
    return facts


def _num(key: str, value: float) -> str:
    return f"{100 * value:+.1f}%" if "overhead" in key.lower() else f"{value:.2f}x"


def _fmt(key: str, r: dict[str, float]) -> str:
    return f"{_num(key, r['value'])} [{_num(key, r['low'])}, {_num(key, r['high'])}]"


if __name__ == "__main__":
    sys.exit(main())

"""The score error of correct artifacts against PyTorch across the model zoo: the measurements behind the
default FP32 and FP16 parity limits (`runtime.parity.DEFAULT_TOLERANCES`, docs/runtime.md "Parity limits").

    nice .venv/bin/python benchmarks/parity_limits.py              # table + benchmarks/results/parity_limits.json
    nice .venv/bin/python benchmarks/parity_limits.py --models resnet18 --workdir /tmp/pl --reuse

For every model of `aarm.list_models()` (RGB and flow; AARM, and no attention for ResNet-18/50), a randomly
initialised model gets non-trivial BatchNorm statistics (two forward passes in training mode over
standard-normal clips, cumulative averages), goes to eval mode and through the project's own steps: export
(`export.onnx_export.export_onnx`), graph passes (`export.passes.optimize_onnx`) and FP16 conversion
(`export.fp16.convert_onnx`). Each artifact runs on onnxruntime CPU through the runtime's runner and is
compared with the PyTorch model by `runtime.compare.score_metrics`, on standard-normal clips (what parity's
random inputs are) and, for RGB models, on decoded clips of a small synthetic dataset (`aarm.data.synthetic`).

Beside each correct artifact the script measures a tampered copy: output channel 0 of the graph's first
3x3 (3x3x3) convolution with more than one output channel scaled by 1.05. A limit is useful if it passes
every correct artifact and fails the tampered ones; the table shows both.

Sizes: 2D models K = 3 segments of 64x64 (flow: 20-channel stacks), ResNet-3D-18 16x56x56, C3D its fixed
16x112x112; 101 classes; 8 random clips (4 for C3D), 8 synthetic clips. The whole run took 61 min on the
shared 2-core CPU at load ~8 (2026-11-27); `--models` and `--reuse` rerun parts of it.

`--train-steps N --out FILE` measures the RGB models after N AdamW steps on another synthetic set instead
(how training changes the error of a deep random network; results/parity_limits_trained.json), in a file
of its own: the default file is the basis of parity's limits (runtime/parity_limits.py).
"""

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aarm  # noqa: E402
from aarm.data.preprocessing import Preprocessing  # noqa: E402
from aarm.fileio import write_json  # noqa: E402
from aarm.models.registry import get_spec  # noqa: E402
from export.console import console, print_table  # noqa: E402
from export.fp16 import convert_onnx  # noqa: E402
from export.onnx_export import export_onnx  # noqa: E402
from export.passes import optimize_onnx  # noqa: E402
from runtime.backends.onnxruntime_backend import OnnxRuntimeRunner  # noqa: E402
from runtime.compare import score_metrics  # noqa: E402
from runtime.host import software_versions  # noqa: E402

CLASSES = 101
TAMPER_SCALE = 1.05
ARTIFACTS = {"exported": "fp32", "optimised": "fp32", "fp16": "fp16"}
REPORTED = ("max_abs", "max_rel", "rel_rms", "min_cosine", "top1", "top5")


def configurations(models: list[str]) -> list[dict[str, Any]]:
    """(model, modality, attention) triples with their input geometry."""
    out = []
    for name in models:
        spec = get_spec(name)
        attentions = ["aarm", "none"] if name in ("resnet18", "resnet50") else ["aarm"]
        for modality in ("rgb", "flow"):
            for attention in attentions:
                if spec.dims == 2:
                    cfg = {"size": 64, "segments": 3, "in_channels": 3 if modality == "rgb" else 20}
                else:
                    cfg = {"size": 112 if name == "c3d" else 56, "frames": 16,
                           "in_channels": 3 if modality == "rgb" else 2}
                out.append({"model": name, "modality": modality, "attention": attention, "dims": spec.dims,
                            "samples": 4 if name == "c3d" else 8, "bn": "calibrated", **cfg})
    if "resnet18" in models:  # BatchNorm as initialised (mean 0, var 1), as the tests' tiny models have it
        out.insert(1, {**out[0], "bn": "init"})
    return out


def build_model(cfg: dict[str, Any], seed: int) -> tuple[torch.nn.Module, Preprocessing]:
    """A random model with BatchNorm statistics from two training-mode passes over standard-normal clips
    (cfg["bn"] "calibrated", and "trained", which `train` then trains) or as initialised ("init")."""
    torch.manual_seed(seed)
    options = {"segments": cfg["segments"]} if cfg["dims"] == 2 else {}
    model = aarm.create_model(cfg["model"], num_classes=CLASSES, attention=cfg["attention"],
                              in_channels=cfg["in_channels"], **options)
    prep = Preprocessing.for_model(model.aarm_config, size=cfg["size"], frames=cfg.get("frames"))
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if cfg["bn"] == "init":
        return model.eval(), prep
    for m in norms:
        m.momentum = None  # cumulative average over the passes
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(prep.input_shape(4)))
    for m in norms:
        m.momentum = 0.1
    return model.eval(), prep


def train(model: torch.nn.Module, prep: Preprocessing, data: Path, steps: int) -> torch.nn.Module:
    """`model` after `steps` AdamW steps (lr 1e-3, batch 8) on the labelled test clips of the synthetic
    dataset at `data`, in eval mode."""
    from runtime.parity import labelled_batches

    pairs = list(labelled_batches(str(data), prep, ["input"], samples=0, batch=16))
    x = torch.from_numpy(np.concatenate([feed["input"] for feed, _ in pairs]))
    y = torch.from_numpy(np.concatenate([labels for _, labels in pairs])).long()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (8,))
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def tampered(path: Path) -> tuple[bytes, str]:
    """The graph with output channel 0 of its first 3x3 (3x3x3) conv (more than one output channel) scaled
    by TAMPER_SCALE, as bytes, and that conv's weight name."""
    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        name = node.input[1]
        while name not in inits and name in producer and producer[name].op_type in ("Cast", "DequantizeLinear"):
            name = producer[name].input[0]
        init = inits.get(name)
        if init is None or len(init.dims) < 4 or set(init.dims[2:]) != {3} or init.dims[0] < 2:
            continue
        w = numpy_helper.to_array(init).copy()
        w[0] = (w[0].astype(np.float32) * TAMPER_SCALE).astype(w.dtype)
        init.CopyFrom(numpy_helper.from_array(w, init.name))
        return model.SerializeToString(), name
    raise RuntimeError(f"{path}: no 3x3 convolution to tamper with")


def synthetic_clips(root: Path, prep: Preprocessing, count: int) -> np.ndarray | None:
    """`count` decoded test clips of the synthetic dataset at `root`, preprocessed for `prep` (RGB only)."""
    if prep.modality != "rgb":
        return None
    from runtime.parity import labelled_batches

    xs = [feed["input"] for feed, _ in labelled_batches(str(root), prep, ["input"], samples=count, batch=count)]
    return np.concatenate(xs)


def scores_torch(model: torch.nn.Module, x: np.ndarray, batch: int = 4) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(x[i : i + batch])).numpy() for i in range(0, len(x), batch)])


def scores_onnx(runner: OnnxRuntimeRunner, x: np.ndarray, batch: int = 4) -> np.ndarray:
    name = runner.input_specs[0].name
    with runner:
        return np.concatenate([runner.infer({name: x[i : i + batch]})[runner.output_names[0]]
                               for i in range(0, len(x), batch)])


def measure(cfg: dict[str, Any], workdir: Path, data: Path | None, reuse: bool, threads: int,
            train_data: Path | None = None) -> dict[str, Any]:
    model, prep = build_model(cfg, seed=0)
    if cfg["bn"] == "trained":
        model = train(model, prep, train_data, cfg["train_steps"])
    stem = f"{cfg['model']}_{cfg['modality']}_{cfg['attention']}_{cfg['bn']}{cfg.get('train_steps', '')}"
    paths = {k: workdir / f"{stem}.{k}.onnx" for k in ARTIFACTS}
    timings: dict[str, float] = {}
    t = time.perf_counter()
    if not (reuse and all(p.is_file() for p in paths.values())):
        export_onnx(model, paths["exported"], classes=[f"c{i}" for i in range(CLASSES)], preprocessing=prep,
                    trained=False, force=True)
        optimize_onnx(paths["exported"], paths["optimised"], force=True)
        convert_onnx(paths["optimised"], paths["fp16"], force=True)
    timings["build_s"] = time.perf_counter() - t
    rng = np.random.default_rng(0)
    inputs = {"random": rng.standard_normal((cfg["samples"], *prep.input_shape(1)[1:]), dtype=np.float32)}
    clips = synthetic_clips(data, prep, 8) if data is not None else None
    if clips is not None:
        inputs["clips"] = clips
    t = time.perf_counter()
    reference = {k: scores_torch(model, x) for k, x in inputs.items()}
    timings["torch_s"] = time.perf_counter() - t
    rows: dict[str, Any] = {}
    for kind, precision in ARTIFACTS.items():
        runner = OnnxRuntimeRunner.from_artifact(paths[kind], threads=threads)
        graph, conv = tampered(paths[kind])
        bad = OnnxRuntimeRunner(graph, name=f"{paths[kind].name} (tampered)", threads=threads)
        entry: dict[str, Any] = {"precision": precision, "tampered_conv": conv}
        for set_name, x in inputs.items():
            entry[set_name] = score_metrics(scores_onnx(runner, x), reference[set_name])
            entry[f"{set_name}_tampered"] = score_metrics(scores_onnx(bad, x), reference[set_name])
        entry["score_scale"] = float(np.abs(reference["random"]).max())
        rows[kind] = entry
    timings["total_s"] = sum(timings.values()) + (time.perf_counter() - t)
    return {**cfg, "input_shape": list(prep.input_shape(1)[1:]), "artifacts": rows, "timings": timings}


def worst(results: list[dict[str, Any]], precision: str, key: str, metric: str) -> float | None:
    """Worst value of `metric` over every artifact of `precision` (largest error, smallest agreement)."""
    values = [a[key][metric] for r in results for a in r["artifacts"].values()
              if a["precision"] == precision and key in a and a[key].get(metric) is not None]
    if not values:
        return None
    return min(values) if metric in ("min_cosine", "top1", "top5") else max(values)


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per precision: the worst correct value of each metric on each input set, and the mildest tamper."""
    out: dict[str, Any] = {}
    for precision in ("fp32", "fp16"):
        out[precision] = {}
        for key in ("random", "clips"):
            out[precision][key] = {m: worst(results, precision, key, m) for m in REPORTED}
            tamper = [a[f"{key}_tampered"] for r in results for a in r["artifacts"].values()
                      if a["precision"] == precision and f"{key}_tampered" in a]
            out[precision][f"{key}_tampered_smallest"] = {
                m: (min(t[m] for t in tamper) if m not in ("min_cosine", "top1", "top5") else max(t[m] for t in tamper))
                for m in REPORTED
            } if tamper else {}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=aarm.list_models())
    parser.add_argument("--workdir", type=Path, default=None, help="Keep the graphs here (default: a temp dir).")
    parser.add_argument("--reuse", action="store_true", help="Reuse graphs already in --workdir.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-clips", action="store_true", help="Random inputs only (no synthetic dataset).")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "parity_limits.json")
    parser.add_argument("--train-steps", type=int, default=0,
                        help="Train each RGB model this many AdamW steps on another synthetic set first (how much "
                             "training changes the error of deep models; needs --out: the default file is the "
                             "basis of parity's limits).")
    args = parser.parse_args()
    if args.train_steps and ("--out" not in sys.argv or args.no_clips):
        parser.error("--train-steps needs --out (another file than the limits' basis) and the synthetic clips")
    torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory(prefix="aarm-parity-limits-")
    workdir = args.workdir or Path(tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    data = None
    if not args.no_clips:
        from aarm.data.synthetic import make_synthetic

        data = workdir / "synthetic"
        if not (args.reuse and data.is_dir()):
            make_synthetic(data, classes=4, videos_per_class=4, frames=20, size=72, seed=0, force=True)
    train_data = None
    if args.train_steps:
        from aarm.data.synthetic import make_synthetic

        train_data = workdir / "synthetic-train"
        if not (args.reuse and train_data.is_dir()):
            make_synthetic(train_data, classes=4, videos_per_class=24, frames=20, size=72, seed=1, force=True)
    start = time.perf_counter()
    results: list[dict[str, Any]] = []
    meta = {"kind": "parity_limits", "host": platform.node(), "cpu": platform.processor() or platform.machine(),
            "threads": args.threads, "versions": software_versions(), "classes": CLASSES,
            "tamper": f"output channel 0 of the first 3x3 conv x {TAMPER_SCALE}"}
    configs = configurations(args.models)
    if args.train_steps:  # RGB models, calibrated then trained
        configs = [{**c, "bn": "trained", "train_steps": args.train_steps} for c in configs
                   if c["modality"] == "rgb" and c["bn"] == "calibrated"]
    for cfg in configs:
        label = f"{cfg['model']} {cfg['modality']} {cfg['attention']} (BN {cfg['bn']})"
        t = time.perf_counter()
        results.append(measure(cfg, workdir, data, args.reuse, args.threads, train_data))
        console.print(f"{label}: {time.perf_counter() - t:.0f} s", highlight=False)
        write_json(args.out, {**meta, "elapsed_s": time.perf_counter() - start, "results": results,
                              "worst": summary(results)})
    rows = []
    for r in results:
        for kind, a in r["artifacts"].items():
            for key in ("random", "clips"):
                if key not in a:
                    continue
                m, bad = a[key], a[f"{key}_tampered"]
                attention = r["attention"] + {"init": " (BN init)", "trained": f" (trained {r.get('train_steps')})"
                                              }.get(r["bn"], "")
                rows.append((r["model"], r["modality"], attention, kind, key, f"{m['max_abs']:.2e}",
                             f"{m['max_rel']:.2e}", f"{m['rel_rms']:.2e}", f"{1 - m['min_cosine']:.1e}",
                             f"{m['top1']:.0%}", f"{bad['max_rel']:.2e}", f"{bad['rel_rms']:.2e}"))
    print_table("Score error of correct artifacts against PyTorch (and of the 1.05 one-channel tamper)",
                ["model", "input", "attention", "artifact", "inputs", "max abs", "max rel", "rel rms",
                 "1 - min cos", "top-1", "tampered max rel", "tampered rel rms"], rows)
    worst_rows = []
    for precision, sets in summary(results).items():
        for key in ("random", "clips"):
            w, t = sets[key], sets.get(f"{key}_tampered_smallest") or {}
            if w.get("max_rel") is None:
                continue
            worst_rows.append((precision, key, f"{w['max_abs']:.2e}", f"{w['max_rel']:.2e}", f"{w['rel_rms']:.2e}",
                               f"{1 - w['min_cosine']:.1e}", f"{w['top1']:.0%}",
                               f"{t['max_rel']:.2e}" if t else "-", f"{t['rel_rms']:.2e}" if t else "-"))
    print_table("Worst correct artifact per precision; smallest tamper effect",
                ["precision", "inputs", "max abs", "max rel", "rel rms", "1 - min cos", "top-1",
                 "tamper max rel", "tamper rel rms"], worst_rows)
    console.print(f"wrote {args.out} ({time.perf_counter() - start:.0f} s)", highlight=False)


if __name__ == "__main__":
    main()

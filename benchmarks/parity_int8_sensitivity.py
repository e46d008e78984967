"""How large a weight change INT8 parity's limits can see at all: the measurement behind docs/runtime.md "Parity
limits" (INT8).

    nice .venv/bin/python benchmarks/parity_int8_sensitivity.py     # table + results/parity_int8_sensitivity.json

INT8 parity judges real clips by agreement, score size and mean cosine (`runtime.parity.DEFAULT_TOLERANCES
["int8"]`), not by closeness to PyTorch at rounding level. This script asks the most favourable question: take
the correct FP32 graph (no quantization error at all), scale output channel 0 of its first 3x3 conv (or the
whole conv) by s, and judge its scores against PyTorch on decoded synthetic clips with the INT8 limits. A
change these limits pass on a graph with no quantization error also passes on a real INT8 graph, whose own
error uses part of the budget; so the smallest failing s is a lower bound on what INT8 parity detects.

Models as in benchmarks/parity_limits.py (random initialisation, BatchNorm calibrated on noise, K = 3 segments
of 64x64, 101 classes, RGB, AARM), 8 clips of its synthetic dataset, judged as the "data" input set.
"""

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import parity_limits as pl  # noqa: E402

from aarm.data.synthetic import make_synthetic  # noqa: E402
from aarm.fileio import write_json  # noqa: E402
from export.console import console, print_table  # noqa: E402
from export.onnx_export import export_onnx  # noqa: E402
from runtime.backends.onnxruntime_backend import OnnxRuntimeRunner  # noqa: E402
from runtime.compare import judge, score_metrics  # noqa: E402
from runtime.parity import DEFAULT_TOLERANCES  # noqa: E402

SCALES = (1.05, 1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)


def scaled(path: Path, scale: float, whole: bool) -> bytes:
    """The graph with output channel 0 (whole: every channel) of its first 3x3 conv scaled by `scale`."""
    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        init = inits.get(node.input[1]) if node.op_type == "Conv" else None
        if init is not None and len(init.dims) >= 4 and set(init.dims[2:]) == {3} and init.dims[0] > 1:
            w = numpy_helper.to_array(init).astype(np.float32)
            if whole:
                w = w * scale
            else:
                w[0] = w[0] * scale
            init.CopyFrom(numpy_helper.from_array(w, init.name))
            return model.SerializeToString()
    raise RuntimeError(f"{path}: no 3x3 convolution")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["resnet18", "resnet50"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "parity_int8_sensitivity.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="aarm-int8-sensitivity-"))
    data = work / "synthetic"
    make_synthetic(data, classes=4, videos_per_class=4, frames=20, size=72, seed=0, force=True)
    limits = DEFAULT_TOLERANCES["int8"]
    rows: list[dict[str, Any]] = []
    for name in args.models:
        cfg = next(c for c in pl.configurations([name])
                   if c["modality"] == "rgb" and c["attention"] == "aarm" and c["bn"] == "calibrated")
        model, prep = pl.build_model(cfg, seed=0)
        graph = work / f"{name}.onnx"
        export_onnx(model, graph, classes=[f"c{i}" for i in range(pl.CLASSES)], preprocessing=prep, trained=False,
                    force=True)
        clips = pl.synthetic_clips(data, prep, 8)
        reference = pl.scores_torch(model, clips)
        for change in ("channel 0", "whole conv"):
            for scale in SCALES:
                runner = OnnxRuntimeRunner(scaled(graph, scale, change == "whole conv"), name=f"{name} x{scale}",
                                           threads=args.threads)
                m = score_metrics(pl.scores_onnx(runner, clips), reference)
                failed = [str(f) for f in judge(m, limits, "data")]
                rows.append({"model": name, "change": change, "scale": scale, "metrics": m, "failures": failed})
                console.print(f"{name} {change} x{scale}: {'FAIL ' + '; '.join(failed) if failed else 'pass'}",
                              highlight=False)
    write_json(args.out, {"kind": "parity_int8_sensitivity", "limits": limits.to_dict(), "clips": 8, "rows": rows})
    print_table("FP32 graphs with one weight change, judged by the INT8 limits on 8 clips",
                ["model", "change", "scale", "max rel", "mean cosine", "top-1", "top-5", "verdict"],
                [(r["model"], r["change"], f"x{r['scale']:g}", f"{r['metrics']['max_rel']:.3g}",
                  f"{r['metrics']['mean_cosine']:.4f}", f"{r['metrics']['top1']:.0%}", f"{r['metrics']['top5']:.0%}",
                  "FAIL: " + ", ".join(f.split(": ", 1)[1].split()[0] for f in r["failures"]) if r["failures"]
                  else "pass") for r in rows])
    console.print(f"wrote {args.out}", highlight=False)


if __name__ == "__main__":
    main()

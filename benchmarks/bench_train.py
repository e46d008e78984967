"""Train an AARM ResNet-18 TSN and its plain backbone on the synthetic action set; held-out top-1 and wall time.

    .venv/bin/python benchmarks/bench_train.py [--work runs/bench_train] [--epochs N] [--classes N]

Prints a table and writes benchmarks/results/train.json. Target: AARM held-out top-1 >= 90%.
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import synthetic_recipe  # noqa: E402

from aarm.data.synthetic import make_synthetic  # noqa: E402
from aarm.training import TrainConfig, train  # noqa: E402
from export.console import console, print_table  # noqa: E402

TARGET_TOP1 = 0.90


def main() -> None:
    recipe = synthetic_recipe()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/bench_train"))
    parser.add_argument("--epochs", type=int, default=recipe["train"]["epochs"])
    parser.add_argument("--classes", type=int, default=recipe["dataset"]["classes"])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "train.json")
    args = parser.parse_args()

    data = args.work / "data"
    ds = {**recipe["dataset"], "classes": args.classes}
    started = time.perf_counter()
    make_synthetic(data, **ds, force=True, progress=False)
    synth_s = time.perf_counter() - started
    rows, results = [], []
    for attention in ("aarm", "none"):
        cfg = TrainConfig(data=str(data), out=str(args.work / attention), attention=attention,
                          **{**recipe["train"], "epochs": args.epochs})
        t0 = time.perf_counter()
        result = train(cfg, force=True, on_epoch=lambda r, a=attention: console.print(
            f"{a}: epoch {r['epoch'] + 1} loss {r['train_loss']:.3f} held-out top-1 {r['val_top1']:.1%}"))
        seconds = time.perf_counter() - t0
        results.append({"attention": attention, "best_top1": result.best_top1, "best_epoch": result.best_epoch,
                        "final_top1": result.log[-1]["val_top1"], "seconds": seconds, "log": result.log})
        rows.append((f"resnet18 TSN + {attention}", f"{result.best_top1:.1%}", f"{result.log[-1]['val_top1']:.1%}",
                     f"{seconds:.0f}"))
    print_table(f"Synthetic set ({args.classes} classes), held-out top-1 (target >= {TARGET_TOP1:.0%} with AARM)",
                ["model", "best top-1", "final top-1", "train s"], rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"recipe": recipe, "dataset": ds, "epochs": args.epochs, "synth_seconds": synth_s,
                                    "results": results, "target_top1": TARGET_TOP1,
                                    "met": results[0]["best_top1"] >= TARGET_TOP1}, indent=2) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Train an AARM ResNet-18 TSN and its plain backbone on the synthetic action set; held-out top-1 and wall time.

    .venv/bin/python benchmarks/bench_train.py [--work runs/bench_train] [--epochs N] [--classes N]

Prints a table and writes benchmarks/results/train.json and train.png (curves). Target: AARM held-out
top-1 >= 90%. Both models use the recipe of common.py; the AARM run's best.pt feeds bench_int8.py
(`--checkpoint runs/bench_train/aarm/best.pt --data runs/bench_train/data`).
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import synthetic_recipe  # noqa: E402

from aarm.data.synthetic import make_synthetic  # noqa: E402
from aarm.fileio import atomic_path, write_json  # noqa: E402
from aarm.training import TrainConfig, train  # noqa: E402
from export.console import console, print_table  # noqa: E402

TARGET_TOP1 = 0.90


def plot_curves(results: list[dict], path: Path) -> None:
    """Held-out and train top-1 per epoch, one colour per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r, colour in zip(results, ("tab:red", "tab:blue"), strict=False):
        epochs = [row["epoch"] + 1 for row in r["log"]]
        ax.plot(epochs, [row["val_top1"] for row in r["log"]], color=colour, label=f"{r['attention']} held-out")
        ax.plot(epochs, [row["train_top1"] for row in r["log"]], color=colour, ls=":", label=f"{r['attention']} train")
    ax.axhline(TARGET_TOP1, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="epoch", ylabel="top-1", ylim=(0, 1), title="ResNet-18 TSN on the synthetic set")
    ax.legend(loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


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
    make_synthetic(data, **ds, force=True, workers=2)
    synth_s = time.perf_counter() - started
    rows, results = [], []
    for attention in ("aarm", "none"):
        cfg = TrainConfig(data=str(data), out=str(args.work / attention), attention=attention,
                          **{**recipe["train"], "epochs": args.epochs})
        t0 = time.perf_counter()
        result = train(cfg, force=True, on_epoch=lambda r, a=attention: console.print(
            f"{a}: epoch {r['epoch'] + 1} loss {r['train_loss']:.3f} held-out top-1 {r['val_top1']:.1%}"))
        seconds = time.perf_counter() - t0
        reached = next((row["epoch"] + 1 for row in result.log if row["val_top1"] >= TARGET_TOP1), None)
        results.append({"attention": attention, "best_top1": result.best_top1, "best_epoch": result.best_epoch,
                        "final_top1": result.log[-1]["val_top1"], "first_epoch_at_target": reached,
                        "seconds": seconds, "log": result.log})
        rows.append((f"resnet18 TSN + {attention}", f"{result.best_top1:.1%}", f"{result.log[-1]['val_top1']:.1%}",
                     str(reached or "-"), f"{seconds:.0f}"))
    print_table(f"Synthetic set ({args.classes} classes), held-out top-1 (target >= {TARGET_TOP1:.0%} with AARM)",
                ["model", "best top-1", "final top-1", f"first epoch >= {TARGET_TOP1:.0%}", "train s"], rows)
    plot_curves(results, args.out.with_suffix(".png"))
    write_json(args.out, {"recipe": recipe, "dataset": ds, "epochs": args.epochs, "synth_seconds": synth_s,
                          "results": results, "target_top1": TARGET_TOP1,
                          "met": results[0]["best_top1"] >= TARGET_TOP1})
    console.print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()

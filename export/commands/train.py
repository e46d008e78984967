"""`aarm-export train` and `aarm-export evaluate`."""

import json
from pathlib import Path
from typing import Annotated

import typer

from aarm.errors import ConfigError
from aarm.fileio import check_writable, write_json
from aarm.training import TrainConfig, evaluate, save_confusion_png, train
from aarm.training.distributed import is_main_process
from aarm.training.evaluate import fusion_weights
from export.console import console, print_table
from export.options import at_least
from export.progress import progress_callback


def parse_weights(text: str) -> list[float]:
    """--weights "1,1.5" as numbers; anything else is a ConfigError naming the option."""
    try:
        return [float(w) for w in text.split(",")]
    except ValueError:
        raise ConfigError(f"--weights takes comma-separated numbers (RGB,flow), got {text!r}") from None


def _parse_options(values: list[str]) -> dict[str, object]:
    """KEY=VALUE pairs; values parsed as JSON where possible (numbers, true/false), else kept as strings."""
    options: dict[str, object] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--option takes KEY=VALUE, got {item!r}")
        try:
            options[key] = json.loads(raw)
        except json.JSONDecodeError:
            options[key] = raw
    return options


def train_command(
    data: Annotated[Path | None, typer.Argument(help="Dataset root (UCF101, HMDB51 or folder-per-class).")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run folder (checkpoints, log).")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML file with training options (a \\[train] table).")] = None,
    model: Annotated[str | None, typer.Option(help="Registered model name.")] = None,
    attention: Annotated[str | None, typer.Option(help="none | se | cbam | aarm")] = None,
    modality: Annotated[str | None, typer.Option(help="rgb | flow")] = None,
    videos: Annotated[Path | None, typer.Option(
        help="Folder of <class>/<video> if not in DATA (DATA/videos, DATA/hmdb51 and such are found).")] = None,
    annotations: Annotated[Path | None, typer.Option(
        help="Folder of the split files (classInd.txt and trainlist0N.txt, or HMDB51's *_test_splitN.txt).")] = None,
    allow_overlap: Annotated[bool, typer.Option(
        "--allow-overlap", help="Train even when the split's train and test subsets share videos.")] = False,
    split: Annotated[int | None, typer.Option(help="Dataset split 1-3.", callback=at_least(1))] = None,
    epochs: Annotated[int | None, typer.Option(callback=at_least(1))] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", callback=at_least(1))] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.", callback=at_least(0, strict=True))] = None,
    optimizer: Annotated[str | None, typer.Option(help="sgd (the paper's) | adamw (from scratch, few steps)")] = None,
    schedule: Annotated[str | None, typer.Option(help="none | step | cosine")] = None,
    size: Annotated[int | None, typer.Option(help="Crop size (224 in the paper).", callback=at_least(1))] = None,
    segments: Annotated[int | None, typer.Option(help="TSN segments K (2D models).", callback=at_least(1))] = None,
    frames: Annotated[int | None, typer.Option(help="Clip length T (3D models).", callback=at_least(1))] = None,
    pretrained: Annotated[Path | None, typer.Option(help="ImageNet weights, torchvision layout.")] = None,
    option: Annotated[
        list[str] | None, typer.Option("--option", help="Model option KEY=VALUE (alpha, eta, chi, ...).")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="DataLoader worker processes.", callback=at_least(0))] = None,
    seed: Annotated[int | None, typer.Option(callback=at_least(0))] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 ...; under torchrun cuda or cpu")] = None,
    sync_bn: Annotated[
        bool | None, typer.Option("--sync-bn", help="Several GPUs: batch norm over the global batch.")
    ] = None,
    freeze_bn: Annotated[
        bool | None, typer.Option("--freeze-bn", help="Batch norm keeps its running statistics.")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last finished epoch.")] = False,
    force: Annotated[bool, typer.Option(help="Start over in a folder that already holds a run.")] = False,
) -> None:
    """Fine-tune a model (paper defaults: SGD, momentum 0.9, lr 0.001, batch 50, 224x224).

    Example: aarm-export train synth/ -o runs/r18 --model resnet18 --optimizer adamw --lr 5e-4 --size 64
    """
    cfg = TrainConfig.from_sources(
        config, data=str(data) if data else None, out=str(out) if out else None, model=model, attention=attention,
        modality=modality, split=split, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
        schedule=schedule, size=size,
        segments=segments, frames=frames, pretrained=str(pretrained) if pretrained else None,
        model_options=_parse_options(option or []) or None, workers=workers, seed=seed, device=device,
        videos=str(videos) if videos else None, annotations=str(annotations) if annotations else None,
        allow_overlap=allow_overlap or None,
        sync_bn=sync_bn, freeze_bn=freeze_bn,
    )
    if not cfg.data:
        raise ConfigError("give the dataset root (argument DATA or `data` in --config)")
    main = is_main_process()  # under torchrun only rank 0 prints
    if main:
        console.print(f"training [bold]{cfg.model}[/] ({cfg.attention}, {cfg.modality}) on {cfg.data} -> {cfg.out}")

    def show(row: dict[str, object]) -> None:
        console.print(
            f"epoch {row['epoch'] + 1}/{cfg.epochs}: loss {row['train_loss']:.3f}  train top-1 "
            f"{row['train_top1']:.1%}  held-out top-1 {row['val_top1']:.1%}  ({row['seconds']:.0f} s)"
        )

    with progress_callback() as report:
        result = train(cfg, resume=resume, force=force, progress=report, on_epoch=show)
    best = result.out / "best.pt"
    if main:
        console.print(f"best held-out top-1 {result.best_top1:.1%} at epoch {result.best_epoch + 1}: {best}")


def evaluate_command(
    checkpoints: Annotated[list[Path], typer.Argument(help="One checkpoint, or RGB then flow for two-stream.")],
    data: Annotated[list[Path], typer.Option("--data", help="Dataset root per checkpoint, in the same order.")],
    videos: Annotated[list[Path] | None, typer.Option(
        "--videos", help="Video folder per checkpoint, in the same order, when --data does not hold it.")] = None,
    annotations: Annotated[Path | None, typer.Option(help="Folder of the split files, for every stream.")] = None,
    allow_overlap: Annotated[bool, typer.Option(
        "--allow-overlap", help="Evaluate a test subset that shares videos with the train subset.")] = False,
    split: Annotated[int, typer.Option(callback=at_least(1))] = 1,
    subset: Annotated[str, typer.Option(help="train | test")] = "test",
    clips: Annotated[int, typer.Option(help="Views per video, scores averaged.", callback=at_least(1))] = 1,
    segments: Annotated[int | None, typer.Option(
        help="2D (TSN) models: segments K per view (default: the checkpoint's).", callback=at_least(1))] = None,
    frames: Annotated[int | None, typer.Option(
        help="3D models: frames T per clip (default: the checkpoint's; C3D's is fixed).", callback=at_least(1))] = None,
    weights: Annotated[str | None, typer.Option(
        help="Two-stream late-fusion weights RGB,flow (default 1,1.5); not for one checkpoint.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", callback=at_least(1))] = 16,
    workers: Annotated[int, typer.Option(callback=at_least(0))] = 2,
    device: Annotated[str, typer.Option()] = "cpu",
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results as JSON.")] = None,
    confusion: Annotated[Path | None, typer.Option(help="Confusion-matrix PNG (of the fusion for two).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing --json and --confusion files.")] = False,
) -> None:
    """Top-1/top-5 and per-class accuracy of a checkpoint (or an RGB + flow pair, fused late)."""
    # Everything the user typed is checked before the evaluation runs.
    chosen = fusion_weights(len(checkpoints), parse_weights(weights) if weights is not None else None)
    for path in (json_out, confusion):
        if path is not None:
            check_writable(path, force)
    with progress_callback() as report:
        results = evaluate(
            checkpoints, data, weights=chosen if len(checkpoints) > 1 else None, videos=videos or None,
            annotations=annotations, allow_overlap=allow_overlap, split=split, subset=subset, num_clips=clips,
            batch_size=batch_size, workers=workers, device=device, progress=report, segments=segments, frames=frames,
        )
    def top5(r: dict) -> str:  # with 5 classes or fewer every class is in the top 5: 100 % says nothing
        return f"{r['top5']:.2%}" if len(results["classes"]) > 5 else "- (<= 5 classes)"

    rows = [(Path(s["checkpoint"]).name, s["modality"], f"{s['top1']:.2%}", top5(s),
             f"{s['mean_class_accuracy']:.2%}", s["samples"]) for s in results["streams"]]
    if "fused" in results:
        f = results["fused"]
        rows.append(("late fusion", f"w={','.join(f'{w:g}' for w in chosen)}", f"{f['top1']:.2%}", top5(f),
                     f"{f['mean_class_accuracy']:.2%}", f["samples"]))
    print_table("Evaluation", ["checkpoint", "stream", "top-1", "top-5", "mean class acc.", "videos"], rows)
    if json_out:
        write_json(json_out, results)
    if confusion:
        final = results.get("fused", results["streams"][-1])
        save_confusion_png(final["confusion"], results["classes"], confusion, "confusion matrix")
        console.print(f"confusion matrix: {confusion}")


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
    app.command("evaluate")(evaluate_command)

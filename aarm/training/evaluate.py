"""Evaluate checkpoints on a dataset split: top-1/top-5, per-class accuracy, confusion matrix, and
two-stream late fusion of an RGB and a flow checkpoint."""

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from aarm.checkpoint import Checkpoint, load_checkpoint
from aarm.data.annotations import Split, check_held_out, load_split
from aarm.data.datasets import VideoDataset
from aarm.data.preprocessing import Preprocessing
from aarm.errors import BackendUnavailable, ConfigError, DataError
from aarm.fileio import atomic_path
from aarm.models.registry import get_spec
from aarm.progress import Progress
from aarm.training.config import check_number
from aarm.training.metrics import classification_summary
from aarm.training.trainer import predict_scores

DEFAULT_FUSION_WEIGHTS = (1.0, 1.5)  # RGB, flow: TSN's late-fusion weights


def _check_held_out(data: Path, test: Split, where: dict[str, Any]) -> None:
    """Refuse a test subset that shares videos with the split's train subset. A dataset without a readable
    train subset (only test lists given) has nothing to overlap with."""
    try:
        train = load_split(data, subset="train", **where)
    except DataError:
        return
    check_held_out(train, test, data)


def checkpoint_scores(
    ckpt: Checkpoint, data: Path, *, split: int = 1, subset: str = "test", dataset_format: str = "auto",
    videos: Path | None = None, annotations: Path | None = None, allow_overlap: bool = False,
    num_clips: int = 1, batch_size: int = 16, workers: int = 2, device: str = "cpu",
    progress: Progress | None = None, segments: int | None = None, frames: int | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str], list[Path]]:
    """Scores (N, classes), labels (N,), the split's class names and video paths, for one checkpoint.

    The test subset must not share videos with the train subset (a plain folder of class folders is both)
    unless `allow_overlap`. segments / frames: sample K segments (2D) or T frames (3D) instead of the
    checkpoint's (`temporal_preprocessing`).
    """
    prep = temporal_preprocessing(ckpt, segments=segments, frames=frames)
    where = {"format": dataset_format, "split": split, "videos": videos, "annotations": annotations}
    records = load_split(Path(data), subset=subset, **where)
    if subset == "test" and not allow_overlap:
        _check_held_out(Path(data), records, where)
    if records.classes != ckpt.classes:
        raise DataError(f"{data}: the dataset's {len(records.classes)} classes differ from the checkpoint's "
                        f"{len(ckpt.classes)} ({records.classes[:3]}... vs {ckpt.classes[:3]}...)")
    dataset = VideoDataset(records.records, prep, train=False, num_clips=num_clips)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    model = ckpt.model.to(device)
    scores, labels = predict_scores(model, loader, torch.device(device), progress)
    return scores, labels, records.classes, [r.path for r in records.records]


def temporal_preprocessing(ckpt: Checkpoint, *, segments: int | None = None,
                           frames: int | None = None) -> Preprocessing:
    """The checkpoint's preprocessing with K segments (2D, TSN: any K, the consensus is an average) or T frames
    (3D models that pool globally; C3D's fully connected layers fix its T). ConfigError for a size of the
    other layout or a T that C3D cannot take."""
    prep = ckpt.preprocessing
    if segments is None and frames is None:
        return prep
    if segments is not None and frames is not None:
        raise ConfigError("give `segments` (2D TSN models) or `frames` (3D models), not both")
    param, size, layout = ("`segments`", segments, "NKCHW") if segments is not None else ("`frames`", frames, "NCTHW")
    assert size is not None
    if size < 1:
        raise ConfigError(f"{param} must be >= 1, got {size}")
    if prep.layout != layout:
        other = "`frames` (a 3D clip model)" if layout == "NKCHW" else "`segments` (a 2D TSN model)"
        raise ConfigError(f"{param} does not apply to this checkpoint: it takes {other}")
    if layout == "NKCHW":
        return dataclasses.replace(prep, segments=size)
    name = getattr(ckpt.model, "aarm_config", {}).get("name")
    if name is not None and get_spec(name).fixed_frames and size != prep.frames:
        raise ConfigError(f"`frames` {size}: {name} has a fixed T = {prep.frames}; its fully connected layers "
                          "fix it")
    return dataclasses.replace(prep, frames=size)


def check_device(device: str) -> torch.device:
    """`device` as a torch.device; an unknown name or a CUDA device this machine lacks is a one-line error."""
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if parsed.type == "cuda" and (not torch.cuda.is_available() or (parsed.index or 0) >= torch.cuda.device_count()):
        raise BackendUnavailable(f"device {device!r} is not available here ({torch.cuda.device_count()} CUDA devices)")
    if parsed.type not in ("cpu", "cuda"):
        raise ConfigError(f"unknown device {device!r}; use cpu, cuda or cuda:N")
    return parsed


def fusion_weights(count: int, weights: Sequence[float] | None) -> list[float]:
    """The late-fusion weights of `count` checkpoints: none for one, DEFAULT_FUSION_WEIGHTS or `weights` (one
    finite, non-negative number per checkpoint, not all zero) for two."""
    if weights is None:
        return [1.0] if count == 1 else list(DEFAULT_FUSION_WEIGHTS[:count])
    if count == 1:
        raise ConfigError("`weights` are late-fusion weights for two checkpoints (RGB, flow); one checkpoint "
                          "takes none")
    if len(weights) != count:
        raise ConfigError(f"`weights` takes one weight per checkpoint: {count} checkpoints, {len(weights)} weights")
    for w in weights:
        check_number("`weights`", w, 0)
    if not any(weights):
        raise ConfigError("`weights` are all zero: the fused scores would be all zero")
    return [float(w) for w in weights]


def evaluate(
    checkpoints: Sequence[Path], data: Sequence[Path], *, weights: Sequence[float] | None = None,
    videos: Sequence[Path] | None = None, annotations: Path | None = None, split: int = 1, subset: str = "test",
    dataset_format: str = "auto", allow_overlap: bool = False, num_clips: int = 1, batch_size: int = 16,
    workers: int = 2, device: str = "cpu", progress: Progress | None = None, segments: int | None = None,
    frames: int | None = None,
) -> dict[str, Any]:
    """One checkpoint, or two (RGB and flow, each with its own data root) fused late with `weights`
    (default 1 and 1.5).

    videos: a video folder per checkpoint, where `data` does not hold them; annotations: the split files'
    folder, shared by both streams. Every argument is checked before any checkpoint is loaded.
    Returns a summary per stream and, for two, of the fusion (`fused`), each with top-1, top-5,
    mean per-class accuracy, per-class accuracy and the confusion matrix.
    """
    if len(checkpoints) not in (1, 2) or len(data) != len(checkpoints):
        raise DataError("give one checkpoint with one data root, or two (RGB, flow) with two data roots")
    if videos is not None and len(videos) != len(checkpoints):
        raise DataError(f"give one `videos` folder per checkpoint ({len(checkpoints)}), got {len(videos)}")
    weights = fusion_weights(len(checkpoints), weights)
    check_number("`batch_size`", batch_size, 1, integer=True)
    check_number("`workers`", workers, 0, integer=True)
    check_number("`num_clips`", num_clips, 1, integer=True)
    if segments is not None and frames is not None:
        raise ConfigError("give `segments` (2D TSN models) or `frames` (3D models), not both")
    for param, value in (("`segments`", segments), ("`frames`", frames)):
        if value is not None:
            check_number(param, value, 1, integer=True)
    check_device(device)
    options = dict(split=split, subset=subset, dataset_format=dataset_format, annotations=annotations,
                   allow_overlap=allow_overlap, num_clips=num_clips, batch_size=batch_size, workers=workers,
                   device=device, progress=progress, segments=segments, frames=frames)
    results: dict[str, Any] = {"checkpoints": [str(c) for c in checkpoints], "streams": []}
    fused_scores, first = None, None
    for i, (ckpt_path, root, w) in enumerate(zip(checkpoints, data, weights, strict=True)):
        ckpt = load_checkpoint(ckpt_path)
        scores, labels, classes, paths = checkpoint_scores(
            ckpt, root, videos=videos[i] if videos is not None else None, **options
        )
        stems = [p.stem for p in paths]
        if first is not None and (stems != first[0] or not np.array_equal(labels, first[1])):
            raise DataError(f"{root}: its videos do not line up with {data[0]} (same split and names needed)")
        first = first or (stems, labels, classes)
        results["streams"].append({"checkpoint": str(ckpt_path), "modality": ckpt.preprocessing.modality,
                                   "weight": w, **classification_summary(scores, labels, classes)})
        fused_scores = w * scores if fused_scores is None else fused_scores + w * scores
    if len(checkpoints) == 2:
        results["fused"] = classification_summary(fused_scores, first[1], first[2])
        results["weights"] = weights
    results["classes"] = first[2]
    return results


def save_confusion_png(matrix: Sequence[Sequence[int]], classes: list[str], path: Path, title: str) -> Path:
    """A row-normalised confusion matrix as a PNG (rows: true class, columns: predicted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.asarray(matrix, dtype=float)
    norm = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.35 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if len(classes) <= 20:
        for i in range(len(classes)):
            for j in range(len(classes)):
                if m[i, j]:
                    ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path

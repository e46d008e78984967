"""Fine-tune a registered model on a video dataset: TSN for 2D models, clips for 3D ones.

    result = train(TrainConfig(data="synthetic/", model="resnet18", epochs=5, batch_size=16, size=112))

Writes into `cfg.out`: `last.pt` (after every epoch, with optimizer and scheduler state for --resume),
`best.pt` (the best held-out top-1 so far), `log.jsonl` (one JSON object per epoch) and `config.json`.

Under torchrun every process calls `train` with the same config: DistributedDataParallel over
`cfg.batch_size / WORLD_SIZE` items per process (`cfg.batch_size` is the global batch), held-out evaluation
sharded over the processes with summed counts, and only rank 0 writes files and reports progress
(`aarm.training.distributed`).
"""

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from aarm.checkpoint import read_checkpoint, save_checkpoint
from aarm.data.annotations import Split, check_held_out, load_split
from aarm.data.datasets import VideoDataset
from aarm.data.preprocessing import Preprocessing
from aarm.errors import CheckpointError, ConfigError
from aarm.fileio import write_json, write_text
from aarm.models import create_model, get_spec, load_pretrained
from aarm.progress import Progress
from aarm.training.config import TrainConfig
from aarm.training.distributed import Distributed, all_reduce_sum, barrier, process_group
from aarm.training.metrics import topk_correct


@dataclass
class TrainResult:
    best_top1: float
    best_epoch: int
    epochs_run: int
    log: list[dict[str, Any]]
    out: Path


def input_channels(model: str, modality: str) -> int:
    """3 for RGB; for flow 2 x 10 stacked fields (2D TSN) or 2 (x, y per frame of a 3D clip)."""
    if modality == "rgb":
        return 3
    return 20 if get_spec(model).dims == 2 else 2


def build_model(cfg: TrainConfig, num_classes: int) -> nn.Module:
    options = dict(cfg.model_options)
    if get_spec(cfg.model).dims == 2:
        options.setdefault("segments", cfg.segments)
    return create_model(
        cfg.model, num_classes=num_classes, attention=cfg.attention,
        in_channels=input_channels(cfg.model, cfg.modality), **options,
    )


def build_preprocessing(cfg: TrainConfig, model: nn.Module) -> Preprocessing:
    base = Preprocessing.for_model(model.aarm_config, size=cfg.size, frames=cfg.frames)
    return replace(base, scale_size=cfg.scale_size or base.scale_size, stride=cfg.stride)


def use_flip(cfg: TrainConfig) -> bool:
    """Horizontal flips unless the config or the dataset's `dataset.json` says no (a flip turns the synthetic
    set's MoveLeft into MoveRight, so its generator records `"horizontal_flip": false`)."""
    if cfg.flip is not None:
        return cfg.flip
    meta = Path(cfg.data) / "dataset.json"
    if meta.is_file():
        return bool(json.loads(meta.read_text()).get("horizontal_flip", True))
    return True


def _loader(
    dataset: Dataset, cfg: TrainConfig, *, batch_size: int, sampler: DistributedSampler | None = None, epoch: int = 0
) -> DataLoader:
    """In order without a sampler; the generator seeds DataLoader workers (items draw from their own rng)."""
    generator = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=cfg.workers, generator=generator,
        drop_last=False,
    )


def train_sampler(dataset: Dataset, cfg: TrainConfig, here: Distributed) -> DistributedSampler:
    """The epoch's shuffle (seeded with cfg.seed + epoch via set_epoch), dealt round-robin to the processes.

    With a per-process batch b = B / N, process r's k-th batch holds positions kB + r, kB + N + r, ... of
    the permutation, so the N batches of step k together are the permutation's k-th block of B: the global
    batch a one-process run with the same seed and batch B takes. When N does not divide the set's size,
    DistributedSampler repeats the permutation's first items to even the shards (up to N - 1 per epoch).
    """
    return DistributedSampler(
        dataset, num_replicas=here.world_size, rank=here.rank, shuffle=True, seed=cfg.seed, drop_last=False
    )


def check_distributed(cfg: TrainConfig, here: Distributed) -> None:
    """Refuse what several processes cannot run: a global batch the processes cannot split evenly (DDP
    averages per-process gradients, equal to the global batch's only for equal shares), or SyncBatchNorm on
    the CPU (PyTorch implements it for CUDA only)."""
    if cfg.batch_size % here.world_size:
        raise ConfigError(
            f"`batch_size` {cfg.batch_size} is the global batch and must be a multiple of the "
            f"{here.world_size} processes"
        )
    if cfg.sync_bn and here.enabled and here.device.type != "cuda":
        raise ConfigError("`sync_bn` needs `device` cuda: PyTorch's SyncBatchNorm has no CPU implementation")


def freeze_batchnorm(model: nn.Module) -> None:
    """Put every batch-norm layer in eval mode: it normalises with its running statistics, which stop
    updating; its scale and shift still train. Call after each `model.train()`."""
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)):
            module.eval()


def held_out_accuracy(
    model: nn.Module, dataset: Dataset, cfg: TrainConfig, here: Distributed, progress: Progress | None = None
) -> tuple[float, float]:
    """(top-1, top-5) over `dataset`. Each process scores items rank, rank + N, ... (no padding, so no
    item counts twice) and the correct counts are summed over the processes: the same figures as one
    process scoring them all."""
    shard = Subset(dataset, range(here.rank, len(dataset), here.world_size)) if here.enabled else dataset
    top1 = top5 = 0
    if len(shard):
        loader = _loader(shard, cfg, batch_size=cfg.batch_size // here.world_size)
        scores, labels = predict_scores(model, loader, here.device, progress)
        top1, top5 = int(topk_correct(scores, labels, 1).sum()), int(topk_correct(scores, labels, 5).sum())
    top1, top5, seen = all_reduce_sum([top1, top5, len(shard)], here)
    return top1 / seen, top5 / seen


@torch.no_grad()
def predict_scores(
    model: nn.Module, loader: DataLoader, device: torch.device, progress: Progress | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Scores (N, classes), averaged over each item's V views, and labels (N,)."""
    model.eval()
    scores, labels = [], []
    total = len(loader)
    for i, (x, y) in enumerate(loader):
        b, v = x.shape[:2]
        out = model(x.flatten(0, 1).to(device)).view(b, v, -1).mean(dim=1)
        scores.append(out.float().cpu().numpy())
        labels.append(y.numpy())
        if progress:
            progress("eval", i + 1, total)
    return np.concatenate(scores), np.concatenate(labels)


def _optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def _scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=cfg.lr_steps or [max(cfg.epochs * 2 // 3, 1)])
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def _same_run(saved: dict[str, Any], cfg: TrainConfig) -> list[str]:
    keys = ("data", "model", "attention", "modality", "model_options", "size", "segments", "frames", "split",
            "optimizer")
    return [k for k in keys if saved.get(k) != getattr(cfg, k)]


def train(
    cfg: TrainConfig, *, resume: bool = False, force: bool = False, progress: Progress | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train, validate on the split's test subset after every epoch, checkpoint, and return the log.

    Under torchrun (RANK, WORLD_SIZE, LOCAL_RANK set) every process calls this and gets the same result;
    `progress` and `on_epoch` are called on rank 0 only. `cfg.world_size` is replaced by WORLD_SIZE.
    """
    # Checked before the process group forms: no process writes before every process has looked.
    out = Path(cfg.out)
    existing = [name for name in ("best.pt", "config.json", "log.jsonl") if (out / name).exists()]
    if existing and not ((out / "last.pt").exists() or resume or force):  # files a new run would overwrite
        raise ConfigError(f"{out} holds {', '.join(existing)}, which training would overwrite; pass `resume` to "
                          "continue a run that stopped in its first epoch or `force` to start over")
    with process_group(cfg.device) as here:
        return _train(replace(cfg, world_size=here.world_size), here, resume, force, progress, on_epoch)


def _train(
    cfg: TrainConfig, here: Distributed, resume: bool, force: bool, progress: Progress | None,
    on_epoch: Callable[[dict[str, Any]], None] | None,
) -> TrainResult:
    out = Path(cfg.out)
    last, best = out / "last.pt", out / "best.pt"
    if last.exists() and not (resume or force):
        raise ConfigError(f"{out} already holds a run; pass `resume` to continue it or `force` to start over")
    check_distributed(cfg, here)
    if not here.is_main:
        progress, on_epoch = None, None
    torch.manual_seed(cfg.seed)
    device = here.device

    train_split: Split = load_split(Path(cfg.data), subset="train", **cfg.dataset_paths())
    test_split: Split = load_split(Path(cfg.data), subset="test", **cfg.dataset_paths())
    if not cfg.allow_overlap:
        check_held_out(train_split, test_split, cfg.data)
    classes = train_split.classes
    net = build_model(cfg, len(classes))
    preprocessing = build_preprocessing(cfg, net)
    if cfg.pretrained and not (resume and last.exists()):
        load_pretrained(net, cfg.pretrained)
    if cfg.sync_bn and here.enabled:
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    net.to(device)
    if here.rank:
        # STAM's training pick (chi) draws from torch's generator: without this every process would draw the
        # same picks for the same positions of its batch. Rank 0 keeps a one-process run's stream.
        torch.manual_seed(cfg.seed + here.rank)

    optimizer = _optimizer(cfg, net)
    scheduler = _scheduler(cfg, optimizer)
    log: list[dict[str, Any]] = []
    start_epoch, best_top1, best_epoch = 0, -1.0, -1
    if resume and last.exists():
        payload = read_checkpoint(last)  # every process reads it, onto the CPU, then copies to its device
        state = payload.get("extra_state") or {}
        mismatched = _same_run(state.get("train_config", {}), cfg)
        if mismatched:
            raise CheckpointError(f"{last}: cannot resume, the run used other {', '.join(mismatched)}")
        net.load_state_dict(payload["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch = int(state["epoch"]) + 1
        best_top1, best_epoch = float(state["best_top1"]), int(state["best_epoch"])
        log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line.strip()]
        log = [row for row in log if row["epoch"] < start_epoch]
    if here.is_main:
        write_json(out / "config.json", cfg.to_dict())
    model: nn.Module = net
    if here.enabled:
        model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)

    train_set = VideoDataset(train_split.records, preprocessing, train=True, seed=cfg.seed, flip=use_flip(cfg))
    test_set = VideoDataset(test_split.records, preprocessing, train=False, num_clips=cfg.eval_clips)
    sampler = train_sampler(train_set, cfg, here)
    criterion = nn.CrossEntropyLoss()
    for epoch in range(start_epoch, cfg.epochs):
        started = time.perf_counter()
        model.train()
        if cfg.freeze_bn:
            freeze_batchnorm(net)
        train_set.set_epoch(epoch)
        sampler.set_epoch(epoch)
        loader = _loader(train_set, cfg, batch_size=cfg.batch_size // here.world_size, sampler=sampler, epoch=epoch)
        losses, correct, seen = 0.0, 0, 0
        for i, (x, y) in enumerate(loader):
            x, y = x[:, 0].to(device), y.to(device)
            logits = model(x)
            loss = criterion(logits, y)
            if not math.isfinite(loss.item()):
                raise ConfigError(f"training diverged at epoch {epoch} (loss {loss.item()}); lower `lr`")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            if progress:
                progress(f"epoch {epoch + 1}/{cfg.epochs}", i + 1, len(loader))
        losses, correct, seen = all_reduce_sum([losses, correct, seen], here)
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        top1, top5 = held_out_accuracy(net, test_set, cfg, here, progress)
        row = {
            "epoch": epoch, "train_loss": losses / seen, "train_top1": correct / seen, "val_top1": top1,
            "val_top5": top5, "lr": lr, "seconds": time.perf_counter() - started, "world_size": here.world_size,
        }
        log.append(row)
        meta = {"epoch": epoch, "val_top1": top1, "train_config": cfg.to_dict()}
        if top1 > best_top1:
            best_top1, best_epoch = top1, epoch
            if here.is_main:
                save_checkpoint(best, net, classes=classes, preprocessing=preprocessing, meta=meta)
        extra = {
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "epoch": epoch,
            "best_top1": best_top1, "best_epoch": best_epoch, "train_config": cfg.to_dict(),
        }
        if here.is_main:
            save_checkpoint(last, net, classes=classes, preprocessing=preprocessing, meta=meta, extra_state=extra)
            write_text(out / "log.jsonl", "".join(json.dumps(r) + "\n" for r in log))
        if on_epoch:
            on_epoch(row)
    barrier(here)  # when train() returns on any process, rank 0 has written the last epoch's files
    return TrainResult(
        best_top1=best_top1, best_epoch=best_epoch, epochs_run=cfg.epochs - start_epoch, log=log, out=out
    )

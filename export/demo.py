"""`aarm-export demo`: synthetic data -> a small trained AARM model -> the full pipeline, in a few minutes.

Everything is made here (no downloads): a synthetic action dataset whose classes differ only in the
direction of motion, an AARM ResNet-18 TSN trained on it at a small resolution, then `run_pipeline` (ONNX,
optimised, FP16, INT8, TensorRT where present, parity, benchmark, report, Triton) and STAM/CAM attention maps.
"""

import time
from dataclasses import dataclass
from pathlib import Path

from aarm.checkpoint import load_checkpoint
from aarm.data.annotations import load_split
from aarm.data.clips import load_video_input
from aarm.data.synthetic import make_synthetic
from aarm.errors import ConfigError
from aarm.explain import capture_attention, render_png
from aarm.training import TrainConfig, train
from export.pipeline import Log, PipelineResult, run_pipeline
from export.pipeline_config import PipelineConfig


@dataclass
class DemoSettings:
    """Sized to finish in about five minutes on a 2-core CPU."""

    classes: int = 4
    videos_per_class: int = 100
    frames: int = 24
    video_size: int = 80
    size: int = 64
    epochs: int = 14
    batch_size: int = 16
    lr: float = 5e-4  # AdamW: a from-scratch model learns in the few steps a demo has; SGD does not
    seed: int = 0


def run_demo(out: Path, settings: DemoSettings, *, force: bool = False, log: Log = print,
             progress=None) -> tuple[PipelineResult, Path]:
    """Make the dataset and model under `out`, then run the pipeline into `out/deploy`; returns its result
    and the trained checkpoint."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise ConfigError(f"{out} exists and is not empty; pass --force to redo the demo there")
    started = time.perf_counter()
    data, run, deploy = out / "data", out / "train", out / "deploy"
    log(f"1/4 making a synthetic action dataset ({settings.classes} classes x {settings.videos_per_class} videos)")
    make_synthetic(data, classes=settings.classes, videos_per_class=settings.videos_per_class, seed=settings.seed,
                   frames=settings.frames, size=settings.video_size, force=True, progress=False)
    log(f"2/4 training an AARM ResNet-18 TSN for {settings.epochs} epochs at {settings.size}x{settings.size}")
    cfg = TrainConfig(data=str(data), out=str(run), model="resnet18", attention="aarm", epochs=settings.epochs,
                      batch_size=settings.batch_size, optimizer="adamw", lr=settings.lr, size=settings.size,
                      segments=3, schedule="cosine", seed=settings.seed, workers=2)
    result = train(cfg, force=True, progress=progress,
                   on_epoch=lambda r: log(f"    epoch {r['epoch'] + 1}: loss {r['train_loss']:.3f}, held-out "
                                          f"top-1 {r['val_top1']:.1%} ({r['seconds']:.0f} s)"))
    checkpoint = run / "best.pt"
    log(f"    best held-out top-1 {result.best_top1:.1%} ({time.perf_counter() - started:.0f} s so far)")
    log("3/4 attention maps of one held-out video")
    deploy.mkdir(parents=True, exist_ok=True)
    ckpt = load_checkpoint(checkpoint)
    video = load_split(data, subset="test").records[0].path
    x = load_video_input(video, ckpt.preprocessing)[:1]
    render_png(capture_attention(ckpt.model, x), x, ckpt.preprocessing, ckpt.classes, deploy / "attention.png",
               title=video.name)
    log("4/4 pipeline: export, optimise, FP16, INT8, TensorRT, parity, benchmark, report, Triton")
    # INT8's accuracy budget is searched on every held-out clip, the same clips parity then judges it on.
    pipeline = PipelineConfig(checkpoint=str(checkpoint), out=str(deploy), data=str(data), calibration_clips=32,
                              parity_samples=16, bench_batches=[1, 8], bench_iterations=10)
    return run_pipeline(pipeline, log=log), checkpoint

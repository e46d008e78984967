"""`aarm-export demo`: synthetic data -> a small trained AARM model -> the full pipeline, in a few minutes.

Everything is made here (no downloads): a synthetic action dataset whose classes differ only in the
direction of motion, an AARM ResNet-18 TSN trained on it at a small resolution, then `run_pipeline` (ONNX,
optimised, CPU kernels, FP16, INT8, TensorRT where present, parity, benchmark, report, Triton) and STAM/CAM
attention maps.

A demo records its settings in `<out>/demo.json` before it starts. Run again on the same folder it resumes:
the dataset is kept, training continues from its last finished epoch (or is skipped when done) and the
pipeline skips its finished stages. Other settings, or a folder that holds no demo, are an error unless
`force`, which starts over.
"""

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from aarm.checkpoint import load_checkpoint
from aarm.data.annotations import load_split
from aarm.data.clips import load_video_input
from aarm.data.synthetic import make_synthetic
from aarm.errors import ConfigError
from aarm.explain import capture_attention, render_png
from aarm.fileio import write_json
from aarm.progress import Progress
from aarm.training import TrainConfig, train
from export.pipeline import Log, PipelineResult, run_pipeline
from export.pipeline_config import PipelineConfig

RECORD = "demo.json"
START_OVER = "pass --force (make demo FORCE=1) to start over"


@dataclass
class DemoSettings:
    """Sized to finish in about five minutes on a 2-core CPU (272 s measured quiet, README)."""

    classes: int = 4
    videos_per_class: int = 100
    frames: int = 24
    video_size: int = 80
    size: int = 64
    epochs: int = 14
    batch_size: int = 16
    lr: float = 5e-4  # AdamW: a from-scratch model learns in the few steps a demo has; SGD does not
    seed: int = 0


def demo_state(out: Path, settings: DemoSettings) -> str:
    """"new" (no folder, or an empty one) or "resume" (a demo with these settings); else ConfigError naming
    what is in the way."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a folder; choose another --out")
    if not out.exists() or not any(out.iterdir()):
        return "new"
    record = out / RECORD
    if not record.is_file():
        raise ConfigError(f"{out} is not empty and holds no {RECORD} (not a demo, or one from an earlier aarm); "
                          f"{START_OVER} there, or choose another --out")
    try:
        saved = json.loads(record.read_text())["settings"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{record}: unreadable demo record ({exc}); {START_OVER}") from None
    for name, value in asdict(settings).items():
        if saved.get(name) != value:
            raise ConfigError(f"{out} holds a demo made with {name} = {saved.get(name)}, this run asks {value}; "
                              f"{START_OVER}")
    return "resume"


def run_demo(out: Path, settings: DemoSettings, *, force: bool = False, log: Log = print,
             progress: Progress | None = None) -> tuple[PipelineResult, Path]:
    """Make the dataset and model under `out`, then run the pipeline into `out/deploy`; returns its result
    and the trained checkpoint. A folder holding this demo resumes it; `force` starts over."""
    out = Path(out)
    resume = not force and demo_state(out, settings) == "resume"
    if force and out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a folder; choose another --out")
    started = time.perf_counter()
    data, run, deploy = out / "data", out / "train", out / "deploy"
    if not resume:
        write_json(out / RECORD, {"settings": asdict(settings)})
    step = f"1/4 synthetic action dataset ({settings.classes} classes x {settings.videos_per_class} videos)"
    if resume and (data / "dataset.json").is_file():  # make_synthetic renames a finished folder into place
        log(f"{step}: made by an earlier run, kept")
    else:
        log(f"{step}: making it")
        make_synthetic(data, classes=settings.classes, videos_per_class=settings.videos_per_class,
                       seed=settings.seed, frames=settings.frames, size=settings.video_size, force=True)
    cfg = TrainConfig(data=str(data), out=str(run), model="resnet18", attention="aarm", epochs=settings.epochs,
                      batch_size=settings.batch_size, optimizer="adamw", lr=settings.lr, size=settings.size,
                      segments=3, schedule="cosine", seed=settings.seed, workers=2)
    epochs = _finished_epochs(run) if resume else []
    step = f"2/4 training an AARM ResNet-18 TSN for {settings.epochs} epochs at {settings.size}x{settings.size}"
    checkpoint = run / "best.pt"
    if len(epochs) >= settings.epochs and checkpoint.is_file():
        log(f"{step}: done by an earlier run, kept")
        best_top1 = max(float(r["val_top1"]) for r in epochs)
    else:
        log(f"{step}{f': resuming after epoch {len(epochs)}' if epochs else ''}")
        best_top1 = train(cfg, resume=bool(epochs), force=not epochs, progress=progress,
                          on_epoch=lambda r: log(f"    epoch {r['epoch'] + 1}: loss {r['train_loss']:.3f}, held-out "
                                                 f"top-1 {r['val_top1']:.1%} ({r['seconds']:.0f} s)")).best_top1
    log(f"    best held-out top-1 {best_top1:.1%} ({time.perf_counter() - started:.0f} s so far)")
    deploy.mkdir(parents=True, exist_ok=True)
    picture = deploy / "attention.png"
    if resume and picture.is_file() and picture.stat().st_mtime >= checkpoint.stat().st_mtime:
        log("3/4 attention maps of one held-out video: drawn by an earlier run, kept")
    else:
        log("3/4 attention maps of one held-out video")
        ckpt = load_checkpoint(checkpoint)
        video = load_split(data, subset="test").records[0].path
        x = load_video_input(video, ckpt.preprocessing)[:1]
        render_png(capture_attention(ckpt.model, x), x, ckpt.preprocessing, ckpt.classes, picture, title=video.name)
    log("4/4 pipeline: export, optimise, CPU kernels, FP16, INT8, TensorRT, parity, benchmark, report, Triton")
    # INT8's accuracy budget is searched on every held-out clip, the same clips parity then judges it on.
    pipeline = PipelineConfig(checkpoint=str(checkpoint), out=str(deploy), data=str(data), calibration_clips=32,
                              parity_samples=16, bench_batches=[1, 8], bench_iterations=30)
    return run_pipeline(pipeline, log=log, force=force), checkpoint


def _finished_epochs(run: Path) -> list[dict]:
    """The log rows of the epochs a training run in `run` has finished and checkpointed (none without last.pt)."""
    log = run / "log.jsonl"
    if not (run / "last.pt").is_file() or not log.is_file():
        return []
    try:
        return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    except ValueError as exc:
        raise ConfigError(f"{log}: unreadable training log ({exc}); {START_OVER}") from None

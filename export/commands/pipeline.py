"""`aarm-export pipeline` (one checkpoint to a verified deployment folder) and `aarm-export demo`."""

import time
from pathlib import Path
from typing import Annotated

import typer

from export.console import console, print_table
from export.demo import DemoSettings, demo_state, run_demo
from export.options import at_least
from export.pipeline import PipelineResult, run_pipeline
from export.pipeline_config import PipelineConfig
from export.progress import progress_callback
from export.summary import format_rows, summary_columns, summary_rows


def _log(line: str) -> None:
    console.print(line, highlight=False, markup=False)


def show_summary(result: PipelineResult) -> None:
    out = result.out
    if (out / "parity.json").is_file() and (out / "bench.json").is_file():
        rows = summary_rows(out / "parity.json", out / "bench.json")
        print_table(f"Deployment summary ({out}; batch {rows[0]['batch']}, median latency)",
                    summary_columns(rows), format_rows(rows))
    report = result.stages["report"].result.get("html") if "report" in result.stages else None
    if report:
        console.print(f"report: {report}", highlight=False)
    if (out / "triton").is_dir():
        console.print(f"Triton model repository: {out / 'triton'}", highlight=False)


def pipeline(
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", "-c", help="Trained checkpoint (.pt).")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder (default: deploy).")] = None,
    data: Annotated[Path | None, typer.Option(help="Labelled dataset: calibrates INT8, measures accuracy.")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML file with a \\[pipeline] table.")] = None,
    precisions: Annotated[str | None, typer.Option(help="Comma list of fp32, fp16, int8.")] = None,
    tensorrt: Annotated[str | None, typer.Option(help="auto (build engines where TensorRT is) | off")] = None,
    kernels: Annotated[str | None, typer.Option(help="auto (the CPU graph with AARM's fused onnxruntime kernels, "
                                                     "where they build) | off")] = None,
    threads: Annotated[int | None, typer.Option(help="Inference threads for parity and bench.",
                                                callback=at_least(1))] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace artifacts in --out that were made with other "
                                                        "settings or from another checkpoint or dataset.")] = False,
) -> None:
    """Export, optimise, CPU kernels, FP16, INT8, TensorRT, parity, benchmark, report and Triton, into one folder.

    Stages whose inputs are unchanged since the last run are skipped, so an interrupted run resumes. A stage whose
    settings differ from those its artifacts in --out were made with stops the run, naming the setting, unless
    --force.
    """
    cfg = PipelineConfig.from_sources(
        config, checkpoint=str(checkpoint) if checkpoint else None, out=str(out) if out else None,
        data=str(data) if data else None, precisions=precisions.split(",") if precisions else None,
        tensorrt=tensorrt, kernels=kernels, threads=threads,
    )
    started = time.perf_counter()
    result = run_pipeline(cfg, log=_log, force=force)
    show_summary(result)
    console.print(f"pipeline finished in {time.perf_counter() - started:.0f} s", highlight=False)


def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for data, model and deployment.")] = Path(
        "aarm-demo"),
    force: Annotated[bool, typer.Option("--force", help="Start over in a folder that holds a demo (make demo "
                                                        "FORCE=1).")] = False,
    epochs: Annotated[int, typer.Option(help="Training epochs.", callback=at_least(1))] = DemoSettings.epochs,
    classes: Annotated[int, typer.Option(help="Synthetic classes (2-10).",
                                         callback=at_least(2))] = DemoSettings.classes,
) -> None:
    """Make a synthetic action dataset, train a small AARM model, and run the whole pipeline (~4 min on 2 cores).

    Run again on the same folder, it resumes: finished steps are kept, training continues from its last epoch.
    """
    started = time.perf_counter()
    settings = DemoSettings(epochs=epochs, classes=classes)
    what = "resuming the demo in" if not force and demo_state(out, settings) == "resume" else "demo into"
    console.print(f"aarm {what} {out}: about five minutes on a 2-core CPU from the start; nothing is downloaded",
                  highlight=False, markup=False)
    with progress_callback() as report:
        result, checkpoint = run_demo(out, settings, force=force, log=_log, progress=report)
    show_summary(result)
    console.print(f"checkpoint: {checkpoint}\nattention maps: {result.out / 'attention.png'}", highlight=False)
    console.print(f"demo finished in {time.perf_counter() - started:.0f} s", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("pipeline")(pipeline)
    app.command("demo")(demo)

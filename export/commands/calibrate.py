"""`aarm-export calibrate`: INT8 post-training quantization of a float ONNX artifact, calibrated on real clips,
keeping the most sensitive layers in float until the held-out accuracy drop is within a budget."""

from pathlib import Path
from typing import Annotated

import typer

from export.console import console, err_console, print_table
from export.help_format import command_words
from export.progress import progress_callback


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def calibrate_command(
    model: Annotated[Path, typer.Argument(help="Float32 ONNX artifact (with its sidecar) to quantize.")],
    data: Annotated[Path, typer.Option("--data", help="Dataset root (its train subset calibrates) or a folder of "
                                                      "videos.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="INT8 Q/DQ graph to write.")],
    split: Annotated[int, typer.Option(help="Dataset split 1-3.")] = 1,
    videos: Annotated[Path | None, typer.Option(
        help="Folder of <class>/<video> if not in --data (DATA/videos, DATA/hmdb51 and such are found).")] = None,
    annotations: Annotated[Path | None, typer.Option(
        help="Folder of the split files (classInd.txt and trainlist0N.txt, or HMDB51's *_test_splitN.txt).")] = None,
    clips: Annotated[int, typer.Option(help="Calibration clips (chosen by --seed).")] = 64,
    method: Annotated[str, typer.Option(help="minmax | entropy | percentile")] = "percentile",
    target: Annotated[str, typer.Option(help="cpu (onnxruntime, uint8 activations) | tensorrt (symmetric "
                                             "int8)")] = "cpu",
    max_drop: Annotated[float | None, typer.Option(
        "--max-drop", help="Top-1 points the INT8 graph may lose on held-out clips; worst layers stay float until it "
                           "holds. Default 1.0 with labelled held-out clips; none for a folder of unlabelled videos "
                           "(said in the output). Given explicitly, it needs labelled held-out clips.")] = None,
    eval_data: Annotated[Path | None, typer.Option("--eval-data", help="Labelled held-out dataset (its test "
                                                                       "subset); default: --data's.")] = None,
    eval_clips: Annotated[int, typer.Option("--eval-clips", help="Held-out clips to score.")] = 256,
    exclude: Annotated[list[str] | None, typer.Option("--exclude", help="Node name, glob or module path to keep in "
                                                                        "float (repeatable).")] = None,
    cache: Annotated[Path | None, typer.Option(help="JSON calibration cache: reused when graph, clips and method "
                                                    "match.")] = None,
    seed: Annotated[int, typer.Option(help="Chooses the calibration and held-out clips.")] = 0,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 8,
    reduce_range: Annotated[bool, typer.Option("--reduce-range", help="7-bit weights (CPUs without VNNI may "
                                                                      "saturate 8-bit products).")] = False,
    preprocess: Annotated[bool, typer.Option(help="Run onnxruntime's quantization pre-processing first.")] = True,
    passes: Annotated[bool, typer.Option(help="Run the standard-op graph passes (aarm-export optimize) on MODEL "
                                              "first: the INT8 graph is quantized from the optimised graph.")] = True,
    force: Annotated[bool, typer.Option(help="Overwrite the output, its report and its table.")] = False,
) -> None:
    """Quantize MODEL to an INT8 Q/DQ graph for --target, within --max-drop top-1 points on held-out clips."""
    from calibration.quantize import DEFAULT_MAX_DROP, CalibrationConfig, calibrate
    from export.passes import run_passes

    config = CalibrationConfig(
        data=data, split=split, videos=videos, annotations=annotations, clips=clips, method=method, target=target,
        max_drop=DEFAULT_MAX_DROP if max_drop is None else max_drop, require_labels=max_drop is not None,
        eval_data=eval_data, eval_clips=eval_clips, exclude=tuple(exclude or ()), cache=cache, seed=seed,
        batch_size=batch_size, reduce_range=reduce_range, preprocess=preprocess,
    )
    with progress_callback() as report:
        result = calibrate(model, out, config, graph_passes=run_passes if passes else None, force=force,
                           progress=report)
    r = result.report
    cal, q = r.calibration, r.quantization
    cached = " (ranges from the cache)" if cal.cache.hit else ""
    console.print(f"{r.method} calibration on {cal.clips} clips of {cal.data}{cached}; target {r.target}: "
                  f"{q.activation_type} activations, {q.weight_type} weights", highlight=False)
    if q.graph_passes:
        console.print(f"graph passes first: {', '.join(q.graph_passes)}", highlight=False)
    if r.budget_note:
        err_console.print(f"[bold yellow]note:[/] {command_words(r.budget_note)}", highlight=False)
    if r.sensitivity:
        print_table(
            "Layer sensitivity (only that module quantized, the rest float)",
            ["module", "role", "nodes", "top-1 %", "agreement %", "score error"],
            [(s.group, s.role, s.nodes, _fmt(s.top1), _fmt(s.agreement), f"{s.error:.4f}") for s in r.sensitivity[:15]],
        )
    session = r.session
    if r.excluded:
        where = "in onnxruntime's optimised session" if session.checked else "not checked"
        print_table(
            f"Kept in float ({len(r.excluded)} nodes)", ["node", "module", f"runs ({where})", "reason"],
            [(e.node, e.group or "-", e.in_session or "-", command_words(e.reason)) for e in r.excluded],
        )
    if session.checked:
        console.print(f"onnxruntime session: {session.int8_kernels} int8 kernels, {len(session.float_nodes)} kept-"
                      f"in-float nodes run in float, {len(session.unknown)} not traceable", highlight=False)
    acc = r.accuracy
    if acc is not None:
        print_table(
            f"Held-out accuracy ({acc.clips} clips of {acc.data})",
            ["graph", "top-1 %", "drop (points)", "lost (points)", "agreement %", "score error"],
            [("fp32", _fmt(acc.fp32_top1), "-", "-", "100.0", "0"),
             ("int8", _fmt(acc.int8_top1), _fmt(acc.drop, ".2f"), _fmt(acc.lost, ".2f"), _fmt(acc.agreement),
              f"{acc.error:.4f}")],
        )
        if acc.max_drop is not None and acc.points_per_clip > acc.max_drop:
            err_console.print(
                f"[bold yellow]warning:[/] one held-out clip is {acc.points_per_clip:.2f} top-1 points, more than "
                f"the {acc.max_drop}-point budget: the search keeps layers in float until not one clip is lost; "
                "give more held-out clips (--eval-data, --eval-clips)", highlight=False)
        if acc.within_budget is False:
            err_console.print(f"[bold yellow]warning:[/] top-1 loss {acc.lost:.2f} points is over the "
                              f"{acc.max_drop}-point budget even with every layer in float", highlight=False)
    if target == "tensorrt":
        from export.lint import lint_onnx

        findings = lint_onnx(out)
        errors = sum(f.severity == "error" for f in findings)
        console.print(f"TensorRT lint: {errors} error(s), {len(findings) - errors} warning(s)", highlight=False)
        if errors:
            err_console.print(f"[bold red]error:[/] {out} fails the TensorRT lint; run aarm-export lint {out}",
                              highlight=False, soft_wrap=True)
            raise typer.Exit(1)
    console.print(f"wrote {out} (+ sidecar), {result.report_path.name}, {result.table_path.name} "
                  f"in {r.seconds:.0f} s", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate_command)

"""`aarm-export parity`: does an artifact compute what its PyTorch checkpoint computes?"""

from pathlib import Path
from typing import Annotated, Any

import typer

from aarm.fileio import check_writable, write_json
from export.console import console, print_table
from export.help_format import command_words
from export.options import (
    ChannelsLastOpt,
    CudaGraphsOpt,
    DeviceOpt,
    FramesOpt,
    PrecisionOpt,
    ProviderOpt,
    SegmentsOpt,
    ThreadsOpt,
    at_least,
    open_cli_runner,
    torch_options,
)
from export.progress import progress_callback

_METRICS = [  # (metric key, label, format); limits and the metric each bounds come from runtime.compare.LIMITS
    ("samples", "clips", "{:d}"), ("max_abs", "max abs error", "{:.3g}"),
    ("max_rel", "max relative error", "{:.3g}"), ("rel_rms", "RMS relative error", "{:.3g}"),
    ("min_cosine", "min cosine", "{:.6f}"), ("mean_cosine", "mean cosine", "{:.6f}"),
    ("top1", "top-1 agreement", "{:.1%}"), ("top5", "top-5 agreement", "{:.1%}"),
    ("accuracy", "accuracy", "{:.1%}"), ("reference_accuracy", "reference accuracy", "{:.1%}"),
    ("accuracy_drop", "accuracy drop", "{:.1%}"), ("lost", "clips lost", "{:.1%}"),
]
NOT_JUDGED = " (not judged)"


def metric_rows(result: Any) -> list[tuple[str, ...]]:
    """One row per metric: its value on each input set, the limit, the input sets it was applied to and
    where the limit came from ("fp32 default for resnet18 (measured table)", "--rtol"). A value beyond its
    limit is red; one shown beside a limit that its input set is not judged by is marked "(not judged)".
    The first row counts NaN/Inf scores (artifact/reference), which fail anywhere."""
    from runtime.compare import LIMIT_OF_METRIC

    sets = list(result.metrics)
    judged = result.judged
    bad = {(f.input_set, f.metric) for f in result.violations}
    cells = []
    for name in sets:
        m = result.metrics[name]
        text = f"{m.get('artifact_nonfinite', 0)}/{m.get('reference_nonfinite', 0)}"
        failed = (name, "artifact_nonfinite") in bad or (name, "reference_nonfinite") in bad
        cells.append(f"[bold red]{text}[/]" if failed else text)
    rows = [("NaN/Inf scores (artifact/reference)", *cells, "= 0", ", ".join(sets), "always")]
    for key, label, fmt in _METRICS:
        values = [result.metrics[name].get(key) for name in sets]
        if all(v is None for v in values):
            continue
        lim = LIMIT_OF_METRIC.get(key)
        limit = getattr(result.tolerances, lim.field) if lim else None
        applied = [name for name, v in zip(sets, values, strict=True) if limit is not None and v is not None
                   and judged[name]]
        cells = []
        for name, v in zip(sets, values, strict=True):
            text = "-" if v is None else fmt.format(v)
            if (name, key) in bad:
                text = f"[bold red]{text}[/]"
            elif v is not None and limit is not None and not judged[name]:
                text += NOT_JUDGED
            cells.append(text)
        shown_limit = "-" if limit is None else ("<= " if lim.kind == "max" else ">= ") + fmt.format(limit)
        source = "-" if limit is None else result.tolerances.source(lim.field)
        rows.append((label, *cells, shown_limit, ", ".join(applied) if applied else "-", source))
    return rows


def rebuild_line(result: Any) -> str:
    """One line on the FP16 rebuild check: what the artifact was compared with and how it did."""
    rebuild = result.rebuild
    if "skipped" in rebuild:
        return f"rebuild check: not run ({rebuild['skipped']})"
    m = rebuild["metrics"]
    failed = [f for f in result.violations if f.input_set == "rebuild"]
    shown = "-" if m["max_rel"] is None else f"{m['max_rel']:.3g}"
    source = rebuild.get("limit_sources", {}).get("max_rel", "fp32 limits")
    return (f"rebuild check: against {Path(rebuild['parent']).name} converted to FP16 again here, max relative "
            f"error {shown} on {m['samples']} random clips (limits: {source}): {'FAIL' if failed else 'pass'}")


def parent_line(result: Any) -> str:
    """One line on the parent check: the rebuilt graph's parent against the same reference."""
    parent = result.parent
    m = parent["metrics"]["random"]
    failed = [f for f in result.violations if f.input_set == "parent"]
    shown = "-" if m["max_rel"] is None else f"{m['max_rel']:.3g}"
    source = parent["limit_sources"].get("max_rel", "-")
    return (f"parent check: {Path(parent['path']).name} against the reference, max relative error {shown} on "
            f"{m['samples']} random clips (limits: {source}): {'FAIL' if failed else 'pass'}")


def _check_bisect_args(artifact: Path, reference: Path) -> None:
    """--bisect marks tensors in an ONNX graph and hooks the modules of a PyTorch checkpoint; refuse anything
    else before the comparison runs."""
    from aarm.errors import ConfigError

    if artifact.suffix.lower() != ".onnx":
        raise ConfigError(f"--bisect marks module outputs in an ONNX graph; {artifact.name} is not one")
    if reference.suffix.lower() not in (".pt", ".pth"):
        raise ConfigError(f"--bisect hooks the modules of a PyTorch checkpoint; --reference {reference.name} is "
                          "not one")


def _run_bisect(artifact: Path, runner: Any, reference: Any, tolerances: Any, feed: dict[str, Any] | None,
                batch: int, seed: int, provider: list[str] | None, threads: int | None) -> Any:
    """`runtime.bisect.bisect` of `artifact` against the reference runner's model on `feed` (else on `batch`
    random clips drawn with `seed`: the first batch parity compared); prints the table and the verdict line,
    returns the BisectResult."""
    import numpy as np

    from runtime.bisect import bisect

    if feed is None:
        feed = runner.example_feed(batch, rng=np.random.default_rng(seed))
    with console.status("bisecting: module outputs in the graph against PyTorch"):
        result = bisect(artifact, reference.model, feed, tolerances, providers=provider, threads=threads)
    print_table(f"Bisection of {artifact.name} ({result.precision}) against {reference.name}, {result.clips} clips",
                ["module", "max_rel", "cosine", "verdict"], result.table_rows())
    console.print(result.summary(), highlight=False, markup=False)
    return result


def parity(
    artifact: Annotated[Path, typer.Argument(help="Artifact to check (.onnx, .engine, .pt).")],
    reference: Annotated[Path, typer.Option(help="PyTorch checkpoint it was exported from.")],
    data: Annotated[Path | None, typer.Option(help="Dataset root: also compare on its labelled test clips.")] = None,
    split: Annotated[int, typer.Option(help="Split of --data (1..3).")] = 1,
    videos: Annotated[Path | None, typer.Option(
        help="Folder of <class>/<video> if not in --data (DATA/videos, DATA/hmdb51 and such are found).")] = None,
    annotations: Annotated[Path | None, typer.Option(
        help="Folder of the split files if not in --data.")] = None,
    data_format: Annotated[
        str, typer.Option("--format", help="Layout of --data: auto, ucf101, hmdb51, folder.")
    ] = "auto",
    samples: Annotated[int, typer.Option(
        help="Random clips, and labelled clips with --data (0: no random clips and every labelled clip; "
             "needs --data).", callback=at_least(0))] = 32,
    batch: Annotated[int, typer.Option(help="Clips per inference call.", callback=at_least(1))] = 8,
    seed: Annotated[int, typer.Option(help="Seed of the random inputs and of the clip choice.")] = 0,
    atol: Annotated[float | None, typer.Option(help="Max absolute score error (default: by precision).")] = None,
    rtol: Annotated[float | None, typer.Option(help="Max error relative to the largest reference score.")] = None,
    max_rel_rms: Annotated[float | None, typer.Option(
        help="Max RMS score error relative to the reference's RMS score.")] = None,
    min_cosine: Annotated[float | None, typer.Option(help="Min per-clip cosine similarity of the scores.")] = None,
    min_mean_cosine: Annotated[float | None, typer.Option(help="Min mean cosine similarity over clips.")] = None,
    min_top1: Annotated[float | None, typer.Option(help="Min share of clips with the same top-1 class.")] = None,
    min_top5: Annotated[float | None, typer.Option(help="Min share of clips with the same top-5 set.")] = None,
    max_accuracy_drop: Annotated[float | None, typer.Option(help="Max accuracy lost on --data (0.01 = 1 pt).")] = None,
    provider: ProviderOpt = None,
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
    precision: PrecisionOpt = "fp32",
    channels_last: ChannelsLastOpt = False,
    cuda_graphs: CudaGraphsOpt = False,
    segments: SegmentsOpt = None,
    frames: FramesOpt = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the metrics as JSON.")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite the --json file.")] = False,
    no_lineage: Annotated[bool, typer.Option(
        "--no-lineage", help="Compare even if the artifact does not descend from the checkpoint.")] = False,
    bisect: Annotated[bool, typer.Option(
        "--bisect", help="Also compare each AARM block and backbone stage with PyTorch and name the first module "
                         "whose output leaves the tolerance (ONNX artifact, checkpoint reference).")] = False,
) -> None:
    """Compare an artifact's scores with its checkpoint's; exit 1 naming every tolerance exceeded.

    Random inputs, and labelled test clips with --data. Default tolerances follow the graph's precision,
    set from measured errors of correct artifacts (docs/runtime.md, "Parity limits"); the table says which
    input set each limit was applied to. NaN or Inf in any scores fails.
    """
    from aarm.errors import ConfigError
    from runtime.parity import ParityFailure, Tolerances, check_parent, compare, labelled_batches, runner_tolerances

    if samples == 0 and data is None:
        raise ConfigError("--samples 0 without --data compares nothing; give --data or a positive --samples")
    limits = {"max_abs": atol, "max_rel": rtol, "max_rel_rms": max_rel_rms, "min_cosine": min_cosine,
              "min_mean_cosine": min_mean_cosine, "min_top1": min_top1, "min_top5": min_top5,
              "max_accuracy_drop": max_accuracy_drop}
    Tolerances(**{k: v for k, v in limits.items() if v is not None})  # ConfigError naming a bad option, up front
    if json_out:
        check_writable(json_out, force)
    if bisect:
        _check_bisect_args(artifact, reference)
    if not no_lineage and reference.suffix.lower() in (".pt", ".pth"):
        from runtime.lineage import check_lineage

        check_lineage(artifact, reference)  # LineageError naming the broken link
    runner = open_cli_runner(artifact, provider, device, threads,
                             torch_options(precision, channels_last, cuda_graphs), segments=segments, frames=frames)
    ref = open_cli_runner(reference, None, device, threads, segments=segments, frames=frames)
    # each limit given here is "from" its flag: `max_rel` -> "--rtol"
    tol = runner_tolerances(runner, ref).override({k: command_words(f"`{k}`") for k in limits}, **limits)
    labelled = None
    if data is not None:
        labelled = labelled_batches(str(data), runner.preprocessing[0], [s.name for s in runner.input_specs],
                                    classes=runner.classes, split=split, samples=samples, batch=batch, seed=seed,
                                    fmt=data_format, videos=videos and str(videos),
                                    annotations=annotations and str(annotations))
    with progress_callback() as report:
        result = compare(runner, ref, samples=samples, batch=batch, seed=seed, data=labelled, tolerances=tol,
                         progress=report)
    if runner.precision == "fp16" and artifact.suffix.lower() == ".onnx":
        from export.verify import compare_with_rebuild

        with console.status("FP16 graph vs its parent converted again"):
            result.add_rebuild(compare_with_rebuild(artifact, samples=min(samples, 8) or 8, batch=batch, seed=seed,
                                                    threads=threads))
        with console.status("its parent graph vs the reference"):
            check_parent(result, ref, samples=min(samples, 8) or 8, batch=batch, seed=seed, threads=threads)
    print_table(f"Parity of {artifact.name} ({runner.precision}, {runner.provider}) with {reference.name}",
                ["metric", *result.metrics, "limit", "judged on", "limit from"], metric_rows(result))
    if result.rebuild is not None:
        console.print(rebuild_line(result), highlight=False, markup=False)
    if result.parent is not None:
        console.print(parent_line(result), highlight=False, markup=False)
    if result.attention:
        from runtime.attention_parity import attention_rows

        print_table("Attention outputs vs the reference's PyTorch hooks (same limits, top-k not applicable)",
                    ["input set, output", "max abs error", "max relative error", "min cosine", "verdict"],
                    attention_rows(result.attention, result.violations))
    bisected = None
    if bisect:  # on the first batch parity compared: the first labelled clips, else the first random ones
        first = None if data is None else next(iter(labelled_batches(
            str(data), runner.preprocessing[0], [s.name for s in runner.input_specs], classes=runner.classes,
            split=split, samples=samples, batch=batch, seed=seed, fmt=data_format, videos=videos and str(videos),
            annotations=annotations and str(annotations))))[0]
        bisected = _run_bisect(artifact, runner, ref, tol, first, min(batch, samples or batch), seed, provider, threads)
    if json_out:
        write_json(json_out, {**result.to_dict(), **({"bisect": bisected.to_dict()} if bisected else {})})
        console.print(f"wrote {json_out}", highlight=False, markup=False)
    if not result:
        where = f"; {bisected.summary()}" if bisected else ""
        raise ParityFailure(f"{artifact}: parity failed: {'; '.join(result.failures)}{where}")
    console.print(f"{artifact}: parity holds within the {runner.precision} tolerances", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("parity")(parity)

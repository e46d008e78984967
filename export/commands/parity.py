"""`aarm-export parity`: does an artifact compute what its PyTorch checkpoint computes?"""

from pathlib import Path
from typing import Annotated, Any

import typer

from aarm.fileio import check_writable, write_json
from export.commands.bench import (
    ChannelsLastOpt,
    CudaGraphsOpt,
    DeviceOpt,
    PrecisionOpt,
    ProviderOpt,
    ThreadsOpt,
    open_cli_runner,
    progress_bar,
    torch_options,
)
from export.console import console, print_table

_METRICS = [  # (metric key, label, tolerance field, format)
    ("samples", "clips", None, "{:d}"), ("max_abs", "max abs error", "max_abs", "{:.3g}"),
    ("max_rel", "max relative error", "max_rel", "{:.3g}"), ("min_cosine", "min cosine", "min_cosine", "{:.6f}"),
    ("mean_cosine", "mean cosine", "min_mean_cosine", "{:.6f}"),
    ("top1", "top-1 agreement", "min_top1", "{:.1%}"), ("top5", "top-5 agreement", "min_top5", "{:.1%}"),
    ("accuracy", "accuracy", None, "{:.1%}"), ("reference_accuracy", "reference accuracy", None, "{:.1%}"),
    ("accuracy_drop", "accuracy drop", "max_accuracy_drop", "{:.1%}"),
]


def metric_rows(result: Any) -> list[tuple[str, ...]]:
    """One row per metric, one column per input set, and the limit applied."""
    rows = []
    for key, label, tol, fmt in _METRICS:
        values = [m.get(key) for m in result.metrics.values()]
        if all(v is None for v in values):
            continue
        limit = getattr(result.tolerances, tol) if tol else None
        bad = {f.split(": ", 1)[0] for f in result.failures if f.split(": ", 1)[1].startswith(key + " ")}
        cells = []
        for name, v in zip(result.metrics, values, strict=True):
            text = "-" if v is None else fmt.format(v)
            cells.append(f"[bold red]{text}[/]" if name in bad else text)
        shown_limit = "-" if limit is None else (">= " if tol.startswith("min") else "<= ") + fmt.format(limit)
        rows.append((label, *cells, shown_limit))
    return rows


def parity(
    artifact: Annotated[Path, typer.Argument(help="Artifact to check (.onnx, .engine, .pt).")],
    reference: Annotated[Path, typer.Option(help="PyTorch checkpoint it was exported from.")],
    data: Annotated[Path | None, typer.Option(help="Dataset root: also compare on its labelled test clips.")] = None,
    split: Annotated[int, typer.Option(help="Split of --data (1..3).")] = 1,
    data_format: Annotated[
        str, typer.Option("--format", help="Layout of --data: auto, ucf101, hmdb51, folder.")
    ] = "auto",
    samples: Annotated[int, typer.Option(help="Random clips, and labelled clips with --data (0: all).")] = 32,
    batch: Annotated[int, typer.Option(help="Clips per inference call.")] = 8,
    seed: Annotated[int, typer.Option(help="Seed of the random inputs and of the clip choice.")] = 0,
    atol: Annotated[float | None, typer.Option(help="Max absolute score error [default by precision].")] = None,
    rtol: Annotated[float | None, typer.Option(help="Max error relative to the largest reference score.")] = None,
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
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the metrics as JSON.")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite the --json file.")] = False,
) -> None:
    """Compare an artifact's scores with its checkpoint's; exit 1 naming every tolerance exceeded.

    Random inputs, and labelled test clips with --data. Default tolerances follow the artifact's precision
    (fp32: max abs 1e-4, top-1 agreement 100%; fp16 and int8 looser).
    """
    from runtime.parity import ParityFailure, compare, default_tolerances, labelled_batches

    if json_out:
        check_writable(json_out, force)
    runner = open_cli_runner(artifact, provider, device, threads,
                             torch_options(precision, channels_last, cuda_graphs))
    ref = open_cli_runner(reference, None, device, threads)
    tol = default_tolerances(runner.precision).override(
        max_abs=atol, max_rel=rtol, min_cosine=min_cosine, min_mean_cosine=min_mean_cosine, min_top1=min_top1,
        min_top5=min_top5, max_accuracy_drop=max_accuracy_drop,
    )
    labelled = None
    if data is not None:
        labelled = labelled_batches(str(data), runner.preprocessing[0], [s.name for s in runner.input_specs],
                                    classes=runner.classes, split=split, samples=samples, batch=batch, seed=seed,
                                    fmt=data_format)
    with progress_bar() as bar:
        task = bar.add_task("comparing", total=None)
        result = compare(runner, ref, samples=samples, batch=batch, seed=seed, data=labelled, tolerances=tol,
                         progress=lambda n: bar.advance(task, n))
    print_table(f"Parity of {artifact.name} ({runner.precision}, {runner.provider}) with {reference.name}",
                ["metric", *result.metrics, "limit"], metric_rows(result))
    if json_out:
        write_json(json_out, result.to_dict())
        console.print(f"wrote {json_out}", highlight=False, markup=False)
    if not result:
        raise ParityFailure(f"{artifact}: parity failed: {'; '.join(result.failures)}")
    console.print(f"{artifact}: parity holds within the {runner.precision} tolerances", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("parity")(parity)

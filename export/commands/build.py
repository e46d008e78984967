"""`aarm-export build`: a strongly typed TensorRT engine from an ONNX graph (needs TensorRT and a GPU)."""

from pathlib import Path
from typing import Annotated

import typer

from export.console import console, print_table


def build(
    model: Annotated[
        Path, typer.Argument(help="ONNX graph with its sidecar (model.onnx + model.onnx.json).")
    ],
    batch: Annotated[
        str | None,
        typer.Option(
            help="Batch range MIN:OPT:MAX of the optimization profile (default 1:8:32 for a dynamic batch)."
        ),
    ] = None,
    segments: Annotated[
        str | None,
        typer.Option(help="2D (TSN) graphs with a dynamic K: segments range MIN:OPT:MAX of the profile, e.g. "
                     "1:8:25, inside the range the sidecar records (default: that range)."),
    ] = None,
    frames: Annotated[
        str | None,
        typer.Option(help="3D graphs with a dynamic T: frames range MIN:OPT:MAX of the profile (default: the "
                     "recorded range)."),
    ] = None,
    workspace: Annotated[str, typer.Option(help="Workspace memory pool limit, e.g. 512M, 4G.")] = "4G",
    timing_cache: Annotated[
        Path | None,
        typer.Option(
            help="Timing cache file: loaded if present, updated after the build (reuse it across builds)."
        ),
    ] = None,
    hardware_compat: Annotated[
        str,
        typer.Option(
            help="none (this GPU model), ampere+ (any GPU >= sm_80) or same-cc (same compute capability)."
        ),
    ] = "none",
    version_compat: Annotated[
        bool,
        typer.Option(
            "--version-compat", help="Build a version-compatible engine (later TensorRT of the same major)."
        ),
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o", "--output", help="Engine path (default: model.<precision>.engine beside the graph)."
        ),
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="GPU to build on (the engine is tied to it): cuda or cuda:<i> (default: cuda:0).")
    ] = None,
    skip_lint: Annotated[
        bool, typer.Option("--skip-lint", help="Build even if `lint` finds errors.")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Show Polygraphy's and TensorRT's build log.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing engine.")] = False,
) -> None:
    """Build model.<precision>.engine through Polygraphy; the precision comes from the graph itself."""
    from export.tensorrt_build import BuildOptions, build_engine, build_plan, parse_batch, parse_size
    from runtime.artifact import read_sidecar
    from runtime.temporal import parse_range

    options = BuildOptions(
        batch=parse_batch(batch) if batch else None,
        segments=parse_range(segments, "--segments") if segments else None,
        frames=parse_range(frames, "--frames") if frames else None,
        workspace=parse_size(workspace),
        timing_cache=timing_cache,
        hardware_compat=hardware_compat,
        version_compat=version_compat,
        output=output,
        force=force,
        device=device,
    )
    plan = build_plan(model, read_sidecar(model, verify=True), options)
    rows = [
        (name, "x".join(map(str, lo)), "x".join(map(str, opt)), "x".join(map(str, hi)))
        for name, (lo, opt, hi) in plan.profiles.items()
    ]
    print_table(
        f"{plan.engine_path.name}: {plan.precision}, strongly typed", ["input", "min", "opt", "max"], rows
    )
    for note in plan.notes:
        console.print(f"note: {note}", highlight=False)
    with console.status(f"building {plan.engine_path.name} with TensorRT (this takes minutes)"):
        path, sidecar = build_engine(model, options, lint=not skip_lint, verbose=verbose)
    info = sidecar.extra["tensorrt"]
    console.print(
        f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB) with TensorRT {info['version']} on "
        f"{info['gpu']} (sm {info['compute_capability']}) in {info.get('build_seconds', '?')} s",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.command("build")(build)

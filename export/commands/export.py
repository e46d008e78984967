"""`aarm-export export | optimize | convert`: checkpoint -> ONNX -> optimised ONNX -> FP16 ONNX.

Each step writes its artifact atomically with a sidecar, then runs the new graph on onnxruntime (CPU)
next to its reference (the PyTorch model, or the parent graph) and prints the parity.
"""

from pathlib import Path
from typing import Annotated, Any

import typer

from aarm.errors import ConfigError
from aarm.fileio import check_writable, write_json
from export.console import console, print_table
from export.options import at_least


def _check_outputs(output: Path, json_out: Path | None, verify_samples: int, force: bool, *,
                   json_needs_check: bool, source: Path | None = None) -> None:
    """Refuse bad output options before any work: an output that is not .onnx or is the input itself, a --json
    that would hold nothing, an existing --json file without --force."""
    if output.suffix.lower() != ".onnx":
        raise ConfigError(f"-o {output}: an ONNX graph's file name ends in .onnx")
    if source is not None and output.resolve() == source.resolve():
        raise ConfigError(f"-o {output} is the input graph; write the new graph beside it")
    if json_out is not None and json_out.resolve() == output.resolve():
        raise ConfigError(f"--json {json_out} is the output graph; give the JSON its own file")
    if json_out and json_needs_check and verify_samples == 0:
        raise ConfigError("--json writes the parity check, which --verify-samples 0 skips")
    if json_out:
        check_writable(json_out, force)


def _parity_table(title: str, result: dict[str, Any]) -> None:
    from export.verify import parity_rows

    print_table(title, ["metric", "value"], parity_rows(result))


def _attention_parity(net: Any, output: Path, sidecar: Any, samples: int) -> dict[str, Any]:
    """Each attention output of the new graph against the model's PyTorch hooks on `samples` random clips
    (`runtime.parity.compare`, FP32 limits), printed as a table; returns the rows' metrics and failures."""
    from runtime.attention_parity import attention_rows
    from runtime.backends import open_runner
    from runtime.backends.torch_backend import TorchRunner
    from runtime.parity import compare

    reference = TorchRunner(net, preprocessing=sidecar.preprocessings()[0], classes=sidecar.classes)
    with console.status("attention outputs: onnxruntime (CPU) vs PyTorch hooks"):
        result = compare(open_runner(output, providers=["cpu"]), reference, samples=samples, batch=4)
    failures = [f for f in result.violations if f.input_set in result.attention]
    print_table(f"{output.name}: attention outputs vs PyTorch hooks",
                ["input set, output", "max abs error", "max relative error", "min cosine", "verdict"],
                attention_rows(result.attention, failures))
    return {"metrics": result.attention, "failures": [str(f) for f in failures]}


def export_command(
    output: Annotated[Path, typer.Option("-o", "--output", help="ONNX file to write.")],
    checkpoint: Annotated[Path | None, typer.Argument(help="Checkpoint to export (from aarm training).")] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset (>= 17).")] = 17,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing output and --json file.")] = False,
    model: Annotated[str | None, typer.Option("--model", help="Export a freshly initialised registered model.")] = None,
    attention: Annotated[str, typer.Option(help="With --model: none | se | cbam | aarm.")] = "aarm",
    num_classes: Annotated[int | None, typer.Option(help="With --model: number of classes.",
                                                    callback=at_least(1))] = None,
    input_size: Annotated[int | None, typer.Option(help="With --model: crop size H = W.", callback=at_least(1))] = None,
    segments: Annotated[int | None, typer.Option(help="With --model (2D): TSN segments K.",
                                                 callback=at_least(1))] = None,
    frames: Annotated[int | None, typer.Option(help="With --model (3D): clip length T.", callback=at_least(1))] = None,
    in_channels: Annotated[int, typer.Option(help="With --model: 3 (RGB) or 20 (2D flow stack).",
                                             callback=at_least(1))] = 3,
    verify_samples: Annotated[
        int, typer.Option(help="Random inputs for the onnxruntime-vs-PyTorch check (0: skip).", callback=at_least(0))
    ] = 8,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the parity result as JSON.")] = None,
    temporal_range: Annotated[str | None, typer.Option(
        "--temporal-range", help="Sizes of K (2D: TSN segments) or T (3D: clip frames) the graph takes, MIN:OPT:MAX; "
        "one number keeps the axis fixed. Default 1:K:max(K,25) (2D), 1:T:4T (3D, narrowed to what torch.export "
        "proves); C3D's T is always fixed.")] = None,
    attention_outputs: Annotated[bool, typer.Option(
        "--attention-outputs", help="Also output each stage's STAM maps and CAM weights (stam.<stage>, cam.<stage>) "
        "after the scores, for predict --explain without PyTorch. Default: scores only.")] = False,
) -> None:
    """Export a checkpoint (or, with --model, a freshly initialised model) to ONNX and check it against PyTorch."""
    from export.onnx_export import export_loaded_checkpoint, export_onnx
    from export.verify import verify_against_torch
    from runtime.temporal import parse_range

    _check_outputs(output, json_out, verify_samples, force, json_needs_check=True)
    t_range = parse_range(temporal_range, "--temporal-range") if temporal_range is not None else None
    model_flags = {"--num-classes": num_classes, "--input-size": input_size, "--segments": segments,
                   "--frames": frames}
    if (checkpoint is None) == (model is None):
        raise ConfigError("give either a CHECKPOINT or --model NAME (with --num-classes), not both")
    if checkpoint is not None:
        given = [k for k, v in model_flags.items() if v is not None]
        if given:
            raise ConfigError(f"{', '.join(given)} only apply with --model; a checkpoint carries its own")
        with console.status(f"exporting {checkpoint} (torch.onnx, dynamo)"):
            sidecar, net = export_loaded_checkpoint(checkpoint, output, opset=opset, force=force,
                                                    temporal_range=t_range, attention_outputs=attention_outputs)
    else:
        import aarm
        from aarm.data.preprocessing import Preprocessing
        from aarm.models.registry import get_spec

        if num_classes is None:
            raise ConfigError("--model needs --num-classes")
        spec = get_spec(model)
        options: dict[str, Any] = {}
        if segments is not None:
            options["segments"] = segments
        if spec.dims == 3 and segments is not None:
            raise ConfigError(f"{model} is a 3D clip model; --segments applies to 2D models")
        if spec.dims == 2 and frames is not None:
            raise ConfigError(f"{model} is a 2D (TSN) model; --frames applies to 3D models")
        net = aarm.create_model(model, num_classes=num_classes, attention=attention, in_channels=in_channels, **options)
        prep = Preprocessing.for_model(net.aarm_config, size=input_size, frames=frames)
        classes = [f"class_{i}" for i in range(num_classes)]
        with console.status(f"exporting {model} + {attention} (torch.onnx, dynamo)"):
            sidecar = export_onnx(net, output, classes=classes, preprocessing=prep, trained=False, opset=opset,
                                  force=force, temporal_range=t_range, attention_outputs=attention_outputs)
    shapes = ", ".join(f"{t.name} {tuple(t.shape)}" for t in sidecar.inputs)
    console.print(f"wrote {output} (opset {sidecar.opset}, {shapes} -> scores {tuple(sidecar.outputs[0].shape)})",
                  highlight=False)
    if attention_outputs:
        console.print("attention outputs: " + ", ".join(f"{t.name} {tuple(t.shape)}" for t in sidecar.outputs[1:]),
                      highlight=False)
    for t in sidecar.inputs:
        for axis, r in (t.ranges or {}).items():
            flag = "--segments" if axis == "K" else "--frames"
            console.print(f"{t.name}: dynamic {axis} {r['min']}..{r['max']} (profile opt {r['opt']}); choose it with "
                          f"{flag} in predict, bench, parity, build", highlight=False)
    for reason in sidecar.extra.get("fixed_axes", {}).values():
        console.print(reason, highlight=False)
    if verify_samples > 0:
        with console.status("onnxruntime (CPU) vs PyTorch"):
            result = verify_against_torch(net, output, samples=verify_samples)
        _parity_table(f"{output.name}: onnxruntime vs PyTorch", result)
        if attention_outputs:
            result["attention"] = _attention_parity(net, output, sidecar, verify_samples)
        if json_out:
            write_json(json_out, {"artifact": str(output), "reference": "pytorch", **result})


def optimize_command(
    model: Annotated[Path, typer.Argument(help="Exported fp32 ONNX graph.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Optimised ONNX file to write.")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing output and --json file.")] = False,
    kernels: Annotated[bool, typer.Option(
        help="Fuse AARM blocks into the compiled CPU custom ops (onnxruntime CPU only; runners load this "
             "installation's own recorded build of them). Default: standard ONNX ops, portable.")] = False,
    verify_samples: Annotated[int, typer.Option(help="Random inputs for the parity check (0: skip).",
                                                callback=at_least(0))] = 8,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write passes and parity as JSON.")] = None,
) -> None:
    """Run the graph passes (constant folding, no-op removal, AARM rewrites) and check against the input graph."""
    from export.passes import optimize_onnx
    from export.verify import compare_graphs

    _check_outputs(output, json_out, verify_samples, force, json_needs_check=False, source=model)
    with console.status(f"optimising {model}"):
        sidecar, rows = optimize_onnx(model, output, kernels=kernels, force=force)
    if kernels:
        ops = sidecar.extra["custom_ops"]
        console.print(f"custom ops {ops['domain']} ({', '.join(ops['ops'])}): kernels built here at {ops['library']}; "
                      "runners load this installation's recorded build, never a path from the sidecar",
                      highlight=False)
    print_table(f"{model.name} -> {output.name}", ["pass", "nodes"], [(r["pass"], r["nodes"]) for r in rows])
    report: dict[str, Any] = {"artifact": str(output), "parent": str(model), "passes": rows}
    if verify_samples > 0:
        with console.status("onnxruntime (CPU): optimised vs exported"):
            result = compare_graphs(model, output, samples=verify_samples)
        _parity_table(f"{output.name} vs {model.name}", result)
        report.update(result)
    if json_out:
        write_json(json_out, report)


def convert_command(
    model: Annotated[Path, typer.Argument(help="fp32 ONNX graph (exported or optimised).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="ONNX file to write.")],
    precision: Annotated[str, typer.Option(help="Target precision: fp16.")] = "fp16",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing output and --json file.")] = False,
    verify_samples: Annotated[int, typer.Option(help="Random inputs for the parity check (0: skip).",
                                                callback=at_least(0))] = 32,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the parity result as JSON.")] = None,
) -> None:
    """Convert an fp32 graph to FP16 (float32 inputs/outputs; reductions, gates, softmax kept fp32)."""
    from export.fp16 import convert_onnx
    from export.verify import compare_graphs

    _check_outputs(output, json_out, verify_samples, force, json_needs_check=True, source=model)
    with console.status(f"converting {model} to {precision}"):
        convert_onnx(model, output, precision=precision, force=force)
    console.print(f"wrote {output} ({precision}, float32 inputs/outputs)", highlight=False)
    if verify_samples > 0:
        with console.status(f"onnxruntime (CPU): {precision} vs fp32"):
            result = compare_graphs(model, output, samples=verify_samples)
        _parity_table(f"{output.name} vs {model.name}", result)
        if json_out:
            write_json(json_out, {"artifact": str(output), "reference": str(model), **result})


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
    app.command("optimize")(optimize_command)
    app.command("convert")(convert_command)

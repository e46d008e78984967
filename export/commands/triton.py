"""`aarm-export triton`: a Triton Inference Server model repository entry for an ONNX graph or engine."""

from pathlib import Path
from typing import Annotated

import typer

from aarm.errors import ConfigError
from export.console import console, print_table


def _batches(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(
            f"--preferred-batch takes comma-separated integers, e.g. 4,8; got {text!r}"
        ) from None


def triton(
    artifact: Annotated[
        Path, typer.Argument(help="model.onnx or model.<precision>.engine, with its sidecar.")
    ],
    repo: Annotated[Path, typer.Option("--repo", help="Triton model repository folder.")],
    name: Annotated[
        str | None, typer.Option(help="Model name (default: <model>_<attention>_<precision>).")
    ] = None,
    max_batch: Annotated[
        int | None,
        typer.Option(help="max_batch_size (default 32 for ONNX, the profile's max batch for an engine)."),
    ] = None,
    instances: Annotated[int, typer.Option(help="Model instances per device.")] = 1,
    kind: Annotated[str, typer.Option(help="Instance kind: gpu or cpu.")] = "gpu",
    preferred_batch: Annotated[
        str | None, typer.Option(help="Dynamic batcher's preferred sizes, e.g. 4,8.")
    ] = None,
    max_queue_delay_us: Annotated[int, typer.Option(help="Dynamic batcher's max queue delay (µs).")] = 100,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing model folder.")] = False,
) -> None:
    """Write REPO/NAME/config.pbtxt, labels.txt and version 1 of the model (onnxruntime/tensorrt backend)."""
    from export.triton import TritonOptions, write_triton_model

    if artifact.suffix.lower() not in (".onnx", ".engine"):
        raise ConfigError(f"{artifact}: Triton serves an ONNX graph (.onnx) or a TensorRT engine (.engine); "
                          "export a checkpoint first (aarm-export export)")
    options = TritonOptions(
        name=name,
        max_batch=max_batch,
        instances=instances,
        kind=kind,
        preferred_batch=_batches(preferred_batch),
        max_queue_delay_us=max_queue_delay_us,
        force=force,
    )
    target = write_triton_model(artifact, repo, options)
    from export.triton import parse_config

    config = parse_config((target / "config.pbtxt").read_text())
    print_table(
        f"Triton model {config.name} ({config.backend}, max batch {config.max_batch_size})",
        ["tensor", "direction", "dims", "labels"],
        [(t.name, "input", list(t.dims), "") for t in config.input]
        + [(t.name, "output", list(t.dims), t.label_filename) for t in config.output],
    )
    console.print(f"wrote {target}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.command("triton")(triton)

"""Triton Inference Server model repository from an ONNX graph or a TensorRT engine.

Layout written (atomically: built in a temporary folder inside DIR, then renamed into place):

    DIR/NAME/config.pbtxt        ModelConfig in protobuf text format
    DIR/NAME/labels.txt          one class name per line, referenced by the scores output's label_filename
    DIR/NAME/1/model.onnx        (onnxruntime backend)   or   1/model.plan (tensorrt backend)
    DIR/NAME/1/model.onnx.json   the artifact's sidecar (same bytes, so `read_sidecar` still verifies it)

The config is built as a `tritonclient.grpc.model_config_pb2.ModelConfig` message (Triton's own
schema) and checked by printing it and parsing the text back with `google.protobuf.text_format`.
Dims leave out the batch axis when the artifact has a dynamic batch (max_batch_size > 0, dynamic
batching); an artifact with a fixed batch gets max_batch_size 0 and its full shape. Note that Triton's
tensorrt backend only loads engines built with its own TensorRT version.
"""

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aarm.errors import ConfigError
from runtime.artifact import Sidecar, read_sidecar, sidecar_path
from runtime.errors import ArtifactError

DEFAULT_MAX_BATCH = 32
LABELS_FILE = "labels.txt"
BACKENDS = {"onnx": ("onnxruntime", "model.onnx"), "engine": ("tensorrt", "model.plan")}
_DTYPES = {
    "float32": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16", "float64": "TYPE_FP64",
    "int8": "TYPE_INT8", "uint8": "TYPE_UINT8", "int16": "TYPE_INT16", "int32": "TYPE_INT32",
    "int64": "TYPE_INT64", "bool": "TYPE_BOOL",
}
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class TritonOptions:
    """name: model name (default from the sidecar); max_batch: None = 32 for ONNX, the profile max for an
    engine; kind: gpu | cpu instance groups; preferred_batch: dynamic batcher's preferred sizes."""

    name: str | None = None
    max_batch: int | None = None
    instances: int = 1
    kind: str = "gpu"
    preferred_batch: tuple[int, ...] = ()
    max_queue_delay_us: int = 100
    force: bool = False


def _model_config_pb2() -> Any:
    try:
        from tritonclient.grpc import model_config_pb2
    except (ImportError, RuntimeError) as exc:  # tritonclient raises RuntimeError when grpc is missing
        raise ConfigError(f"Triton's model config schema is not importable ({exc}); "
                          "pip install 'tritonclient[grpc]'") from None
    return model_config_pb2


def default_model_name(sidecar: Sidecar) -> str:
    """e.g. resnet50_aarm_fp16 (ONNX) or resnet50_aarm_fp16_trt (engine)."""
    model = sidecar.model or {}
    parts = [str(model.get("name", "model")), str(model.get("attention", "")), sidecar.precision]
    if sidecar.kind == "engine":
        parts.append("trt")
    return "_".join(p for p in parts if p)


def _engine_batch_range(sidecar: Sidecar, input_name: str) -> tuple[int, int]:
    profile = (sidecar.extra.get("tensorrt") or {}).get("profile") or {}
    if input_name not in profile:
        raise ArtifactError(f"engine sidecar has no optimization profile for input {input_name!r}")
    return int(profile[input_name]["min"][0]), int(profile[input_name]["max"][0])


def triton_config(sidecar: Sidecar, options: TritonOptions) -> Any:
    """The `ModelConfig` message for an artifact described by `sidecar` (no I/O)."""
    mc = _model_config_pb2()
    if sidecar.kind not in BACKENDS:
        raise ArtifactError(f"cannot serve a {sidecar.kind!r} artifact with Triton")
    backend, _ = BACKENDS[sidecar.kind]
    name = options.name or default_model_name(sidecar)
    if not _NAME_RE.fullmatch(name):
        raise ConfigError(f"model name {name!r} must be letters, digits, '_', '-' or '.'")
    if options.kind not in ("gpu", "cpu"):
        raise ConfigError(f"--kind must be gpu or cpu, got {options.kind!r}")
    if sidecar.kind == "engine" and options.kind != "gpu":
        raise ConfigError("a TensorRT engine runs on the GPU only; use --kind gpu")
    if options.instances < 1:
        raise ConfigError(f"--instances must be >= 1, got {options.instances}")
    if options.max_queue_delay_us < 0:
        raise ConfigError(f"--max-queue-delay-us must be >= 0, got {options.max_queue_delay_us}")
    if not sidecar.inputs or not sidecar.outputs:
        raise ArtifactError("sidecar lists no inputs or outputs")

    batch_dims = [t.shape[0] if t.shape else None for t in sidecar.inputs]
    dynamic_batch = all(isinstance(b, str) for b in batch_dims)
    if not dynamic_batch and any(isinstance(b, str) for b in batch_dims):
        raise ArtifactError("inputs disagree on a dynamic batch axis")
    if dynamic_batch:
        max_batch = DEFAULT_MAX_BATCH if options.max_batch is None else options.max_batch
        if sidecar.kind == "engine":
            ranges = [_engine_batch_range(sidecar, spec.name) for spec in sidecar.inputs]
            lo, hi = max(r[0] for r in ranges), min(r[1] for r in ranges)
            if lo > 1:
                raise ArtifactError(f"the engine's profile starts at batch {lo}; Triton sends batches "
                                    "from 1, rebuild it with --batch 1:OPT:MAX")
            if options.max_batch is None:
                max_batch = hi
            elif options.max_batch > hi:
                raise ConfigError(f"--max-batch {options.max_batch} exceeds the engine profile's "
                                  f"max batch {hi}")
        if max_batch < 1:
            raise ConfigError(f"--max-batch must be >= 1, got {max_batch}")
    else:
        if options.max_batch is not None or options.preferred_batch:
            raise ConfigError(f"the artifact has a fixed batch of {batch_dims[0]}; re-export it with a "
                              "dynamic batch axis to use --max-batch / --preferred-batch")
        max_batch = 0
    for b in options.preferred_batch:
        if not 1 <= b <= max_batch:
            raise ConfigError(f"preferred batch {b} must be in 1..{max_batch}")

    def dims(shape: list[int | str]) -> list[int]:
        body = shape[1:] if dynamic_batch else shape
        return [d if isinstance(d, int) else -1 for d in body]

    def dtype(name: str) -> int:
        if name not in _DTYPES:
            raise ArtifactError(f"no Triton data type for {name!r}")
        return mc.DataType.Value(_DTYPES[name])

    config = mc.ModelConfig(name=name, backend=backend, max_batch_size=max_batch)
    for spec in sidecar.inputs:
        config.input.add(name=spec.name, data_type=dtype(spec.dtype), dims=dims(spec.shape))
    for i, spec in enumerate(sidecar.outputs):
        out = config.output.add(name=spec.name, data_type=dtype(spec.dtype), dims=dims(spec.shape))
        if sidecar.classes and (spec.layout == "NC" or (i == 0 and len(sidecar.outputs) == 1)):
            out.label_filename = LABELS_FILE
    kind = mc.ModelInstanceGroup.KIND_GPU if options.kind == "gpu" else mc.ModelInstanceGroup.KIND_CPU
    config.instance_group.add(kind=kind, count=options.instances)
    if max_batch > 0:
        config.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_us
        config.dynamic_batching.preferred_batch_size.extend(options.preferred_batch)
    return config


def config_text(config: Any) -> str:
    """config.pbtxt text of a ModelConfig."""
    from google.protobuf import text_format

    return text_format.MessageToString(config)


def parse_config(text: str) -> Any:
    """Parse config.pbtxt text with Triton's schema, check what Triton would refuse; returns the message."""
    from google.protobuf import text_format

    mc = _model_config_pb2()
    try:
        config = text_format.Parse(text, mc.ModelConfig())
    except text_format.ParseError as exc:
        raise ArtifactError(f"config.pbtxt does not parse as Triton's ModelConfig: {exc}") from None
    problems = []
    if not config.name or not (config.backend or config.platform):
        problems.append("name and backend are required")
    if config.max_batch_size < 0:
        problems.append("max_batch_size must be >= 0")
    for tensor in [*config.input, *config.output]:
        if not tensor.name or tensor.data_type == mc.TYPE_INVALID:
            problems.append(f"tensor {tensor.name!r} needs a name and a data type")
        if not tensor.dims or any(d == 0 or d < -1 for d in tensor.dims):
            problems.append(f"tensor {tensor.name!r} has invalid dims {list(tensor.dims)}")
    if not config.input or not config.output:
        problems.append("inputs and outputs are required")
    if config.HasField("dynamic_batching"):
        if config.max_batch_size == 0:
            problems.append("dynamic batching needs max_batch_size > 0")
        if any(not 1 <= b <= config.max_batch_size for b in config.dynamic_batching.preferred_batch_size):
            problems.append("preferred batch sizes must be within 1..max_batch_size")
    if any(g.count < 1 for g in config.instance_group):
        problems.append("instance counts must be >= 1")
    if problems:
        raise ArtifactError(f"invalid Triton config: {'; '.join(problems)}")
    return config


def _external_data_files(onnx_path: Path) -> list[str]:
    """Relative locations of an ONNX graph's external weight files (none for a self-contained graph).

    The locations come from the (untrusted) graph: each must name a file inside the graph's folder, with no
    absolute path, `..` or link leading out of it; anything else is an ArtifactError.
    """
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    from runtime.onnx_file import load_onnx

    model = load_onnx(onnx_path, load_external_data=False)
    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        tensors.extend(a.t for a in node.attribute if a.HasField("t"))
    locations = sorted({ExternalDataInfo(t).location for t in tensors if uses_external_data(t)})
    folder = onnx_path.parent.resolve()
    for location in locations:
        rel = Path(location)
        inside = bool(location) and not rel.is_absolute() and ".." not in rel.parts
        if not inside or not (folder / rel).resolve().is_relative_to(folder):
            raise ArtifactError(f"{onnx_path}: external data location {location!r} is outside the model's folder; "
                                "refusing to copy it")
        if not (folder / rel).is_file():
            raise ArtifactError(f"{onnx_path}: external data file {location!r} is missing")
    return locations


def write_triton_model(artifact: str | Path, repo: str | Path, options: TritonOptions) -> Path:
    """Write DIR/NAME (config, labels, version 1 with the artifact and its sidecar); returns DIR/NAME.

    Refuses an existing DIR/NAME unless `options.force`; the new folder replaces the old one in one rename.
    """
    artifact, repo = Path(artifact), Path(repo)
    if repo.exists() and not repo.is_dir():
        raise ConfigError(f"--repo {repo} is a file; a Triton model repository is a folder")
    sidecar = read_sidecar(artifact, verify=True)
    if sidecar.kind == "engine":
        from runtime.tensorrt_engine import EngineTarget

        EngineTarget.from_sidecar(sidecar)  # refuse an engine whose sidecar lacks TensorRT/GPU information
    config = triton_config(sidecar, options)
    text = config_text(config)
    if parse_config(text) != config:
        raise ArtifactError("config.pbtxt does not round-trip through Triton's ModelConfig schema")
    if any("\n" in c or "\r" in c for c in sidecar.classes):
        raise ArtifactError("class names must not contain line breaks (labels.txt has one per line)")
    extra_files = _external_data_files(artifact) if sidecar.kind == "onnx" else []

    target = repo / config.name
    if target.exists() and not options.force:
        raise ArtifactError(f"{target} exists; pass --force to replace it")
    repo.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{config.name}.", suffix=".tmp", dir=repo))
    try:
        version = tmp / "1"
        version.mkdir()
        _, filename = BACKENDS[sidecar.kind]
        shutil.copyfile(artifact, version / filename)
        shutil.copyfile(sidecar_path(artifact), sidecar_path(version / filename))
        for rel in extra_files:
            (version / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(artifact.parent / rel, version / rel)
        (tmp / "config.pbtxt").write_text(text)
        if sidecar.classes:
            (tmp / LABELS_FILE).write_text("\n".join(sidecar.classes) + "\n")
        os.chmod(tmp, 0o755)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{config.name}.", suffix=".old", dir=repo))
            os.replace(target, old / "model")
            os.replace(tmp, target)
            shutil.rmtree(old)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return target

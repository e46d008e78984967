"""Artifact sidecars: `<artifact>.json` beside every ONNX graph or engine this project writes.

A sidecar records the artifact's own sha256, its parent's path and sha256, the model config, class
labels, input/output layout, preprocessing, opset, precision, the stage that made it, and the software
versions and device it was built with. Later steps read it instead of asking for flags again, and
`read_sidecar(..., verify=True)` refuses an artifact whose bytes no longer match its sidecar.
"""

import hashlib
import platform
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from aarm.data.preprocessing import Preprocessing
from aarm.errors import ArtifactError
from aarm.fileio import write_json

SIDECAR_VERSION = 1
PRECISIONS = ("fp32", "fp16", "int8")
KINDS = ("onnx", "engine")


def sidecar_path(artifact: str | Path) -> Path:
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def software_versions() -> dict[str, str | None]:
    """Installed versions of the packages that shape an artifact (None where absent)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("aarm", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "onnx-graphsurgeon", "tensorrt",
                 "polygraphy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def host_device() -> str:
    return f"{platform.machine()} {platform.processor() or platform.system()}".strip()


@dataclass
class TensorSpec:
    """One graph input or output. `shape` uses a string for a dynamic axis ("N" for the batch)."""

    name: str
    shape: list[int | str]
    dtype: str = "float32"
    layout: str | None = None  # "NKCHW", "NCTHW", "NC" (scores)


@dataclass
class Sidecar:
    kind: str  # onnx | engine
    stage: str  # export | optimize | convert | calibrate | build
    precision: str  # fp32 | fp16 | int8
    model: dict[str, Any]  # aarm_config
    classes: list[str]
    preprocessing: dict[str, Any] | list[dict[str, Any]]  # one per input (two-stream: two)
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    trained: bool = True
    opset: int | None = None
    parent: str | None = None
    parent_sha256: str | None = None
    sha256: str = ""
    versions: dict[str, str | None] = field(default_factory=software_versions)
    device: str = field(default_factory=host_device)
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    extra: dict[str, Any] = field(default_factory=dict)
    format_version: int = SIDECAR_VERSION

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ArtifactError(f"sidecar kind must be one of {KINDS}, got {self.kind!r}")
        if self.precision not in PRECISIONS:
            raise ArtifactError(f"sidecar precision must be one of {PRECISIONS}, got {self.precision!r}")
        self.inputs = [t if isinstance(t, TensorSpec) else TensorSpec(**t) for t in self.inputs]
        self.outputs = [t if isinstance(t, TensorSpec) else TensorSpec(**t) for t in self.outputs]

    def preprocessings(self) -> list[Preprocessing]:
        """Preprocessing per input, in input order."""
        items = self.preprocessing if isinstance(self.preprocessing, list) else [self.preprocessing]
        return [Preprocessing.from_dict(p) for p in items]

    def derive(self, **changes: Any) -> "Sidecar":
        """A sidecar for a child artifact: same model, classes and layout; fresh versions, device, time."""
        base = {k: v for k, v in asdict(self).items() if k not in ("versions", "device", "created", "sha256")}
        base.update(changes)
        return Sidecar(**base)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def write_sidecar(artifact: str | Path, sidecar: Sidecar, *, parent: str | Path | None = None) -> Path:
    """Hash the finished artifact (and its parent, if given) into the sidecar and write it atomically."""
    artifact = Path(artifact)
    sidecar.sha256 = file_sha256(artifact)
    if parent is not None:
        sidecar.parent = str(parent)
        sidecar.parent_sha256 = file_sha256(parent)
    return write_json(sidecar_path(artifact), sidecar.to_dict())


def read_sidecar(artifact: str | Path, *, verify: bool = True) -> Sidecar:
    """Read `<artifact>.json`; with verify, refuse when the artifact's sha256 differs from the recorded one."""
    import json

    artifact = Path(artifact)
    path = sidecar_path(artifact)
    if not artifact.is_file():
        raise ArtifactError(f"artifact not found: {artifact}")
    if not path.is_file():
        raise ArtifactError(f"{artifact}: no sidecar {path.name}; artifacts must come from aarm-export")
    try:
        data = json.loads(path.read_text())
        sidecar = Sidecar(**data)
    except (ValueError, TypeError) as exc:
        raise ArtifactError(f"{path}: unreadable sidecar ({exc})") from None
    if data.get("format_version") != SIDECAR_VERSION:
        raise ArtifactError(f"{path}: sidecar format {data.get('format_version')}, this aarm reads {SIDECAR_VERSION}")
    if verify and file_sha256(artifact) != sidecar.sha256:
        raise ArtifactError(f"{artifact}: contents do not match its sidecar's sha256 (modified after export?)")
    return sidecar

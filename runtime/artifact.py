"""Artifact sidecars: `<artifact>.json` beside every ONNX graph or engine this project writes.

A sidecar records the artifact's own sha256, its parent's path and sha256, the model config, class
labels, input/output layout, preprocessing, opset, precision, the stage that made it, and the software
versions and device it was built with. Later steps read it instead of asking for flags again, and
`read_sidecar(..., verify=True)` refuses an artifact whose bytes no longer match its sidecar.
"""

import hashlib
import platform
import re
from dataclasses import MISSING, asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aarm.data.preprocessing import Preprocessing
from aarm.errors import AarmError
from aarm.fileio import write_json
from runtime.errors import ArtifactError
from runtime.graph_precision import PRECISIONS
from runtime.host import software_versions

SIDECAR_VERSION = 1
KINDS = ("onnx", "engine")
STAGES = ("export", "optimize", "convert", "calibrate", "build")
DTYPES = ("float32", "float16", "float64", "int8", "uint8", "int32", "int64", "bool")
LAYOUTS = ("NKCHW", "NCTHW", "NC", "NVTHW", "NVC")  # NVTHW / NVC: STAM maps / CAM weights (attention outputs)
_SHA256 = re.compile(r"[0-9a-f]{64}")


def sidecar_path(artifact: str | Path) -> Path:
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def host_device() -> str:
    return f"{platform.machine()} {platform.processor() or platform.system()}".strip()


RANGE_KEYS = ("min", "opt", "max")


@dataclass
class TensorSpec:
    """One graph input or output. `shape` uses a string for a dynamic axis ("N" for the batch).

    ranges: the valid sizes of named dynamic axes other than the batch, {"K": {"min": 1, "opt": 3, "max": 25}}
    (TSN segments K of an NKCHW input, clip frames T of an NCTHW one); `opt` is the size a TensorRT profile is
    tuned for. None: every non-batch axis is fixed. The size sampling uses by default is the preprocessing's.
    """

    name: str
    shape: list[int | str]
    dtype: str = "float32"
    layout: str | None = None  # "NKCHW", "NCTHW", "NC" (scores), "NVTHW" / "NVC" (STAM / CAM attention outputs)
    ranges: dict[str, dict[str, int]] | None = None

    def resolved(self, sizes: dict[str, int] | None = None) -> list[int | str]:
        """The shape with every ranged axis set to `sizes[axis]` (default: its `opt`); the batch stays named."""
        ranges = self.ranges or {}
        return [(sizes or {}).get(d, ranges[d]["opt"]) if isinstance(d, str) and d in ranges else d
                for d in self.shape]


def temporal_sizes(prep: Preprocessing) -> dict[str, int]:
    """The temporal axis size an input's preprocessing samples: {"K": segments} (NKCHW) or {"T": frames}."""
    return {"K": prep.segments} if prep.layout == "NKCHW" else {"T": prep.frames}


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
        if self.stage not in STAGES:
            raise ArtifactError(f"sidecar stage must be one of {STAGES}, got {self.stage!r}")
        self.inputs = [t if isinstance(t, TensorSpec) else TensorSpec(**t) for t in self.inputs]
        self.outputs = [t if isinstance(t, TensorSpec) else TensorSpec(**t) for t in self.outputs]

    def preprocessings(self) -> list[Preprocessing]:
        """Preprocessing per input, in input order."""
        items = self.preprocessing if isinstance(self.preprocessing, list) else [self.preprocessing]
        return [Preprocessing.from_dict(p) for p in items]

    def input_shapes(self) -> list[list[int | str]]:
        """Each input's shape with its ranged axes (K or T) set to what its preprocessing samples; "N" stays."""
        return [t.resolved(temporal_sizes(p)) for t, p in zip(self.inputs, self.preprocessings(), strict=True)]

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


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_ranges(where: str, at: str, ranges: Any, shape: list[Any]) -> None:
    """`ranges` is null or {axis: {"min", "opt", "max"}} with 1 <= min <= opt <= max, one per named non-batch
    axis of `shape` and none for another."""
    if ranges is None:
        return
    if not isinstance(ranges, dict) or not ranges:
        raise ArtifactError(f"{where}: field '{at}.ranges' must be null or a non-empty object")
    named = [d for d in shape[1:] if isinstance(d, str)]
    for axis, r in ranges.items():
        if axis not in named:
            raise ArtifactError(f"{where}: field '{at}.ranges' names axis {axis!r}, which is not a dynamic "
                                f"non-batch axis of shape {shape!r}")
        if not isinstance(r, dict) or sorted(r) != sorted(RANGE_KEYS) or not all(_is_int(r[k]) for k in RANGE_KEYS):
            raise ArtifactError(f"{where}: field '{at}.ranges.{axis}' must be {{min, opt, max}} integers, got {r!r}")
        if not 1 <= r["min"] <= r["opt"] <= r["max"]:
            raise ArtifactError(f"{where}: field '{at}.ranges.{axis}' needs 1 <= min <= opt <= max, got "
                                f"{r['min']}:{r['opt']}:{r['max']}")
    missing = [d for d in named if d not in ranges]
    if missing:
        raise ArtifactError(f"{where}: field '{at}.ranges' gives no range for axis {', '.join(map(repr, missing))}")


def _check_tensors(where: str, field_name: str, value: Any) -> None:
    """A non-empty list of TensorSpec dicts: name, shape (ints >= 1 or axis names), dtype, layout."""
    if not isinstance(value, list) or not value:
        raise ArtifactError(f"{where}: field '{field_name}' must be a non-empty list of tensors")
    allowed = set(TensorSpec.__dataclass_fields__)
    names = []
    for i, t in enumerate(value):
        at = f"{field_name}[{i}]"
        if not isinstance(t, dict):
            raise ArtifactError(f"{where}: field '{at}' must be an object, got {type(t).__name__}")
        unknown = sorted(set(t) - allowed)
        if unknown:
            raise ArtifactError(f"{where}: field '{at}' has unknown key(s) {', '.join(unknown)}")
        if not isinstance(t.get("name"), str) or not t["name"]:
            raise ArtifactError(f"{where}: field '{at}.name' must be a non-empty string")
        shape = t.get("shape")
        if not isinstance(shape, list) or not all((_is_int(d) and d >= 1) or (isinstance(d, str) and d)
                                                  for d in shape):
            raise ArtifactError(f"{where}: field '{at}.shape' must be a list of ints >= 1 and axis names, "
                                f"got {shape!r}")
        if t.get("dtype", "float32") not in DTYPES:
            raise ArtifactError(f"{where}: field '{at}.dtype' must be one of {', '.join(DTYPES)}, "
                                f"got {t.get('dtype')!r}")
        if t.get("layout") is not None and t["layout"] not in LAYOUTS:
            raise ArtifactError(f"{where}: field '{at}.layout' must be one of {', '.join(LAYOUTS)} or null, "
                                f"got {t['layout']!r}")
        _check_ranges(where, at, t.get("ranges"), shape)
        names.append(t["name"])
    if len(set(names)) != len(names):
        raise ArtifactError(f"{where}: field '{field_name}' names a tensor twice: {names}")


def validate_sidecar(data: Any, where: str) -> None:
    """Refuse a sidecar document that is not exactly what `write_sidecar` writes: one-line ArtifactError naming
    the field (`model.onnx.json: field 'precision' must be one of fp32, fp16, int8, got 'fp64'`). `where`
    names the sidecar file."""
    if not isinstance(data, dict):
        raise ArtifactError(f"{where}: a sidecar must be a JSON object, got {type(data).__name__}")
    fields = Sidecar.__dataclass_fields__
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ArtifactError(f"{where}: unknown field(s) {', '.join(repr(k) for k in unknown)}")
    required = [k for k, f in fields.items() if f.default is MISSING and f.default_factory is MISSING]
    for key in (*required, "sha256", "format_version"):
        if key not in data:
            raise ArtifactError(f"{where}: field '{key}' is missing")
    if not _is_int(data["format_version"]) or data["format_version"] != SIDECAR_VERSION:
        raise ArtifactError(f"{where}: sidecar format {data['format_version']!r}, this aarm reads {SIDECAR_VERSION}")

    def one_of(key: str, allowed: tuple[str, ...]) -> None:
        if data[key] not in allowed:
            raise ArtifactError(f"{where}: field '{key}' must be one of {', '.join(allowed)}, got {data[key]!r}")

    def typed(key: str, types: tuple[type, ...], what: str, *, optional: bool = False) -> None:
        if key not in data or (optional and data[key] is None):
            return
        v = data[key]
        if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
            raise ArtifactError(f"{where}: field '{key}' must be {what}, got {type(v).__name__}")

    one_of("kind", KINDS)
    one_of("stage", STAGES)
    one_of("precision", PRECISIONS)
    typed("model", (dict,), "an object")
    classes = data["classes"]
    if not isinstance(classes, list) or not all(isinstance(c, str) and c for c in classes):
        raise ArtifactError(f"{where}: field 'classes' must be a list of non-empty strings")
    if len(set(classes)) != len(classes):
        raise ArtifactError(f"{where}: field 'classes' names a class twice")
    _check_tensors(where, "inputs", data["inputs"])
    _check_tensors(where, "outputs", data["outputs"])
    for t in data["outputs"]:
        if t.get("layout") == "NC" and _is_int(t["shape"][-1]) and t["shape"][-1] != len(classes):
            raise ArtifactError(f"{where}: field 'outputs' gives {t['name']!r} {t['shape'][-1]} classes, "
                                f"field 'classes' names {len(classes)}")
        rank = {"NVTHW": 5, "NVC": 3}.get(t.get("layout"))
        if rank is not None and (len(t["shape"]) != rank or t is data["outputs"][0]):
            raise ArtifactError(f"{where}: field 'outputs' gives attention output {t['name']!r} ({t['layout']}) "
                                f"shape {t['shape']!r}; it needs {rank} axes and to follow the scores output")
    preps = data["preprocessing"]
    items = preps if isinstance(preps, list) else [preps]
    if not items or not all(isinstance(p, dict) for p in items):
        raise ArtifactError(f"{where}: field 'preprocessing' must be an object or a list of objects")
    if len(items) != len(data["inputs"]):
        raise ArtifactError(f"{where}: field 'preprocessing' has {len(items)} entries for {len(data['inputs'])} "
                            "inputs")
    for p, t in zip(items, data["inputs"], strict=True):
        try:
            prep = Preprocessing.from_dict(p)
        except (AarmError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{where}: field 'preprocessing' is invalid ({exc})") from None
        for axis, size in temporal_sizes(prep).items():
            r = (t.get("ranges") or {}).get(axis)
            if r is not None and not r["min"] <= size <= r["max"]:
                raise ArtifactError(f"{where}: input {t['name']!r} samples {axis} = {size}, outside its range "
                                    f"{r['min']}:{r['opt']}:{r['max']}")
    typed("trained", (bool,), "true or false")
    typed("opset", (int,), "an integer", optional=True)
    if data.get("opset") is not None and data["opset"] < 1:
        raise ArtifactError(f"{where}: field 'opset' must be >= 1, got {data['opset']}")
    typed("parent", (str,), "a path string", optional=True)
    for key in ("sha256", "parent_sha256"):
        v = data.get(key)
        if (key == "sha256" or v is not None) and (not isinstance(v, str) or not _SHA256.fullmatch(v)):
            raise ArtifactError(f"{where}: field '{key}' must be 64 lowercase hex digits, got {v!r}")
    if data.get("parent") is not None and data.get("parent_sha256") is None:
        raise ArtifactError(f"{where}: field 'parent_sha256' is missing for parent {data['parent']!r}")
    versions = data.get("versions", {})
    if not isinstance(versions, dict) or not all(isinstance(k, str) and (v is None or isinstance(v, str))
                                                 for k, v in versions.items()):
        raise ArtifactError(f"{where}: field 'versions' must map package names to version strings or null")
    typed("device", (str,), "a string")
    typed("created", (str,), "a string")
    extra = data.get("extra", {})
    if not isinstance(extra, dict) or not all(isinstance(k, str) for k in extra):
        raise ArtifactError(f"{where}: field 'extra' must be an object")


def read_sidecar(artifact: str | Path, *, verify: bool = True) -> Sidecar:
    """Read `<artifact>.json`, validated field by field (`validate_sidecar`); with verify, refuse when the
    artifact's sha256 differs from the recorded one."""
    import json

    artifact = Path(artifact)
    path = sidecar_path(artifact)
    if not artifact.is_file():
        raise ArtifactError(f"artifact not found: {artifact}")
    if not path.is_file():
        raise ArtifactError(f"{artifact}: no sidecar {path.name}; artifacts must come from aarm-export")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: unreadable sidecar ({' '.join(str(exc).split())[:200]})") from None
    validate_sidecar(data, str(path))
    sidecar = Sidecar(**data)
    if verify and file_sha256(artifact) != sidecar.sha256:
        raise ArtifactError(f"{artifact}: contents do not match its sidecar's sha256 (modified after export?)")
    return sidecar

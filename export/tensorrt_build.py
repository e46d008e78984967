"""TensorRT engine build: ONNX graph (+ sidecar) -> strongly typed `model.<precision>.engine` (+ sidecar).

TensorRT 11 builds strongly typed networks only (no FP16/INT8 builder flags, no calibrators): the
precision is whatever the ONNX graph says (an FP16 graph, an INT8 Q/DQ graph). TensorRT 10 (JetPack 6)
builds the same graphs with the STRONGLY_TYPED network flag, so both go through one path: Polygraphy's
lazy loaders `NetworkFromOnnxPath(strongly_typed=True)` -> `CreateConfig(profiles, workspace pool,
timing cache, hardware/version compatibility)` -> `EngineFromNetwork` -> `SaveEngine`.

The work is split so that everything up to the build runs on a CPU-only machine:
`build_plan` (pure: profiles, flags, paths), `polygraphy_loaders` (constructs the loaders; Polygraphy
imports tensorrt only when they are called), and `build_engine`, which needs TensorRT and a GPU.
Polygraphy older than `runtime.tensorrt_engine.MIN_POLYGRAPHY` is refused before anything is built.
"""

import dataclasses
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from aarm.errors import ConfigError
from aarm.fileio import atomic_path, check_writable
from runtime.artifact import Sidecar, read_sidecar, write_sidecar
from runtime.errors import ArtifactError
from runtime.tensorrt_engine import (
    HARDWARE_COMPAT,
    cuda_device_index,
    current_gpu,
    require_polygraphy,
    require_tensorrt,
    use_cuda_device,
)

DEFAULT_BATCH = (1, 8, 32)  # min, opt, max of the batch axis N
DEFAULT_WORKSPACE = 4 << 30
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_NAME_TOKENS = {"onnx", "opt", "fp32", "fp16", "int8", "qdq"}

Shape = tuple[int, ...]


@dataclass(frozen=True)
class BuildOptions:
    """What `aarm-export build` asks for. batch: (min, opt, max) of the batch axis; None = DEFAULT_BATCH
    for a dynamic batch, or the fixed batch of the graph. segments / frames: (min, opt, max) of a dynamic K
    (2D, NKCHW) or T (3D, NCTHW), inside the range the sidecar records; None = that recorded range.
    workspace in bytes (None: TensorRT's default)."""

    batch: tuple[int, int, int] | None = None
    segments: tuple[int, int, int] | None = None
    frames: tuple[int, int, int] | None = None
    workspace: int | None = DEFAULT_WORKSPACE
    timing_cache: Path | None = None
    hardware_compat: str = "none"  # none | ampere+ | same-cc
    version_compat: bool = False
    output: Path | None = None
    force: bool = False
    device: str | None = None  # cuda or cuda:<i> (default cuda:0): the GPU the engine is built on and tied to


@dataclass(frozen=True)
class BuildPlan:
    """Everything a build needs, decided before TensorRT is touched.

    profiles: one optimization profile, input name -> (min, opt, max) full shapes, e.g. for an NKCHW
    input ((1, K, C, H, W), (8, K, C, H, W), (32, K, C, H, W)).
    """

    onnx_path: Path
    engine_path: Path
    precision: str
    profiles: dict[str, tuple[Shape, Shape, Shape]]
    workspace: int | None
    timing_cache: Path | None
    hardware_compat: str
    version_compat: bool
    strongly_typed: bool = True
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["profiles"] = {
            name: {"min": list(lo), "opt": list(opt), "max": list(hi)}
            for name, (lo, opt, hi) in self.profiles.items()
        }
        return d


@dataclass(frozen=True)
class EngineLoaders:
    """The Polygraphy loader chain of one build; calling `save()` parses, builds and writes the engine."""

    network: Any  # NetworkFromOnnxPath
    config: Any  # CreateConfig
    engine: Any  # EngineFromNetwork
    save: Any  # SaveEngine


def parse_size(text: str) -> int:
    """'4G' -> 4 * 2**30; accepts K/M/G/T with an optional 'B' or 'iB', or plain bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, flags=re.IGNORECASE)
    if not m:
        raise ConfigError(f"unreadable size {text!r}; use e.g. 512M, 4G or a number of bytes")
    size = int(float(m.group(1)) * _SIZE_UNITS[m.group(2).upper()])
    if size <= 0:
        raise ConfigError(f"size must be positive, got {text!r}")
    return size


def parse_batch(text: str) -> tuple[int, int, int]:
    """'1:8:32' -> (1, 8, 32); a single number 'B' means a fixed batch (B, B, B)."""
    from runtime.temporal import parse_range

    return parse_range(text, "batch range")


def default_engine_path(onnx_path: Path, precision: str) -> Path:
    """model.opt.fp16.onnx -> model.fp16.engine (beside the graph)."""
    parts = onnx_path.name.split(".")
    while len(parts) > 1 and parts[-1].lower() in _NAME_TOKENS:
        parts.pop()
    return onnx_path.with_name(f"{'.'.join(parts)}.{precision}.engine")


def build_plan(onnx_path: str | Path, sidecar: Sidecar, options: BuildOptions) -> BuildPlan:
    """Decide profiles, flags and paths from the ONNX sidecar and the options (no I/O, no TensorRT).

    Every input gets the batch range on axis 0 and, where the graph has one, the range of its dynamic K
    (segments) or T (frames) axis: `options.segments` / `options.frames`, which must lie inside the range
    the sidecar records, or that recorded range. Any other axis must be static, because the profile only
    covers what it declares.
    """
    onnx_path = Path(onnx_path)
    if sidecar.kind != "onnx":
        raise ArtifactError(f"{onnx_path}: sidecar kind is {sidecar.kind!r}; build takes an ONNX graph")
    if options.hardware_compat not in HARDWARE_COMPAT:
        raise ConfigError(f"--hardware-compat must be one of {', '.join(HARDWARE_COMPAT)}, "
                          f"got {options.hardware_compat!r}")
    if not sidecar.inputs:
        raise ArtifactError(f"{onnx_path}: sidecar lists no inputs")
    profiles: dict[str, tuple[Shape, Shape, Shape]] = {}
    notes = []
    _check_temporal_options(onnx_path, sidecar, options)
    for spec in sidecar.inputs:
        if not spec.shape:
            raise ArtifactError(f"{onnx_path}: input {spec.name!r} is a scalar; expected a batch axis first")
        batch, rest = spec.shape[0], spec.shape[1:]
        ranged = spec.ranges or {}
        dynamic = [f"axis {i + 1} ({d!r})" for i, d in enumerate(rest)
                   if (not isinstance(d, int) or d < 1) and d not in ranged]
        if dynamic:
            raise ArtifactError(f"{onnx_path}: input {spec.name!r} has dynamic {', '.join(dynamic)} without a "
                                "recorded range; the build profiles the batch and K / T only, so re-export it")
        tail_ranges = [_axis_range(onnx_path, spec.name, d, ranged, options, notes) if isinstance(d, str)
                       else (int(d),) * 3 for d in rest]
        if isinstance(batch, int) and batch >= 1:
            fixed = (batch, batch, batch)
            if options.batch is not None and options.batch != fixed:
                wanted = ":".join(map(str, options.batch))
                raise ConfigError(f"input {spec.name!r} has a fixed batch of {batch}; --batch {wanted} "
                                  "needs a graph exported with a dynamic batch")
            lo, opt, hi = fixed
        else:
            lo, opt, hi = options.batch or DEFAULT_BATCH
            if not 1 <= lo <= opt <= hi:
                raise ConfigError(f"batch range needs 1 <= min <= opt <= max, got {lo}:{opt}:{hi}")
            if options.batch is None:
                notes.append(f"{spec.name}: default batch range {lo}:{opt}:{hi}")
        profiles[spec.name] = tuple((b, *(r[j] for r in tail_ranges)) for j, b in enumerate((lo, opt, hi)))
    for spec, shape in zip(sidecar.inputs, sidecar.input_shapes(), strict=True):
        for axis in spec.ranges or {}:
            i, size = spec.shape.index(axis), shape[spec.shape.index(axis)]
            lo_shape, _, hi_shape = profiles[spec.name]
            if not lo_shape[i] <= size <= hi_shape[i]:
                flag = _TEMPORAL[axis][1] if axis in _TEMPORAL else axis
                raise ConfigError(f"{flag} {lo_shape[i]}..{hi_shape[i]} leaves out {axis} = {size}, which "
                                  f"{onnx_path.name}'s preprocessing samples; include it in the range")
    if options.workspace is not None and options.workspace <= 0:
        raise ConfigError(f"workspace must be positive, got {options.workspace}")
    engine_path = default_engine_path(onnx_path, sidecar.precision)
    if options.output:
        engine_path = Path(options.output)
    return BuildPlan(
        onnx_path=onnx_path,
        engine_path=engine_path,
        precision=sidecar.precision,
        profiles=profiles,
        workspace=options.workspace,
        timing_cache=Path(options.timing_cache) if options.timing_cache else None,
        hardware_compat=options.hardware_compat,
        version_compat=options.version_compat,
        notes=notes,
    )


_TEMPORAL = {"K": ("segments", "--segments", "NKCHW"), "T": ("frames", "--frames", "NCTHW")}


def _check_temporal_options(onnx_path: Path, sidecar: Sidecar, options: BuildOptions) -> None:
    """--segments / --frames need a graph with that dynamic axis (a fixed one, or the other layout, is refused)."""
    for axis, (field_name, flag, layout) in _TEMPORAL.items():
        wanted = getattr(options, field_name)
        if wanted is None:
            continue
        if not 1 <= wanted[0] <= wanted[1] <= wanted[2]:
            raise ConfigError(f"{flag} range needs 1 <= min <= opt <= max, got {':'.join(map(str, wanted))}")
        if not any(axis in (t.ranges or {}) for t in sidecar.inputs):
            layouts = sorted(str(t.layout) for t in sidecar.inputs)
            why = (f"it takes {', '.join(layouts)} inputs, not {layout}" if layout not in layouts
                   else f"its {axis} is fixed; export it again with a dynamic {axis}")
            raise ConfigError(f"{flag} does not apply to {onnx_path}: {why}")


def _axis_range(onnx_path: Path, name: str, axis: str, ranged: dict[str, dict[str, int]], options: BuildOptions,
                notes: list[str]) -> tuple[int, int, int]:
    """(min, opt, max) of a dynamic K or T: the option's, inside the recorded range, else the recorded range."""
    recorded = ranged[axis]
    rec = (recorded["min"], recorded["opt"], recorded["max"])
    field_name, flag, _ = _TEMPORAL.get(axis, (None, None, None))
    wanted = getattr(options, field_name) if field_name else None
    if wanted is None:
        notes.append(f"{name}: {axis} range {':'.join(map(str, rec))} (recorded at export)")
        return rec
    if wanted[0] < rec[0] or wanted[2] > rec[2]:
        raise ConfigError(f"{flag} {':'.join(map(str, wanted))} leaves the range {rec[0]}..{rec[2]} that "
                          f"{onnx_path.name} records for {axis} (input {name!r})")
    return wanted


def _hardware_level(trt: Any, name: str) -> Any:
    """TensorRT's HardwareCompatibilityLevel for `ampere+` / `same-cc` (`none` is TensorRT's default)."""
    if name == "ampere+":
        return trt.HardwareCompatibilityLevel.AMPERE_PLUS
    # Added after TensorRT 10.0; reached through getattr so older TensorRT 10 fails with a clear message.
    level = getattr(trt.HardwareCompatibilityLevel, "SAME_COMPUTE_CAPABILITY", None)
    if level is None:
        raise ConfigError("--hardware-compat same-cc needs a TensorRT with HardwareCompatibilityLevel."
                          "SAME_COMPUTE_CAPABILITY; use ampere+ or none")
    return level


def polygraphy_loaders(plan: BuildPlan, *, trt: ModuleType | Any | None = None,
                       engine_path: Path | None = None) -> EngineLoaders:
    """The Polygraphy loaders that would build `plan` (nothing runs until `.save()` is called).

    Refuses (BackendUnavailable, one line) a Polygraphy older than MIN_POLYGRAPHY: those set the EXPLICIT_BATCH
    flag TensorRT 11 removed.
    trt: the tensorrt module, used only for the enum values of the config (memory pool, hardware level);
    None imports it. engine_path: where SaveEngine writes (default `plan.engine_path`).
    """
    require_polygraphy()
    from polygraphy.backend.trt import (
        CreateConfig,
        EngineFromNetwork,
        NetworkFromOnnxPath,
        Profile,
        SaveEngine,
    )

    if trt is None:
        trt = require_tensorrt()
    profile = Profile()
    for name, (lo, opt, hi) in plan.profiles.items():
        profile.add(name, min=lo, opt=opt, max=hi)
    network = NetworkFromOnnxPath(str(plan.onnx_path), strongly_typed=plan.strongly_typed)
    cache = str(plan.timing_cache) if plan.timing_cache else None
    config = CreateConfig(
        profiles=[profile],
        memory_pool_limits={trt.MemoryPoolType.WORKSPACE: plan.workspace} if plan.workspace else None,
        load_timing_cache=cache,
        hardware_compatibility_level=(
            _hardware_level(trt, plan.hardware_compat) if plan.hardware_compat != "none" else None
        ),
        version_compatible=plan.version_compat or None,
    )
    engine = EngineFromNetwork(network, config=config, save_timing_cache=cache)
    save = SaveEngine(engine, path=str(engine_path or plan.engine_path))
    return EngineLoaders(network=network, config=config, engine=engine, save=save)


def engine_sidecar(
    onnx_sidecar: Sidecar,
    plan: BuildPlan,
    *,
    tensorrt: str,
    gpu: str,
    compute_capability: str,
    seconds: float | None = None,
) -> Sidecar:
    """The engine's sidecar: the ONNX sidecar's model, classes, layout and precision, plus what the engine
    is tied to (TensorRT version, GPU, compute capability, compatibility options, profile)."""
    info = {
        "version": tensorrt,
        "gpu": gpu,
        "compute_capability": compute_capability,
        "hardware_compatibility": plan.hardware_compat,
        "version_compatible": plan.version_compat,
        "strongly_typed": plan.strongly_typed,
        "workspace": plan.workspace,
        "profile": plan.to_dict()["profiles"],
    }
    if seconds is not None:
        info["build_seconds"] = round(seconds, 1)
    inputs = []
    for spec in onnx_sidecar.inputs:  # an engine takes the K / T its profile covers, not the graph's whole range
        ranges = None
        if spec.ranges:
            lo, opt, hi = plan.profiles[spec.name]
            ranges = {a: {"min": lo[spec.shape.index(a)], "opt": opt[spec.shape.index(a)],
                          "max": hi[spec.shape.index(a)]} for a in spec.ranges}
        inputs.append(dataclasses.replace(spec, shape=list(spec.shape), ranges=ranges))
    return onnx_sidecar.derive(kind="engine", stage="build", extra={**onnx_sidecar.extra, "tensorrt": info},
                               device=f"{gpu} (compute capability {compute_capability})", inputs=inputs)


def build_engine(onnx_path: str | Path, options: BuildOptions, *, lint: bool = True,
                 verbose: bool = False) -> tuple[Path, Sidecar]:
    """Build `model.<precision>.engine` from an ONNX graph with a sidecar; returns (engine path, sidecar).

    Needs TensorRT and a GPU (BackendUnavailable otherwise). With `lint`, refuses a graph that
    `lint_onnx` finds errors in. The engine is written atomically; its sidecar records the TensorRT
    version and GPU it is tied to.
    """
    onnx_path = Path(onnx_path)
    sidecar = read_sidecar(onnx_path, verify=True)
    plan = build_plan(onnx_path, sidecar, options)
    check_writable(plan.engine_path, options.force)
    device = cuda_device_index(options.device)
    require_polygraphy()
    trt = require_tensorrt()
    if lint:
        from export.lint import lint_onnx

        errors = [f for f in lint_onnx(onnx_path) if f.severity == "error"]
        if errors:
            first = errors[0]
            raise ArtifactError(f"{onnx_path}: {len(errors)} TensorRT-compatibility error(s), first: "
                                f"{first.node} ({first.op}): {first.message}; see `aarm-export lint "
                                f"{onnx_path}` (or build with --skip-lint)")
    gpu, cc = current_gpu(device)
    use_cuda_device(device)
    from polygraphy.exception import PolygraphyException
    from polygraphy.logger import G_LOGGER

    start = time.perf_counter()

    with G_LOGGER.verbosity(G_LOGGER.INFO if verbose else G_LOGGER.WARNING):
        with atomic_path(plan.engine_path) as tmp:
            try:
                polygraphy_loaders(plan, trt=trt, engine_path=tmp).save()
            except PolygraphyException as exc:
                detail = " ".join(str(exc).split())
                raise ArtifactError(f"TensorRT could not build {onnx_path}: {detail}") from None
    seconds = time.perf_counter() - start
    out = engine_sidecar(sidecar, plan, tensorrt=str(trt.__version__), gpu=gpu, compute_capability=cc,
                         seconds=seconds)
    write_sidecar(plan.engine_path, out, parent=onnx_path)
    return plan.engine_path, out

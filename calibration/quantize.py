"""INT8 post-training quantization: a Q/DQ graph from onnxruntime's `quantize_static`, calibrated on real clips,
shaped for where it runs, with the layers that cost accuracy kept in float.

    config = CalibrationConfig(data=Path("UCF101"), target="tensorrt")
    result = calibrate(Path("model.onnx"), Path("model.int8.onnx"), config)   # result.report.to_json(): the report file

Targets (DESIGN, "TensorRT as it is today"):
- `tensorrt`: symmetric int8 activations and weights (zero points 0, as TensorRT's explicit quantization
  needs), per-channel weights along the output channel, biases left in float (TensorRT fuses them itself and
  its DequantizeLinear takes no int32).
- `cpu`: unsigned 8-bit activations and int8 per-channel weights, which onnxruntime's CPU kernels run
  fastest. Grouped convolutions with at most 2 input channels per group (the channel-wise fusion conv of
  older exports) stay in float: onnxruntime's int8 kernels are several times slower than its float ones on
  them. AARM's STAM convs (one input channel, not grouped) are quantized: a float conv in the block makes
  onnxruntime convert the whole map between its channels-last int8 layout and channels-first twice per
  block, which costs more than the int8 convs do (docs/optimize.md). AARM's max and channel-mean pools
  run on the uint8 map (calibration.uint8_pools), and its per-channel fusion bias adds as depthwise 1x1 convs,
  which onnxruntime splits over its threads (calibration.bias_convs).

Steps: the caller's graph passes, if given (`aarm-export calibrate` passes export.passes' standard-op passes,
which rewrite AARM's grouped channel-wise fusion conv of older exports into weighted sums); onnxruntime's
`quant_pre_process` (shape inference, graph optimisation); tensor ranges from
`create_calibrator` over the calibration clips (or from the cache); `quantize_static` in QDQ format; the
INT8 graph scored on held-out labelled clips against the float graph; while the top-1 loss (clips the
float graph gets right and INT8 wrong) is over the budget, the most sensitive module
(calibration.sensitivity) goes back to float. Writes the graph, its sidecar (precision int8 and how it
was made), a JSON report and a TensorRT calibration table beside it.

"Kept in float" is checked where it matters: for the cpu target the INT8 graph is opened in an onnxruntime
CPU session with every graph optimisation on (what the runtime runs), the optimised graph is read back, and
each node calibration kept in float is traced there. onnxruntime's QDQ transformers can quantize a float
node themselves (a float Conv behind a Reshape whose DequantizeLinear they move, with its weights quantized
by their WeightBiasQuantization): such a node is an ArtifactError, never a report that says float.
Without labelled held-out clips (a folder of unlabelled production videos) and with require_labels=False,
calibration runs without an accuracy budget and the report says so.
"""

import contextlib
import fnmatch
import io
import itertools
import logging
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.calibrate import (
    HistogramCalibrater,
    HistogramCollector,
    TensorsData,
    create_calibrator,
    save_tensors_data,
)
from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry
from onnxruntime.quantization.shape_inference import quant_pre_process

from aarm.data.preprocessing import Preprocessing
from aarm.errors import ConfigError, DataError
from aarm.fileio import atomic_path, check_writable, write_json
from aarm.progress import Progress
from calibration.bias_convs import rewrite_bias_adds
from calibration.cache import cache_key, load_ranges, save_ranges, write_tensorrt_table
from calibration.reader import (
    ClipReader,
    ClipSet,
    choose_clips,
    clips_identity,
    find_clips,
    graph_input,
    sidecar_preprocessing,
)
from calibration.report import (
    CacheUse,
    CalibrationData,
    CalibrationReport,
    HeldOutAccuracy,
    KeptInFloat,
    QuantizationSummary,
    SessionCheck,
)
from calibration.sensitivity import (
    QDQ_OPS,
    Quantized,
    Search,
    dequantized_readers,
    float_variant,
    graph_scores,
    quantized_nodes,
    search_float_groups,
)
from calibration.uint8_pools import UINT8_OPS, rewrite_pools, share_max_ranges
from runtime.artifact import Sidecar, read_sidecar, write_sidecar
from runtime.errors import ArtifactError
from runtime.graph_precision import all_nodes, consumers, producers
from runtime.onnx_file import load_onnx

GraphPasses = Callable[[onnx.ModelProto], tuple[onnx.ModelProto, list[dict[str, Any]]]]
DEFAULT_MAX_DROP = 1.0
# Ops of onnxruntime's optimised CPU graphs that compute in 8-bit (QDQ groups fused into quantized kernels).
SESSION_INT8_OPS = frozenset({
    "QLinearConv", "QLinearMatMul", "QLinearAdd", "QLinearMul", "QLinearSigmoid", "QLinearLeakyRelu",
    "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearConcat", "QLinearSoftmax", "QLinearReduceMean",
    "QLinearWhere", "QGemm", "ConvInteger", "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul",
    "QAttention", "DequantizeLinear", "QuantizeLinear",
})
# Layout-only ops onnxruntime inserts around kernels (NCHWc blocks, NHWC transposes).
_SESSION_LAYOUT_OPS = frozenset({"ReorderInput", "ReorderOutput", "Transpose"})

METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
           "percentile": CalibrationMethod.Percentile}
# Options of onnxruntime's calibrators (create_calibrator's extra_options); part of the cache key. Memory
# stays bounded because compute_ranges feeds a few batches per collect_data call; MinMax's own
# max_intermediate_outputs is left unset: onnxruntime 1.31 drops the collected outputs when it is reached.
CALIBRATOR_OPTIONS: dict[str, dict[str, Any]] = {
    "minmax": {},
    "entropy": {"num_bins": 512, "num_quantized_bins": 128},
    "percentile": {"num_bins": 2048, "percentile": 99.999, "symmetric": True},
}


@dataclass(frozen=True)
class Target:
    """How a Q/DQ graph is shaped for the runtime that runs it."""

    name: str
    activation_type: QuantType
    weight_type: QuantType
    options: tuple[tuple[str, Any], ...]  # quantize_static extra_options
    float_conv_max_group_channels: int  # grouped Conv with at most this many input channels per group stays float
    description: str
    uint8_pools: bool = False  # max / channel-mean pools run on the uint8 map (calibration.uint8_pools)
    bias_convs: bool = False  # per-channel constant adds on a map as depthwise 1x1 Convs (calibration.bias_convs)

    @property
    def extra_options(self) -> dict[str, Any]:
        return dict(self.options)


TARGETS = {
    "cpu": Target(
        "cpu", QuantType.QUInt8, QuantType.QInt8, (("WeightSymmetric", True),), 2,
        "onnxruntime CPU: uint8 activations, int8 per-channel weights, max and channel-mean pools on the uint8 map, "
        "per-channel bias adds as depthwise 1x1 convs",
        uint8_pools=True, bias_convs=True,
    ),
    "tensorrt": Target(
        "tensorrt", QuantType.QInt8, QuantType.QInt8,
        (("ActivationSymmetric", True), ("WeightSymmetric", True), ("QuantizeBias", False)), 0,
        "TensorRT explicit quantization: symmetric int8 activations and weights (zero points 0), float biases",
    ),
}
_TYPE_NAMES = {QuantType.QUInt8: "uint8", QuantType.QInt8: "int8"}


def _check_choice(value: str, choices: Collection[str], what: str) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")


@contextlib.contextmanager
def _quiet():
    """onnxruntime's quantization tools print and log chatter (histogram sizes, pre-processing advice)."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


# ---------------------------------------------------------------------------------------------- steps


def prepare_graph(model: Path, out: Path) -> Path:
    """onnxruntime's quantization pre-processing: symbolic and ONNX shape inference, then its basic graph
    optimisations (constant folding, Conv+BN fusion), so the quantizer sees every tensor's shape."""
    try:
        with _quiet():
            quant_pre_process(str(model), str(out))
    except Exception as exc:  # the pre-processor raises bare Exceptions from shape inference and ORT
        raise ArtifactError(f"{model}: quantization pre-processing failed ({type(exc).__name__}: {exc})") from None
    return out


def _op_types() -> list[str]:
    """The op types quantize_static quantizes by default; the calibrator must record the same tensors."""
    return sorted(set(QLinearOpsRegistry) | set(QDQRegistry))


class _HistogramCollector(HistogramCollector):
    """onnxruntime's histogram collector, except that a tensor whose absolute values are all (nearly) equal
    on the first batch (a saturated gate, a constant) gets bins over [0, max] instead of numpy refusing to
    make `num_bins` finite bins between two equal numbers (the percentile method's first histogram)."""

    def collect_absolute_value(self, name_to_arr: dict[str, Any]) -> None:
        for tensor, value in name_to_arr.items():
            try:
                super().collect_absolute_value({tensor: value})
            except ValueError:
                if tensor in self.histogram_dict:
                    raise
                data = np.asarray(value).reshape(-1)
                amax = float(np.nanmax(np.abs(data))) if data.size else 0.0
                hist, edges = np.histogram(np.abs(data), bins=self.num_bins, range=(0.0, amax or 1.0))
                self.histogram_dict[tensor] = (hist, edges.astype(data.dtype), np.nanmin(data), np.nanmax(data))


def compute_ranges(
    graph: Path, reader: ClipReader, method: str, *, workdir: Path, chunk: int = 4,
    progress: Progress | None = None,
) -> TensorsData:
    """Tensor ranges of `graph` over the reader's clips with onnxruntime's calibrator for `method`
    (minmax | entropy | percentile). Reads `chunk` batches at a time, so memory stays bounded."""
    _check_choice(method, METHODS, "calibration method")
    with _quiet():
        calibrator = create_calibrator(
            Path(graph), _op_types(), augmented_model_path=str(Path(workdir) / "augmented.onnx"),
            calibrate_method=METHODS[method], extra_options=dict(CALIBRATOR_OPTIONS[method]),
        )
    if isinstance(calibrator, HistogramCalibrater):
        calibrator.collector = _HistogramCollector(
            method=calibrator.method, symmetric=calibrator.symmetric, num_bins=calibrator.num_bins,
            num_quantized_bins=calibrator.num_quantized_bins, percentile=calibrator.percentile,
            scenario=calibrator.scenario,
        )
    total = len(reader)
    try:
        for start in range(0, total, chunk):
            reader.set_range(start, start + chunk)
            with _quiet():
                calibrator.collect_data(reader)
            if progress:
                progress(f"calibrating ({method})", min(start + chunk, total), total)
        with _quiet():
            ranges = calibrator.compute_data()
    except ValueError as exc:  # e.g. numpy cannot bin a tensor whose values are all (nearly) equal
        raise ArtifactError(f"{method} calibration of {graph} failed ({exc}); try another `method`") from None
    finally:
        reader.rewind()
    return ranges


def quantize_graph(
    graph: Path, out: Path, ranges: TensorsData, *, target: str, method: str, exclude: Collection[str] = (),
    per_channel: bool = True, reduce_range: bool = False, float_model: onnx.ModelProto | None = None,
) -> onnx.ModelProto:
    """Writes to `out` and returns a QDQ graph of `graph` (pre-processed) from ranges: quantize_static reads them from a
    calibration cache file, so it runs no calibration itself. `exclude`: node names kept in float; where
    quantize_static still feeds one of them from a DequantizeLinear (a tensor that a quantized Reshape or
    Concat passes on, or one that reaches it through a Reshape that onnxruntime would move the
    DequantizeLinear past), it is rewired to the float tensor, so excluded nodes read and compute float only.
    float_model: `graph` already loaded (else it is read when needed). A target with uint8_pools also quantizes
    ReduceMax, its output on its input's range (calibration.uint8_pools: exact, run on the uint8 map)."""
    _check_choice(target, TARGETS, "target")
    _check_choice(method, METHODS, "calibration method")
    t = TARGETS[target]
    op_types, unranged = None, []
    if t.uint8_pools:
        float_model = float_model or load_onnx(graph)
        ranges, unranged = share_max_ranges(float_model, ranges)
        op_types = _op_types() + list(UINT8_OPS)
    with tempfile.TemporaryDirectory(prefix="aarm-quant-") as tmp:
        ranges_file = Path(tmp) / "ranges.json"
        save_tensors_data(ranges, ranges_file)
        with _quiet():
            quantize_static(
                str(graph), str(out), None, quant_format=QuantFormat.QDQ, op_types_to_quantize=op_types,
                per_channel=per_channel, reduce_range=reduce_range, activation_type=t.activation_type,
                weight_type=t.weight_type, nodes_to_exclude=sorted({*exclude, *unranged}),
                calibrate_method=METHODS[method], extra_options=t.extra_options, calibration_cache_path=ranges_file,
            )
    qmodel = load_onnx(out)
    fed = dequantized_readers(qmodel, set(exclude))
    if fed:
        qmodel = float_variant(qmodel, float_model or load_onnx(graph), fed)
    if drop_unused_domains(qmodel) or fed:
        onnx.save(qmodel, str(out))
    return qmodel


def drop_unused_domains(model: onnx.ModelProto) -> bool:
    """Remove the opset imports of domains that no node uses (the default domain stays); True if any went.
    onnxruntime's quantizer imports every domain registered in its process: the same calibration wrote
    ('com.aarm', 1000) into the INT8 graph once a session had loaded the AARM kernels, and not otherwise."""
    used = {n.domain for n in all_nodes(model)} | {"", "ai.onnx"}
    keep = [o for o in model.opset_import if o.domain in used]
    if len(keep) == len(model.opset_import):
        return False
    del model.opset_import[:]
    model.opset_import.extend(keep)
    return True


def target_graph(model: onnx.ModelProto, target: str) -> tuple[onnx.ModelProto, dict[str, str]]:
    """The float graph `target` quantizes, from the pre-processed `model`: with uint8_pools, the pools rewritten to
    run on the uint8 map (calibration.uint8_pools); with bias_convs, per-channel bias adds as depthwise 1x1 convs
    (calibration.bias_convs). Exact float rewrites that keep node and tensor names. Also {node name: "Old -> New"}
    for each node rewritten."""
    t, rewritten = TARGETS[target], {}
    if t.uint8_pools:
        model, pools = rewrite_pools(model)
        rewritten.update(pools)
    if t.bias_convs:
        model, biases = rewrite_bias_adds(model)
        rewritten.update(biases)
    return model, rewritten


def slow_int8_nodes(model: onnx.ModelProto, target: str) -> dict[str, str]:
    """Nodes the target keeps in float for speed, with the reason: grouped Conv (group > 1) whose weight has at
    most `float_conv_max_group_channels` input channels per group."""
    limit = TARGETS[target].float_conv_max_group_channels
    if limit <= 0:
        return {}
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    slow = {}
    for node in model.graph.node:
        groups = next((a.i for a in node.attribute if a.name == "group"), 1)
        if node.op_type == "Conv" and groups > 1 and len(node.input) > 1 and node.input[1] in weights:
            per_group = weights[node.input[1]][1]
            if per_group <= limit:
                slow[node.name] = (f"{target} target: grouped Conv with {per_group} input channel(s) per group runs "
                                   "slower in int8 than in float on onnxruntime CPU")
    return slow


def session_graph(model: Path, *, threads: int = 0) -> onnx.ModelProto:
    """The graph onnxruntime's CPU session runs for `model`: every graph optimisation on (the runtime's
    default), read back through SessionOptions.optimized_model_filepath."""
    import onnxruntime as ort

    from runtime.backends.onnxruntime_backend import session_options

    with tempfile.TemporaryDirectory(prefix="aarm-session-") as tmp:
        opts = session_options(threads or None, optimization="all")
        opts.optimized_model_filepath = str(Path(tmp) / "session.onnx")
        try:
            ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail / InvalidGraph types
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ArtifactError(f"{model}: onnxruntime cannot open the INT8 graph ({first})") from None
        return load_onnx(Path(tmp) / "session.onnx")


def session_precisions(qmodel: onnx.ModelProto, session: onnx.ModelProto, nodes: Collection[str]) -> dict[str, str]:
    """How each of `nodes` (names in the Q/DQ graph `qmodel`) runs in the optimised `session` graph:
    "int8" (a quantized kernel carries its name, or its output comes from a quantized kernel or a
    DequantizeLinear, or only quantized kernels read its input), "float" (a float kernel makes its output
    or, where onnxruntime fused it with a float neighbour, reads its input), or "unknown" (neither tensor
    survives). Layout ops (NCHWc reorders, transposes) are looked through."""
    producer, readers = producers(session.graph.node), consumers(session.graph.node)
    initializers = {t.name for t in qmodel.graph.initializer} | {t.name for t in session.graph.initializer}
    by_name = {n.name: n for n in qmodel.graph.node}

    def made_by(name: str) -> onnx.NodeProto | None:
        node = producer.get(name) if name else None
        while node is not None and node.op_type in _SESSION_LAYOUT_OPS and node.input:
            node = producer.get(node.input[0])
        return node

    def read_by(name: str) -> list[onnx.NodeProto]:
        found, frontier = [], [name]
        for _ in range(4):
            nxt = []
            for tensor in frontier:
                for n in readers.get(tensor, []):
                    if n.op_type in _SESSION_LAYOUT_OPS:
                        nxt.extend(n.output)
                    else:
                        found.append(n)
            frontier = nxt
        return found

    verdicts = {}
    for name in nodes:
        node = by_name.get(name)
        if node is None:
            verdicts[name] = "unknown"
            continue
        # onnxruntime names the kernel that replaces a node after it (QDQ fusions append "_token_<n>")
        named = [n for n in session.graph.node if n.name == name or n.name.startswith(name + "_token_")]
        if any(n.op_type in SESSION_INT8_OPS for n in named):
            verdicts[name] = "int8"
            continue
        made = made_by(node.output[0]) if node.output else None
        if made is not None:
            verdicts[name] = "int8" if made.op_type in SESSION_INT8_OPS else "float"
            continue
        data = [i for i in node.input if i and i not in initializers]
        found = [r for i in data for r in read_by(i)]
        if not found:
            verdicts[name] = "unknown"
        elif all(r.op_type in SESSION_INT8_OPS for r in found):
            verdicts[name] = "int8"
        else:
            verdicts[name] = "float"
    return verdicts


def match_nodes(model: onnx.ModelProto, patterns: Sequence[str]) -> dict[str, str]:
    """Nodes matching each pattern, each with the reason "requested". A pattern is an exact node name, an
    fnmatch glob, or a module path ("/backbone/fc" for TorchScript node names, "backbone.fc" for the
    parameter names the dynamo exporter keeps on weights). A pattern matching no node is an ArtifactError."""
    initializers = {t.name for t in model.graph.initializer}
    keys = {n.name: [n.name, *(i for i in n.input if i in initializers)] for n in model.graph.node}
    matched: dict[str, str] = {}
    for pattern in patterns:
        prefixes = (pattern.rstrip("/.") + "/", pattern.rstrip("/.") + ".")
        hits = [node for node, names in keys.items()
                if any(k == pattern or fnmatch.fnmatchcase(k, pattern) or k.startswith(prefixes) for k in names)]
        if not hits:
            sample = ", ".join(list(keys)[:5])
            raise ArtifactError(f"`exclude` {pattern!r} matches no node (by node name, glob or module path) of the "
                                f"graph; its nodes are named like {sample}")
        for hit in hits:
            matched.setdefault(hit, f"requested (`exclude` {pattern})")
    return matched


# ---------------------------------------------------------------------------------------------- calibrate


@dataclass(frozen=True)
class CalibrationConfig:
    """How `calibrate` quantizes (each field is an `aarm-export calibrate` option of the same name).

    data: a dataset (its `split` train subset calibrates) or a folder of videos; videos / annotations: where the
    dataset's videos and split files are when `data` does not hold them (as `aarm.data.annotations.load_split`
    takes them); clips: how many calibrate (seed picks which); eval_data: labelled held-out clips (default: the
    dataset's test subset), eval_clips of them; max_drop: top-1 points the INT8 graph may lose against the float
    graph on them, counting only clips the float graph gets right and INT8 wrong (None: no search, just report);
    require_labels: False lets a folder without labelled held-out clips calibrate with no accuracy budget
    (reported as such) instead of refusing max_drop; exclude: node names / globs / module paths kept in float;
    cache: JSON calibration cache; per_channel / reduce_range: quantize_static's; preprocess: onnxruntime's
    quant_pre_process first; threads: onnxruntime threads for scoring (0: its default).
    """

    data: Path
    split: int = 1
    clips: int | None = 64
    method: str = "percentile"
    target: str = "cpu"
    max_drop: float | None = DEFAULT_MAX_DROP
    require_labels: bool = True
    eval_data: Path | None = None
    eval_clips: int | None = 256
    videos: Path | None = None
    annotations: Path | None = None
    exclude: tuple[str, ...] = ()
    cache: Path | None = None
    seed: int = 0
    batch_size: int = 8
    per_channel: bool = True
    reduce_range: bool = False
    preprocess: bool = True
    threads: int = 0

    def __post_init__(self) -> None:
        _check_choice(self.method, METHODS, "calibration method")
        _check_choice(self.target, TARGETS, "target")
        object.__setattr__(self, "exclude", tuple(self.exclude))


@dataclass
class CalibrationResult:
    """What `calibrate` wrote, and its report (also saved as JSON beside the graph)."""

    output: Path
    sidecar: Sidecar
    report_path: Path
    table_path: Path
    report: CalibrationReport


def report_paths(out: Path) -> tuple[Path, Path]:
    """The JSON report and the TensorRT calibration table written beside `out` (model.int8.onnx ->
    model.int8.calibration.json, model.int8.calibration.cache)."""
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    return out.with_name(f"{stem}.calibration.json"), out.with_name(f"{stem}.calibration.cache")


@dataclass
class _FloatArtifact:
    """The float graph to quantize, read (and hashed, by read_sidecar) once."""

    path: Path
    sidecar: Sidecar
    model: onnx.ModelProto
    preprocessing: Preprocessing
    input_name: str


@dataclass
class _Clips:
    """The calibration clips, the labelled held-out clips (None: none) and the budget that applies."""

    calib: ClipSet
    held: ClipSet | None
    max_drop: float | None
    budget_note: str | None


def _read_float_artifact(model: Path) -> _FloatArtifact:
    """The fp32 ONNX artifact with its sidecar and preprocessing; custom ops are refused."""
    sidecar = read_sidecar(model)
    if sidecar.kind != "onnx" or sidecar.precision != "fp32":
        raise ArtifactError(f"{model}: INT8 calibration takes a float32 ONNX graph, this is {sidecar.kind} "
                            f"{sidecar.precision}")
    proto = load_onnx(model)
    custom = next((n for n in proto.graph.node if n.domain not in ("", "ai.onnx")), None)
    if custom is not None:
        raise ArtifactError(f"{model}: node {custom.name or custom.op_type} is a custom op ({custom.domain}); "
                            "quantize the standard-op graph (optimized without kernels)")
    prep = sidecar_preprocessing(sidecar, proto)
    return _FloatArtifact(model, sidecar, proto, prep, graph_input(proto)[0])


def _classes_match(clips: ClipSet, sidecar: Sidecar, what: str) -> None:
    if clips.labelled and clips.classes != sidecar.classes:
        raise DataError(f"{what} {clips.source}: its {len(clips.classes)} classes differ from the model's "
                        f"{len(sidecar.classes)} ({clips.classes[:3]}... vs {sidecar.classes[:3]}...)")


def _choose_clips(config: CalibrationConfig, sidecar: Sidecar) -> _Clips:
    """Calibration clips from the train subset of `data`; labelled held-out clips from the test subset of
    `eval_data`, else of `data`; the accuracy budget, or why there is none."""
    where = {"split": config.split, "videos": config.videos, "annotations": config.annotations}
    calib = choose_clips(find_clips(config.data, subset="train", **where), config.clips, seed=config.seed)
    _classes_match(calib, sidecar, "calibration data")
    held = None
    if config.eval_data is not None:
        held = find_clips(config.eval_data, split=config.split, subset="test")
    elif calib.labelled:
        held = find_clips(config.data, subset="test", **where)
    if held is not None and held.labelled:
        held = choose_clips(held, config.eval_clips, seed=config.seed)
        _classes_match(held, sidecar, "held-out data")
    else:
        held = None
    max_drop, note = config.max_drop, None
    if max_drop is not None and held is None and not config.require_labels:
        note = (f"no accuracy budget: {calib.source} has no labelled held-out clips, so INT8 accuracy is not "
                "checked (pass `eval_data` with labelled clips to check it)")
        max_drop = None
    elif max_drop is not None and held is None:
        raise DataError(f"an accuracy budget (`max_drop`) needs labelled held-out clips; {calib.source} has "
                        "no test subset with labels: pass `eval_data`")
    return _Clips(calib, held, max_drop, note)


def _float_graph(
    source: _FloatArtifact, config: CalibrationConfig, graph_passes: GraphPasses | None, work: Path,
) -> tuple[Path, onnx.ModelProto, list[str]]:
    """The float graph calibration and quantization work on (the caller's passes, then onnxruntime's
    pre-processing): its file, its model and the passes that ran."""
    graph, fmodel, passes_run = source.path, source.model, []
    if graph_passes is not None:
        fmodel, rows = graph_passes(source.model)
        passes_run = [r["pass"] for r in rows[1:]]
        graph = work / "passes.onnx"
        onnx.save_model(fmodel, str(graph))
    if config.preprocess:
        graph = prepare_graph(graph, work / "prepared.onnx")
        fmodel = load_onnx(graph)
    return graph, fmodel, passes_run


def _ranges(
    graph: Path, source: _FloatArtifact, calib: ClipSet, config: CalibrationConfig, passes_run: list[str],
    work: Path, progress: Progress | None,
) -> tuple[TensorsData, CacheUse]:
    """Tensor ranges from the cache, else from the calibrator over the calibration clips (then cached)."""
    options = {"calibrator": CALIBRATOR_OPTIONS[config.method], "preprocess": config.preprocess,
               **({"graph_passes": passes_run} if passes_run else {})}
    key = cache_key(source.sidecar.sha256, clips_identity(calib, source.preprocessing), config.method, options)
    cache = config.cache
    ranges = load_ranges(cache, key) if cache is not None else None
    use = CacheUse(str(cache) if cache else None, key, ranges is not None)
    if ranges is None:
        reader = ClipReader(calib, source.preprocessing, source.input_name, batch_size=config.batch_size,
                            progress=progress)
        reader.arrays()
        ranges = compute_ranges(graph, reader, config.method, workdir=work, progress=progress)
        if cache is not None:
            save_ranges(cache, key, ranges, meta={
                "model": str(source.path), "graph_sha256": source.sidecar.sha256, "data": calib.source,
                "clips": len(calib), "seed": config.seed, "method": config.method, "options": options,
            })
    return ranges, use


def _quantize_within_budget(
    quantize: Callable[[Collection[str]], Quantized], fmodel: onnx.ModelProto, source: _FloatArtifact, clips: _Clips,
    config: CalibrationConfig, progress: Progress | None,
) -> tuple[Quantized, Search | None, HeldOutAccuracy | None]:
    """The INT8 graph: everything quantizable quantized when there are no held-out clips, else the exclusion
    search's graph (calibration.sensitivity) with its accuracy on them."""
    held = clips.held
    if held is None:
        return quantize([]), None, None
    reader = ClipReader(held, source.preprocessing, source.input_name, batch_size=config.batch_size,
                        progress=progress)
    x, labels = reader.arrays(), reader.labels
    reference = graph_scores(fmodel, x, threads=config.threads)
    search = search_float_groups(quantize, fmodel, x, reference, labels, max_drop=clips.max_drop,
                                 threads=config.threads, progress=progress)
    result, fp32, max_drop = search.result, search.fp32, clips.max_drop
    accuracy = HeldOutAccuracy(
        clips=len(held), data=held.source, fp32_top1=fp32.top1, int8_top1=result.top1,
        drop=fp32.top1 - result.top1, lost=result.lost, agreement=result.agreement, error=result.error,
        max_drop=max_drop, points_per_clip=100.0 / len(held),
        within_budget=None if max_drop is None else bool(result.lost <= max_drop),
        overlap_with_calibration=len({r.path for r in held.records} & {r.path for r in clips.calib.records}),
    )
    return search.graph, search, accuracy


def _kept_in_float(forced: dict[str, str], search: Search | None, max_drop: float | None) -> list[KeptInFloat]:
    """Every node left in float: those the target or `exclude` force, then those of the groups the search chose,
    each with the reason."""
    excluded = [KeptInFloat(n, None, r) for n, r in sorted(forced.items())]
    if search is None:
        return excluded
    rank = {s.group: (i + 1, s) for i, s in enumerate(search.sensitivity)}
    for g in search.float_groups:
        k, sens = rank[g.name]
        reason = (f"sensitivity rank {k} ({g.role}): quantized alone it gives score error {sens.error:.4f}, "
                  f"top-1 {sens.top1:.1f}%; kept in float to hold the {max_drop}-point budget")
        excluded += [KeptInFloat(n, g.name, reason) for n in g.nodes if n not in forced]
    return excluded


def calibrate(
    model: Path, out: Path, config: CalibrationConfig, *, graph_passes: GraphPasses | None = None,
    force: bool = False, progress: Progress | None = None,
) -> CalibrationResult:
    """Quantize the float ONNX artifact `model` to an INT8 Q/DQ graph `out` as `config` says (see the module
    docstring); writes its sidecar, the JSON report and the TensorRT calibration table beside it.

    graph_passes: applied to the float graph before everything else (e.g. `export.passes.run_passes`: the INT8
    graph is then calibrated and quantized on the standard-op graph). force: overwrite the three outputs.
    """
    started = time.perf_counter()
    model, out = Path(model), Path(out)
    report_path, table_path = report_paths(out)
    for path in (out, report_path, table_path):
        check_writable(path, force)
    if out.resolve() == model.resolve():
        raise ArtifactError(f"{out}: the INT8 graph cannot overwrite its float parent")
    source = _read_float_artifact(model)
    clips = _choose_clips(config, source.sidecar)
    target = TARGETS[config.target]
    with tempfile.TemporaryDirectory(prefix="aarm-calibrate-") as tmp:
        work = Path(tmp)
        graph, fmodel, passes_run = _float_graph(source, config, graph_passes, work)
        ranges, cache_use = _ranges(graph, source, clips.calib, config, passes_run, work, progress)
        # Before the target's rewrites: their depthwise bias convs are fast in int8, unlike the grouped ones kept.
        forced = {**match_nodes(fmodel, config.exclude), **slow_int8_nodes(fmodel, config.target)}
        fmodel, rewritten = target_graph(fmodel, config.target)  # same tensor names: the ranges (and cache) apply
        if rewritten:
            graph = work / "rewritten.onnx"
            onnx.save_model(fmodel, str(graph))
        count = itertools.count()

        def quantize(extra: Collection[str]) -> Quantized:
            path = work / f"int8-{next(count)}.onnx"
            return Quantized(path, quantize_graph(
                graph, path, ranges, target=config.target, method=config.method, exclude=set(forced) | set(extra),
                per_channel=config.per_channel, reduce_range=config.reduce_range, float_model=fmodel))

        quantized, search, accuracy = _quantize_within_budget(quantize, fmodel, source, clips, config, progress)
        qpath, qmodel = quantized.path, quantized.model
        excluded = _kept_in_float(forced, search, clips.max_drop)
        report = CalibrationReport(
            model=str(model), output=str(out), target=config.target, target_description=target.description,
            method=config.method,
            quantization=QuantizationSummary(
                format="QDQ", activation_type=_TYPE_NAMES[target.activation_type],
                weight_type=_TYPE_NAMES[target.weight_type], per_channel=config.per_channel,
                reduce_range=config.reduce_range, extra_options=target.extra_options, preprocessed=config.preprocess,
                graph_passes=passes_run, quantized_nodes=len(quantized_nodes(qmodel)),
                qdq_nodes=sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in qmodel.graph.node),
            ),
            calibration=CalibrationData(clips.calib.source, len(clips.calib), config.seed, config.batch_size,
                                        cache_use, CALIBRATOR_OPTIONS[config.method]),
            accuracy=accuracy, budget_note=clips.budget_note, excluded=excluded,
            session=_check_session(qpath, qmodel, excluded, target=config.target, threads=config.threads),
            float_groups=[g.name for g in search.float_groups] if search else [],
            sensitivity=search.sensitivity if search else [], search=search.steps if search else [],
            table=str(table_path), seconds=round(time.perf_counter() - started, 2),
        )
        with atomic_path(out) as dst:
            shutil.copyfile(qpath, dst)
    report_json = report.to_json()
    child = source.sidecar.derive(
        stage="calibrate", precision="int8", parent=str(model), parent_sha256=source.sidecar.sha256,
        extra={**source.sidecar.extra, "int8": {
            "target": config.target, "method": config.method, "clips": len(clips.calib), "seed": config.seed,
            "calibration_data": clips.calib.source, "activation_type": report.quantization.activation_type,
            "weight_type": report.quantization.weight_type, "per_channel": config.per_channel,
            "excluded": report_json["excluded"], "accuracy": report_json["accuracy"],
            "budget_note": clips.budget_note, "graph_passes": passes_run, "report": report_path.name,
        }},
    )
    write_sidecar(out, child)  # the parent's sha256 is the one read_sidecar verified: the file is hashed once
    write_tensorrt_table(ranges, table_path)
    write_json(report_path, report_json)
    return CalibrationResult(out, child, report_path, table_path, report)


def _check_session(
    qpath: Path, qmodel: onnx.ModelProto, excluded: list[KeptInFloat], *, target: str, threads: int
) -> SessionCheck:
    """For the cpu target: trace every kept-in-float node in the optimised onnxruntime session (each entry of
    `excluded` gets `in_session`); a node the session runs quantized is an ArtifactError. Returns the summary
    for the report: op counts of the session graph and the float / unknown node names."""
    if target != "cpu":
        return SessionCheck(False, reason=f"the {target} target runs elsewhere than onnxruntime CPU")
    session = session_graph(qpath, threads=threads)
    verdicts = session_precisions(qmodel, session, [e.node for e in excluded])
    for e in excluded:
        e.in_session = verdicts[e.node]
    quantized = [e for e in excluded if e.in_session == "int8"]
    if quantized:
        names = ", ".join(e.node for e in quantized[:5])
        raise ArtifactError(
            f"{len(quantized)} node(s) kept in float run quantized in onnxruntime's optimised session ({names}); "
            "quantize the standard-op graph (`optimize_onnx`, or calibrate with `graph_passes`)")
    ops = Counter(n.op_type for n in session.graph.node)
    return SessionCheck(
        True, float_nodes=[e.node for e in excluded if e.in_session == "float"],
        unknown=[e.node for e in excluded if e.in_session == "unknown"],
        int8_kernels=sum(v for k, v in ops.items() if k in SESSION_INT8_OPS - QDQ_OPS), ops=dict(sorted(ops.items())),
    )

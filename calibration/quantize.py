"""INT8 post-training quantization: a Q/DQ graph from onnxruntime's `quantize_static`, calibrated on real clips,
shaped for where it runs, with the layers that cost accuracy kept in float.

    result = calibrate(Path("model.onnx"), Path("model.int8.onnx"), data=Path("UCF101"), target="tensorrt")

Targets (DESIGN, "TensorRT as it is today"):
- `tensorrt`: symmetric int8 activations and weights (zero points 0, as TensorRT's explicit quantization
  needs), per-channel weights along the output channel, biases left in float (TensorRT fuses them itself and
  its DequantizeLinear takes no int32).
- `cpu`: unsigned 8-bit activations and int8 per-channel weights, which onnxruntime's CPU kernels run
  fastest. Convolutions with at most 2 input channels per group (AARM's STAM convs on a one-channel map,
  the channel-wise fusion conv) stay in float: onnxruntime's int8 kernels are several times slower than
  its float ones on them.

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
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper
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

from aarm.errors import ArtifactError, ConfigError, DataError
from aarm.fileio import atomic_path, check_writable, write_json
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
from calibration.sensitivity import QDQ_OPS, float_variant, graph_scores, quantized_nodes, search_float_groups
from runtime.artifact import Sidecar, file_sha256, read_sidecar, write_sidecar
from runtime.onnx_file import load_onnx

ProgressFn = Callable[[str, int, int], None]
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
    float_conv_max_group_channels: int  # Conv with at most this many input channels per group stays float
    description: str

    @property
    def extra_options(self) -> dict[str, Any]:
        return dict(self.options)


TARGETS = {
    "cpu": Target(
        "cpu", QuantType.QUInt8, QuantType.QInt8, (("WeightSymmetric", True),), 2,
        "onnxruntime CPU: uint8 activations, int8 per-channel weights",
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
    progress: ProgressFn | None = None,
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
        raise ArtifactError(f"{method} calibration of {graph} failed ({exc}); try another --method") from None
    finally:
        reader.rewind()
    return ranges


def quantize_graph(
    graph: Path, out: Path, ranges: TensorsData, *, target: str, method: str, exclude: Collection[str] = (),
    per_channel: bool = True, reduce_range: bool = False,
) -> Path:
    """A QDQ graph of `graph` (pre-processed) from precomputed ranges: quantize_static reads them from a
    calibration cache file, so it runs no calibration itself. `exclude`: node names kept in float; where
    quantize_static still feeds one of them from a DequantizeLinear (a tensor that a quantized Reshape or
    Concat passes on), it is rewired to the float tensor, so excluded nodes read and compute float only."""
    _check_choice(target, TARGETS, "target")
    _check_choice(method, METHODS, "calibration method")
    t = TARGETS[target]
    with tempfile.TemporaryDirectory(prefix="aarm-quant-") as tmp:
        ranges_file = Path(tmp) / "ranges.json"
        save_tensors_data(ranges, ranges_file)
        with _quiet():
            quantize_static(
                str(graph), str(out), None, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                reduce_range=reduce_range, activation_type=t.activation_type, weight_type=t.weight_type,
                nodes_to_exclude=sorted(exclude), calibrate_method=METHODS[method],
                extra_options=t.extra_options, calibration_cache_path=ranges_file,
            )
    if exclude:
        qmodel = load_onnx(out)
        fed = {n.name for n in quantized_nodes(qmodel)} & set(exclude)
        if fed:
            onnx.save(float_variant(qmodel, load_onnx(graph), fed), str(out))
    return out


def slow_int8_nodes(model: onnx.ModelProto, target: str) -> dict[str, str]:
    """Nodes the target keeps in float for speed, with the reason: Conv whose weight has at most
    `float_conv_max_group_channels` input channels per group."""
    limit = TARGETS[target].float_conv_max_group_channels
    if limit <= 0:
        return {}
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    slow = {}
    for node in model.graph.node:
        if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in weights:
            per_group = weights[node.input[1]][1]
            if per_group <= limit:
                slow[node.name] = (f"{target} target: Conv with {per_group} input channel(s) per group runs slower "
                                   "in int8 than in float on onnxruntime CPU")
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
    producer = {o: n for n in session.graph.node for o in n.output if o}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in session.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    initializers = {t.name for t in qmodel.graph.initializer} | {t.name for t in session.graph.initializer}
    by_name = {n.name: n for n in qmodel.graph.node}

    def compute_producer(tensor: str) -> onnx.NodeProto | None:
        node = producer.get(tensor)
        while node is not None and node.op_type in _SESSION_LAYOUT_OPS and node.input:
            node = producer.get(node.input[0])
        return node

    def compute_readers(tensor: str) -> list[onnx.NodeProto]:
        found, frontier = [], [tensor]
        for _ in range(4):
            nxt = []
            for t in frontier:
                for n in readers.get(t, []):
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
        made = compute_producer(node.output[0]) if node.output else None
        if made is not None:
            verdicts[name] = "int8" if made.op_type in SESSION_INT8_OPS else "float"
            continue
        data = [i for i in node.input if i and i not in initializers]
        found = [r for i in data for r in compute_readers(i)]
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
            raise ArtifactError(f"--exclude {pattern!r} matches no node (by node name, glob or module path) of the "
                                f"graph; its nodes are named like {sample}")
        for hit in hits:
            matched.setdefault(hit, f"requested (--exclude {pattern})")
    return matched


# ---------------------------------------------------------------------------------------------- calibrate


@dataclass
class CalibrationResult:
    """What `calibrate` wrote, and its report (also saved as JSON beside the graph)."""

    output: Path
    sidecar: Sidecar
    report_path: Path
    table_path: Path
    report: dict[str, Any] = field(default_factory=dict)


def report_paths(out: Path) -> tuple[Path, Path]:
    """The JSON report and the TensorRT calibration table written beside `out` (model.int8.onnx ->
    model.int8.calibration.json, model.int8.calibration.cache)."""
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    return out.with_name(f"{stem}.calibration.json"), out.with_name(f"{stem}.calibration.cache")


def _held_out(
    data: Path, eval_data: Path | None, calib: ClipSet, *, split: int, count: int | None, seed: int,
) -> ClipSet | None:
    """Labelled held-out clips: the test subset of `eval_data`, else of the calibration dataset."""
    if eval_data is not None:
        found = find_clips(eval_data, split=split, subset="test")
    elif calib.labelled:
        found = find_clips(data, split=split, subset="test")
    else:
        return None
    if not found.labelled:
        return None
    return choose_clips(found, count, seed=seed)


def _classes_match(clips: ClipSet, sidecar: Sidecar, what: str) -> None:
    if clips.labelled and clips.classes != sidecar.classes:
        raise DataError(f"{what} {clips.source}: its {len(clips.classes)} classes differ from the model's "
                        f"{len(sidecar.classes)} ({clips.classes[:3]}... vs {sidecar.classes[:3]}...)")


def calibrate(
    model: Path, out: Path, *, data: Path, split: int = 1, clips: int | None = 64, method: str = "percentile",
    target: str = "cpu", max_drop: float | None = DEFAULT_MAX_DROP, eval_data: Path | None = None,
    eval_clips: int | None = 256, exclude: Sequence[str] = (), cache: Path | None = None, seed: int = 0,
    batch_size: int = 8, per_channel: bool = True, reduce_range: bool = False, preprocess: bool = True,
    threads: int = 0, graph_passes: GraphPasses | None = None, require_labels: bool = True, force: bool = False,
    progress: ProgressFn | None = None,
) -> CalibrationResult:
    """Quantize the float ONNX artifact `model` to an INT8 Q/DQ graph `out` (see the module docstring).

    data: a dataset (its `split` train subset calibrates) or a folder of videos; clips: how many (seed picks
    which); eval_data: labelled held-out clips (default: the dataset's test subset), eval_clips of them;
    max_drop: top-1 points the INT8 graph may lose against the float graph on them, counting only clips the
    float graph gets right and INT8 wrong (None: no search, just report); exclude: node names / globs /
    module paths kept in float; cache: JSON calibration cache; graph_passes: applied to the float graph before
    everything else (e.g. `export.passes.run_passes`: the INT8 graph is then calibrated and quantized on the
    standard-op graph); require_labels: False lets calibration without labelled held-out clips run with no
    accuracy budget (reported as such) instead of refusing max_drop.
    """
    started = time.perf_counter()
    _check_choice(method, METHODS, "calibration method")
    _check_choice(target, TARGETS, "target")
    model, out = Path(model), Path(out)
    report_path, table_path = report_paths(out)
    for path in (out, report_path, table_path):
        check_writable(path, force)
    if out.resolve() == model.resolve():
        raise ArtifactError(f"{out}: the INT8 graph cannot overwrite its float parent")
    sidecar = read_sidecar(model)
    if sidecar.kind != "onnx" or sidecar.precision != "fp32":
        raise ArtifactError(f"{model}: INT8 calibration takes a float32 ONNX graph, this is {sidecar.kind} "
                            f"{sidecar.precision}")
    fmodel_raw = load_onnx(model)
    custom = next((n for n in fmodel_raw.graph.node if n.domain not in ("", "ai.onnx")), None)
    if custom is not None:
        raise ArtifactError(f"{model}: node {custom.name or custom.op_type} is a custom op ({custom.domain}); "
                            "quantize the standard-op graph (optimized without kernels)")
    prep = sidecar_preprocessing(sidecar, fmodel_raw)
    input_name, _ = graph_input(fmodel_raw)

    calib = choose_clips(find_clips(data, split=split, subset="train"), clips, seed=seed)
    _classes_match(calib, sidecar, "calibration data")
    held = _held_out(data, eval_data, calib, split=split, count=eval_clips, seed=seed)
    if held is not None:
        _classes_match(held, sidecar, "held-out data")
    budget_note = None
    if max_drop is not None and held is None and not require_labels:
        budget_note = (f"no accuracy budget: {calib.source} has no labelled held-out clips, so INT8 accuracy is not "
                       "checked (pass --eval-data with labelled clips to check it)")
        max_drop = None
    elif max_drop is not None and held is None:
        raise DataError(f"an accuracy budget (--max-drop) needs labelled held-out clips; {calib.source} has "
                        "no test subset with labels: pass --eval-data")

    with tempfile.TemporaryDirectory(prefix="aarm-calibrate-") as tmp:
        work = Path(tmp)
        source, passes_run = model, []
        if graph_passes is not None:
            passed, rows = graph_passes(fmodel_raw)
            passes_run = [r["pass"] for r in rows[1:]]
            source = work / "passes.onnx"
            onnx.save_model(passed, str(source))
        graph = prepare_graph(source, work / "prepared.onnx") if preprocess else source
        fmodel = load_onnx(graph)

        # Ranges: from the cache, else from the calibrator (then cached).
        reader = ClipReader(calib, prep, input_name, batch_size=batch_size, progress=progress)
        identity = clips_identity(calib, prep)
        options = {"calibrator": CALIBRATOR_OPTIONS[method], "preprocess": preprocess,
                   **({"graph_passes": passes_run} if passes_run else {})}
        key = cache_key(file_sha256(model), identity, method, options)
        ranges = load_ranges(cache, key) if cache is not None else None
        cache_hit = ranges is not None
        if ranges is None:
            reader.arrays()
            ranges = compute_ranges(graph, reader, method, workdir=work, progress=progress)
            if cache is not None:
                save_ranges(cache, key, ranges, meta={
                    "model": str(model), "graph_sha256": file_sha256(model), "data": calib.source,
                    "clips": len(calib), "seed": seed, "method": method, "options": options,
                })

        forced = {**match_nodes(fmodel, exclude), **slow_int8_nodes(fmodel, target)}

        count = itertools.count()

        def quantize(extra: Collection[str]) -> Path:
            path = work / f"int8-{next(count)}.onnx"
            quantize_graph(graph, path, ranges, target=target, method=method, exclude=set(forced) | set(extra),
                           per_channel=per_channel, reduce_range=reduce_range)
            return path

        accuracy: dict[str, Any] | None = None
        if held is None:
            search = None
            qpath = quantize([])
        else:
            hreader = ClipReader(held, prep, input_name, batch_size=batch_size, progress=progress)
            x, labels = hreader.arrays(), hreader.labels
            reference = graph_scores(fmodel, x, threads=threads)
            search = search_float_groups(quantize, fmodel, x, reference, labels, max_drop=max_drop, threads=threads,
                                         progress=progress)
            qpath, result, fp32 = search.graph, search.result, search.fp32
            accuracy = {
                "clips": len(held), "data": held.source, "fp32_top1": fp32.top1, "int8_top1": result.top1,
                "drop": fp32.top1 - result.top1, "lost": result.lost, "agreement": result.agreement,
                "error": result.error, "max_drop": max_drop, "points_per_clip": 100.0 / len(held),
                "within_budget": None if max_drop is None else bool(result.lost <= max_drop),
                "overlap_with_calibration": len({r.path for r in held.records} & {r.path for r in calib.records}),
            }
        chosen = search.float_groups if search else []
        sensitivity = [s.to_dict() for s in search.sensitivity] if search else []

        qmodel = load_onnx(qpath)
        rank = {s["group"]: (i + 1, s) for i, s in enumerate(sensitivity)}
        excluded = [{"node": n, "group": None, "reason": r} for n, r in sorted(forced.items())]
        for g in chosen:
            k, sens = rank[g.name]
            reason = (f"sensitivity rank {k} ({g.role}): quantized alone it gives score error {sens['error']:.4f}, "
                      f"top-1 {sens['top1']:.1f}%; kept in float to hold the {max_drop}-point budget")
            excluded += [{"node": n, "group": g.name, "reason": reason} for n in g.nodes if n not in forced]
        session_check = _check_session(qpath, qmodel, excluded, target=target, threads=threads)
        t = TARGETS[target]
        report = {
            "model": str(model), "output": str(out), "target": target, "target_description": t.description,
            "method": method,
            "quantization": {
                "format": "QDQ", "activation_type": _TYPE_NAMES[t.activation_type],
                "weight_type": _TYPE_NAMES[t.weight_type], "per_channel": per_channel, "reduce_range": reduce_range,
                "extra_options": t.extra_options, "preprocessed": preprocess, "graph_passes": passes_run,
                "quantized_nodes": len(quantized_nodes(qmodel)),
                "qdq_nodes": sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in qmodel.graph.node),
            },
            "calibration": {
                "data": calib.source, "clips": len(calib), "seed": seed, "batch_size": batch_size,
                "cache": {"path": str(cache) if cache else None, "key": key, "hit": cache_hit},
                "calibrator_options": CALIBRATOR_OPTIONS[method],
            },
            "accuracy": accuracy, "budget_note": budget_note, "excluded": excluded, "session": session_check,
            "float_groups": [g.name for g in chosen],
            "sensitivity": sensitivity, "search": search.steps if search else [],
            "table": str(table_path), "seconds": round(time.perf_counter() - started, 2),
        }
        with atomic_path(out) as dst:
            shutil.copyfile(qpath, dst)
    child = sidecar.derive(
        stage="calibrate", precision="int8",
        extra={**sidecar.extra, "int8": {
            "target": target, "method": method, "clips": len(calib), "seed": seed, "calibration_data": calib.source,
            "activation_type": report["quantization"]["activation_type"],
            "weight_type": report["quantization"]["weight_type"], "per_channel": per_channel,
            "excluded": excluded, "accuracy": accuracy, "budget_note": budget_note, "graph_passes": passes_run,
            "report": report_path.name,
        }},
    )
    write_sidecar(out, child, parent=model)
    write_tensorrt_table(ranges, table_path)
    write_json(report_path, report)
    return CalibrationResult(out, child, report_path, table_path, report)


def _check_session(
    qpath: Path, qmodel: onnx.ModelProto, excluded: list[dict[str, Any]], *, target: str, threads: int
) -> dict[str, Any]:
    """For the cpu target: trace every kept-in-float node in the optimised onnxruntime session (each entry of
    `excluded` gets "in_session"); a node the session runs quantized is an ArtifactError. Returns the summary
    for the report: op counts of the session graph and the float / unknown node names."""
    if target != "cpu":
        return {"checked": False, "reason": f"the {target} target runs elsewhere than onnxruntime CPU"}
    session = session_graph(qpath, threads=threads)
    verdicts = session_precisions(qmodel, session, [e["node"] for e in excluded])
    for e in excluded:
        e["in_session"] = verdicts[e["node"]]
    quantized = [e for e in excluded if e["in_session"] == "int8"]
    if quantized:
        names = ", ".join(e["node"] for e in quantized[:5])
        raise ArtifactError(
            f"{len(quantized)} node(s) kept in float run quantized in onnxruntime's optimised session ({names}); "
            "quantize the standard-op graph (aarm-export optimize, or calibrate with the graph passes)")
    ops: dict[str, int] = {}
    for n in session.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    return {
        "checked": True, "optimization": "all",
        "float": [e["node"] for e in excluded if e["in_session"] == "float"],
        "unknown": [e["node"] for e in excluded if e["in_session"] == "unknown"],
        "int8_kernels": sum(v for k, v in ops.items() if k in SESSION_INT8_OPS - QDQ_OPS),
        "ops": dict(sorted(ops.items())),
    }


def zero_points(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The zero point of every QuantizeLinear / DequantizeLinear node (node name -> array), as stored."""
    inits = {t.name: t for t in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2 and node.input[2] in inits:
            out[node.name] = numpy_helper.to_array(inits[node.input[2]])
    return out

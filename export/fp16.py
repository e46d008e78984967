"""FP32 -> FP16 ONNX graphs with onnxconverter-common, float32 at the graph's edges.

    sidecar = convert_onnx("model.opt.onnx", "model.fp16.onnx")

Weights and activations become float16 except in the ops of `FP32_OPS`: reductions and global pools
(sums over thousands of values lose precision in half), the sigmoid gates of CAM / STAM / VCM (their
outputs multiply whole feature maps) and softmax. Inputs and outputs stay float32 (`keep_io_types`), so
the graph is a drop-in replacement for its parent. This is the graph TensorRT builds as a strongly typed
FP16 network.
"""

import warnings
from collections.abc import Sequence
from pathlib import Path

import onnx
from onnxconverter_common import float16

from aarm.fileio import atomic_path, check_writable
from runtime.artifact import Sidecar, read_sidecar, write_sidecar
from runtime.errors import ArtifactError
from runtime.graph_precision import producers
from runtime.onnx_file import load_onnx

FP32_OPS: tuple[str, ...] = (
    "ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum",
    "ReduceLogSumExp", "ReduceSumSquare", "GlobalAveragePool", "GlobalMaxPool", "Sigmoid", "Softmax", "LogSoftmax",
)
PRECISIONS = ("fp16",)


def convert_fp16_model(model: onnx.ModelProto, *, keep_fp32: Sequence[str] = FP32_OPS) -> onnx.ModelProto:
    """A float16 copy of `model` with float32 inputs/outputs; ops named in `keep_fp32` (and any custom-domain
    op, whose kernels are float32) keep float32 with casts around them."""
    custom = sorted({n.op_type for n in model.graph.node if n.domain not in ("", "ai.onnx")})
    block = sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(keep_fp32) | set(custom))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one warning per weight clipped to the float16 range
        try:
            converted = float16.convert_float_to_float16(
                model, keep_io_types=True, op_block_list=block, disable_shape_infer=False
            )
        except Exception as exc:  # onnxconverter-common raises ValueError / RuntimeError / onnx errors
            raise ArtifactError(f"float16 conversion failed: {str(exc).splitlines()[0]}") from None
    _float32_outputs(converted)
    try:
        onnx.checker.check_model(converted, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ArtifactError(f"float16 graph fails onnx's checker: {str(exc).splitlines()[0]}") from None
    return converted


def _float32_outputs(model: onnx.ModelProto) -> None:
    """Make every graph output float32. onnxconverter-common leaves an output float16 when the op producing
    it is kept in float32 (TSN's consensus ReduceMean): it casts that op's result back to float16 after it.
    Such a trailing Cast becomes a cast to float32; any other float16 output gets a Cast appended."""
    made_by = producers(model.graph.node)
    for value in model.graph.output:
        tensor_type = value.type.tensor_type
        if tensor_type.elem_type != onnx.TensorProto.FLOAT16:
            continue
        node = made_by.get(value.name)
        if node is not None and node.op_type == "Cast":
            for attr in node.attribute:
                if attr.name == "to":
                    attr.i = onnx.TensorProto.FLOAT
        else:
            half = f"{value.name}_float16"
            for n in model.graph.node:
                n.output[:] = [half if o == value.name else o for o in n.output]
                n.input[:] = [half if i == value.name else i for i in n.input]
            model.graph.node.append(onnx.helper.make_node("Cast", [half], [value.name], to=onnx.TensorProto.FLOAT,
                                                          name=f"{value.name}_to_float32"))
        tensor_type.elem_type = onnx.TensorProto.FLOAT


def convert_onnx(
    src: str | Path,
    out: str | Path,
    *,
    precision: str = "fp16",
    keep_fp32: Sequence[str] = FP32_OPS,
    force: bool = False,
) -> Sidecar:
    """Convert an fp32 graph file (exported or optimised) to `precision` into `out` (atomic), with a sidecar
    derived from the source's (stage "convert", parent = source path and sha256)."""
    src, out = Path(src), Path(out)
    if precision not in PRECISIONS:
        raise ArtifactError(f"precision must be one of {', '.join(PRECISIONS)} (INT8 comes from calibration), "
                            f"got {precision!r}")
    check_writable(out, force)
    parent = read_sidecar(src)
    if parent.kind != "onnx" or parent.precision != "fp32":
        raise ArtifactError(f"{src}: convert takes an fp32 ONNX graph, this one is {parent.kind} {parent.precision}")
    model = convert_fp16_model(load_onnx(src), keep_fp32=keep_fp32)
    with atomic_path(out) as tmp:
        onnx.save_model(model, str(tmp))
    sidecar = parent.derive(
        stage="convert", precision=precision,
        extra={**parent.extra, "fp32_ops": list(keep_fp32), "io_dtype": "float32"},
    )
    write_sidecar(out, sidecar, parent=src)
    return sidecar

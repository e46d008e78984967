"""Graph passes over an exported AARM graph (onnx-graphsurgeon): each takes and returns a `gs.Graph`, matches
with tensors' `inputs` / `outputs`, builds with `Graph.layer`, and is registered by name in `REWRITES`.

    optimize_onnx("model.onnx", "model.opt.onnx")        # every default pass, sidecar derived from the parent

Passes, in the order `DEFAULT_PASSES` runs them; all match by op pattern, never by tensor name:
- `fold_constants`: onnx-graphsurgeon's constant folding (shape arithmetic too), then cleanup.
- `remove_noops`: Identity, eval-mode Dropout, Mul/Div by 1, Add/Sub of 0, Reshape to the same shape, Cast
  to the same type, Transpose with the identity permutation.
- `rewrite_channel_fusion`: AARM's parallel fusion, exported as an interleaving stack (Unsqueeze x2 ->
  Concat(axis 2) -> Reshape to 2C channels) and a grouped 1x1 Conv (groups = C), becomes
  `M * (w1*F_ch + w2*F_st) + b` when both operands are gated copies of one map M (no 2C-channel tensor;
  w1 scales the small (N, C, 1, 1) channel gate), else `w1*A + w2*B + b`.
- `global_pools`: ReduceMean / ReduceMax over every spatial axis (keepdims) -> GlobalAveragePool /
  GlobalMaxPool, which onnxruntime's CPU provider runs in its blocked NCHWc layout straight from the
  producing convolution.
- `blocked_gates` (`OPTIMIZE_PASSES`, what `optimize` runs without kernels): the fusion's spatial gate term and
  bias as 1x1 convs, so onnxruntime's NCHWc layout holds through the gate, residual Add and ReLU.
- `fuse_aarm_kernels` (only with `kernels=True`): the rewritten AARM block -> the fused CPU custom ops
  of `export.kernels` (see there); the standard-op graph stays the portable artifact.

What pays, measured with benchmarks/bench_export.py (AARM-ResNet-50, batch 8 x 224x224, onnxruntime CPU,
2 shared cores, three runs): AARM's overhead over the plain ResNet-50 graph is +38..57% as exported,
+28..34% with the standard-op passes (onnxruntime's NCHWc layout still has to be left for the broadcast
gates and STAM's channel reductions: every big-tensor op is a memory pass), and +12% with the fused
kernels, which read M once for the four poolings and write the block's output once (gate, bias, residual
and ReLU in one pass).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from aarm.fileio import atomic_path, check_writable
from runtime.artifact import Sidecar, read_sidecar, write_sidecar
from runtime.errors import ArtifactError
from runtime.onnx_file import load_onnx

Pass = Callable[[gs.Graph], gs.Graph]
REWRITES: dict[str, Pass] = {}  # every pass by name, the name the pass rows and the sidecar's "passes" record


def rewrite(fn: Pass) -> Pass:
    """Register a graph pass under its function's name."""
    REWRITES[fn.__name__] = fn
    return fn


# ------------------------------------------------------------------------------------------------- helpers


def _producer(tensor: gs.Tensor) -> gs.Node | None:
    return tensor.inputs[0] if len(tensor.inputs) == 1 else None


def _const(tensor: gs.Tensor) -> np.ndarray | None:
    """The value of a Constant tensor or of a Constant node's output, else None."""
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    node = _producer(tensor)
    if node is not None and node.op == "Constant" and "value" in node.attrs:
        value = node.attrs["value"]
        return np.asarray(value.values if isinstance(value, gs.Constant) else value)
    return None


def _rank(tensor: gs.Tensor) -> int | None:
    return len(tensor.shape) if tensor.shape is not None else None


def _same_dims(a: Sequence[Any] | None, b: Sequence[Any] | None) -> bool:
    """Shapes known to be equal: same rank, each dim the same int or the same symbolic name."""
    if a is None or b is None or len(a) != len(b):
        return False
    return all(isinstance(x, int | np.integer | str) and x == y for x, y in zip(a, b, strict=True))


def _keeps_shape(constant: np.ndarray, other: gs.Tensor) -> bool:
    """Whether broadcasting `constant` against `other` leaves `other`'s shape unchanged."""
    if constant.ndim == 0:
        return True
    shape = other.shape
    if shape is None or constant.ndim > len(shape):
        return False
    for c, d in zip(constant.shape[::-1], list(shape)[::-1], strict=False):
        if c != 1 and not (isinstance(d, int | np.integer) and c == d):
            return False
    return True


def _bypass(graph: gs.Graph, node: gs.Node, keep: gs.Tensor) -> bool:
    """Remove `node`, wiring its consumers (and the graph output it makes) to `keep`. False if it cannot."""
    out = node.outputs[0]
    if out in graph.outputs:
        if keep in graph.inputs or keep in graph.outputs or _producer(keep) is None:
            return False
        _rewire(out, keep)
        node.outputs.clear()
        node.inputs.clear()
        index = graph.outputs.index(out)
        keep.name, keep.dtype, keep.shape = out.name, out.dtype or keep.dtype, out.shape or keep.shape
        graph.outputs[index] = keep
        return True
    _rewire(out, keep)
    node.outputs.clear()
    node.inputs.clear()
    return True


def _rewire(old: gs.Tensor, new: gs.Tensor) -> None:
    """Every node that reads `old` reads `new` instead."""
    for consumer in list(old.outputs):
        for i, t in enumerate(list(consumer.inputs)):
            if t is old:
                consumer.inputs[i] = new


def _axes(node: gs.Node) -> list[int] | None:
    """A reduction's / Unsqueeze's axes, from the attribute (older opsets) or the constant second input."""
    if "axes" in node.attrs:
        return [int(a) for a in node.attrs["axes"]]
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        value = _const(node.inputs[1])
        return None if value is None else [int(a) for a in value.reshape(-1)]
    return None


# --------------------------------------------------------------------------------------------------- passes


@rewrite
def fold_constants(graph: gs.Graph) -> gs.Graph:
    """Fold every subgraph whose inputs are constants (shape arithmetic included) and drop dead nodes."""
    graph.fold_constants(fold_shapes=True, error_ok=True)
    return graph.cleanup().toposort()


@rewrite
def remove_noops(graph: gs.Graph) -> gs.Graph:
    """Bypass nodes that leave their input unchanged (see the module docstring for the list)."""
    for node in list(graph.nodes):
        if not node.inputs or not node.outputs or node.inputs[0] is None:
            continue
        x = node.inputs[0]
        op = node.op
        removable = False
        if op == "Identity":
            removable = True
        elif op == "Dropout":
            has_mode = len(node.inputs) > 2 and node.inputs[2] is not None
            training = _const(node.inputs[2]) if has_mode else np.array(False)
            mask_used = len(node.outputs) > 1 and (node.outputs[1].outputs or node.outputs[1] in graph.outputs)
            removable = training is not None and not bool(training) and not mask_used
        elif op in ("Mul", "Div", "Add", "Sub") and len(node.inputs) == 2:
            neutral = 1.0 if op in ("Mul", "Div") else 0.0
            for data, other in ((0, 1), (1, 0)) if op in ("Mul", "Add") else ((0, 1),):
                value = _const(node.inputs[other])
                neutral_value = value is not None and value.size and np.all(value == neutral)
                if neutral_value and _keeps_shape(value, node.inputs[data]):
                    x, removable = node.inputs[data], True
                    break
        elif op == "Reshape":
            removable = _same_dims(x.shape, node.outputs[0].shape)
        elif op == "Cast":
            to = node.attrs.get("to")
            removable = (
                to is not None and x.dtype is not None and onnx.helper.tensor_dtype_to_np_dtype(int(to)) == x.dtype
            )
        elif op == "Transpose":
            perm = node.attrs.get("perm")
            removable = perm is not None and list(perm) == list(range(len(perm)))
        if removable and not isinstance(x, gs.Constant):
            _bypass(graph, node, x)
    return graph.cleanup().toposort()


@dataclass
class FusionMatch:
    """One channel-wise fusion found in a graph: Y = conv_groups=C(interleave(A, B))."""

    conv: gs.Node
    a: gs.Tensor
    b: gs.Tensor
    w1: np.ndarray  # (C,)
    w2: np.ndarray  # (C,)
    bias: np.ndarray  # (C,)
    extra_nodes: list[gs.Node] = field(default_factory=list)


def _unsqueezed_on(tensor: gs.Tensor, axis: int) -> gs.Tensor | None:
    node = _producer(tensor)
    if node is None or node.op != "Unsqueeze":
        return None
    rank_out = _rank(tensor)
    axes = _axes(node)
    if axes is None or len(axes) != 1:
        return None
    a = axes[0] + rank_out if axes[0] < 0 and rank_out is not None else axes[0]
    return node.inputs[0] if a == axis else None


def find_channel_fusions(graph: gs.Graph) -> list[FusionMatch]:
    """Every grouped 1x1 Conv (groups = C, weight (C, 2, 1, ...)) fed by the interleaving stack of two
    (N, C, *S) tensors: Unsqueeze(axis 2) of each -> Concat(axis 2) -> Reshape to (N, 2C, *S)."""
    found = []
    for conv in graph.nodes:
        if conv.op != "Conv" or len(conv.inputs) < 2:
            continue
        weight = _const(conv.inputs[1])
        group = int(conv.attrs.get("group", 1))
        if weight is None or weight.ndim < 3 or weight.shape[1] != 2 or group != weight.shape[0]:
            continue
        if any(k != 1 for k in weight.shape[2:]) or any(s != 1 for s in conv.attrs.get("strides", [1])):
            continue
        if any(p != 0 for p in conv.attrs.get("pads", [0])) or any(d != 1 for d in conv.attrs.get("dilations", [1])):
            continue
        channels = weight.shape[0]
        reshape = _producer(conv.inputs[0])
        if reshape is None or reshape.op != "Reshape":
            continue
        concat = _producer(reshape.inputs[0])
        if concat is None or concat.op != "Concat" or len(concat.inputs) != 2:
            continue
        stacked_rank = _rank(concat.outputs[0]) or (weight.ndim + 1)
        axis = int(concat.attrs.get("axis", 0))
        axis = axis + stacked_rank if axis < 0 else axis
        if axis != 2:
            continue
        a, b = (_unsqueezed_on(t, 2) for t in concat.inputs)
        if a is None or b is None or not _merges_axes_1_2(reshape, channels, stacked_rank):
            continue
        bias_t = _const(conv.inputs[2]) if len(conv.inputs) > 2 and conv.inputs[2] is not None else None
        w = weight.reshape(channels, 2).astype(np.float32)
        bias = np.zeros(channels, np.float32) if bias_t is None else bias_t.reshape(channels).astype(np.float32)
        found.append(FusionMatch(conv, a, b, w[:, 0].copy(), w[:, 1].copy(), bias))
    return found


def _merges_axes_1_2(reshape: gs.Node, channels: int, stacked_rank: int) -> bool:
    """The Reshape turns (N, C, 2, *S) into (N, 2C, *S): by its inferred output shape or its constant shape."""
    in_shape, out_shape = reshape.inputs[0].shape, reshape.outputs[0].shape
    if in_shape is not None and out_shape is not None and len(out_shape) == stacked_rank - 1:
        return out_shape[1] == 2 * channels and _same_dims(list(in_shape[3:]), list(out_shape[2:]))
    target = _const(reshape.inputs[1]) if len(reshape.inputs) > 1 else None
    if target is None or target.size != stacked_rank - 1 or int(target[1]) != 2 * channels:
        return False
    if in_shape is None:
        return False
    spatial = [int(v) for v in target[2:]]
    if not all(isinstance(d, int | np.integer) for d in in_shape[3:]):
        return False
    return spatial == [int(d) for d in in_shape[3:]]


def _shared_map(a: gs.Tensor, b: gs.Tensor) -> tuple[gs.Tensor, gs.Tensor, gs.Tensor] | None:
    """(g1, g2, m) if a = Mul(g1, m) and b = Mul(g2, m) multiply one and the same tensor m."""
    na, nb = _producer(a), _producer(b)
    if na is None or nb is None or na.op != "Mul" or nb.op != "Mul" or len(na.inputs) != 2 or len(nb.inputs) != 2:
        return None
    shared = [t for t in na.inputs if any(t is u for u in nb.inputs)]
    if len(shared) != 1 or (na.inputs[0] is na.inputs[1]) or (nb.inputs[0] is nb.inputs[1]):
        return None
    m = shared[0]
    g1 = na.inputs[1] if na.inputs[0] is m else na.inputs[0]
    g2 = nb.inputs[1] if nb.inputs[0] is m else nb.inputs[0]
    return g1, g2, m


@rewrite
def rewrite_channel_fusion(graph: gs.Graph) -> gs.Graph:
    """Y = conv_groups=C([A, B] interleaved) -> M*(w1*g1 + w2*g2) + b when A = g1*M and B = g2*M, else
    w1*A + w2*B + b. w1, w2, b are per-channel constants of shape (1, C, 1, ...); a zero bias is dropped."""
    def op(kind: str, inputs: list[gs.Tensor | np.ndarray], out: gs.Tensor | None = None) -> gs.Tensor:
        """One `kind` node (graph.layer names it and its output; numpy inputs become constants)."""
        return graph.layer(op=kind, inputs=inputs, outputs=[out or f"aarm_fusion/{kind.lower()}"])[0]

    for match in find_channel_fusions(graph):
        rank = len(match.a.shape) if match.a.shape is not None else _rank(match.conv.outputs[0]) or 4
        w1, w2, bias = (_per_channel_const(v, rank) for v in (match.w1, match.w2, match.bias))
        y = match.conv.outputs[0]
        match.conv.outputs.clear()
        has_bias = bool(np.any(match.bias != 0))
        shared = _shared_map(match.a, match.b)
        if shared is not None:
            g1, g2, m = shared
            scaled = op("Mul", [m, op("Add", [op("Mul", [g1, w1]), op("Mul", [g2, w2])])], None if has_bias else y)
        else:
            scaled = op("Add", [op("Mul", [match.a, w1]), op("Mul", [match.b, w2])], None if has_bias else y)
        if has_bias:
            op("Add", [scaled, bias], y)
    return graph.cleanup().toposort()


def _per_channel_const(values: np.ndarray, rank: int) -> np.ndarray:
    """C per-channel values as a float32 (1, C, 1, ...) array of `rank` dims, which broadcasts along axis 1."""
    return np.ascontiguousarray(values.reshape((1, values.size) + (1,) * (rank - 2)).astype(np.float32))


@rewrite
def global_pools(graph: gs.Graph) -> gs.Graph:
    """ReduceMean / ReduceMax with keepdims over exactly the spatial axes 2.. of a rank >= 3 tensor ->
    GlobalAveragePool / GlobalMaxPool."""
    for node in graph.nodes:
        if node.op not in ("ReduceMean", "ReduceMax") or not node.inputs:
            continue
        rank = _rank(node.inputs[0])
        axes = _axes(node)
        if rank is None or rank < 3 or axes is None or int(node.attrs.get("keepdims", 1)) != 1:
            continue
        if sorted(a + rank if a < 0 else a for a in axes) != list(range(2, rank)):
            continue
        node.op = "GlobalAveragePool" if node.op == "ReduceMean" else "GlobalMaxPool"
        while len(node.inputs) > 1:
            node.inputs.pop()
        node.attrs.clear()
    return graph.cleanup().toposort()


DEFAULT_PASSES: tuple[Pass, ...] = tuple(REWRITES[name] for name in (
    "fold_constants", "remove_noops", "rewrite_channel_fusion", "global_pools", "remove_noops"))


# ------------------------------------------------------------------------------------------ fused kernels


def _only_consumer(tensor: gs.Tensor, graph: gs.Graph) -> gs.Node | None:
    """The single node reading `tensor`, if exactly one does and it is not a graph output."""
    if len(tensor.outputs) != 1 or tensor in graph.outputs:
        return None
    return tensor.outputs[0]


def _scaled(tensor: gs.Tensor) -> tuple[gs.Tensor, np.ndarray] | None:
    """(x, k) for tensor = Mul(x, k) with a constant k, else (tensor, 1)."""
    node = _producer(tensor)
    if node is not None and node.op == "Mul" and len(node.inputs) == 2:
        for data, other in ((0, 1), (1, 0)):
            value = _const(node.inputs[other])
            if value is not None and _const(node.inputs[data]) is None:
                return node.inputs[data], value.astype(np.float32)
    return tensor, np.ones((), np.float32)


def _mixed_pool(add: gs.Node, m: gs.Tensor, avg_ops: set[str], max_ops: set[str]) -> tuple[float, float] | None:
    """(w_avg, w_max) if `add` = w_avg * AVG(m) + w_max * MAX(m) with scalar weights."""
    if add.op != "Add" or len(add.inputs) != 2:
        return None
    weights: dict[str, float] = {}
    for term in add.inputs:
        x, k = _scaled(term)
        pool = _producer(x)
        if pool is None or k.size != 1 or not pool.inputs or pool.inputs[0] is not m:
            return None
        kind = "avg" if pool.op in avg_ops else "max" if pool.op in max_ops else None
        if kind is None or kind in weights or (pool.op.startswith("Reduce") and not _is_channel_reduce(pool)):
            return None
        weights[kind] = float(k.reshape(-1)[0])
    return (weights["avg"], weights["max"]) if len(weights) == 2 else None


def _is_channel_reduce(node: gs.Node) -> bool:
    return _axes(node) == [1] and int(node.attrs.get("keepdims", 1)) == 1


@rewrite
def fuse_aarm_pools(graph: gs.Graph) -> gs.Graph:
    """CAM's w*GlobalAveragePool(M) + w'*GlobalMaxPool(M) and STAM's w*ReduceMean_C(M) + w'*ReduceMax_C(M)
    -> one com.aarm AarmPool(M) that reads M once. Needs both pools of the same M."""
    from export.kernels import DOMAIN

    for m in [t for t in graph.tensors().values() if isinstance(t, gs.Variable)]:
        global_add = channel_add = None
        for pool in list(m.outputs):
            out = pool.outputs[0] if pool.outputs else None
            mul = _only_consumer(out, graph) if out is not None else None
            add = _only_consumer(mul.outputs[0], graph) if mul is not None and mul.op == "Mul" else None
            if add is None:
                continue
            if pool.op in ("GlobalAveragePool", "GlobalMaxPool"):
                found = _mixed_pool(add, m, {"GlobalAveragePool"}, {"GlobalMaxPool"})
                global_add = (add, found) if found else global_add
            elif pool.op in ("ReduceMean", "ReduceMax"):
                found = _mixed_pool(add, m, {"ReduceMean"}, {"ReduceMax"})
                channel_add = (add, found) if found else channel_add
        if global_add is None or channel_add is None:
            continue
        (g_add, (g_avg, g_max)), (c_add, (c_avg, c_max)) = global_add, channel_add
        outputs = [g_add.outputs[0], c_add.outputs[0]]
        g_add.outputs.clear()
        c_add.outputs.clear()
        graph.layer(op="AarmPool", domain=DOMAIN, inputs=[m], outputs=outputs,
                    attrs={"global_avg": g_avg, "global_max": g_max, "channel_avg": c_avg, "channel_max": c_max})
    return graph.cleanup().toposort()


def _gate_roles(m: gs.Tensor, p: gs.Tensor, q: gs.Tensor) -> tuple[gs.Tensor, gs.Tensor] | None:
    """(channel gate (N, C, 1, ...), spatial gate (N, 1, *S)) among p, q by their inferred shapes."""
    shapes = [t.shape for t in (m, p, q)]
    if any(s is None for s in shapes) or not len(shapes[0]) == len(shapes[1]) == len(shapes[2]):
        return None
    rank, channels = len(shapes[0]), shapes[0][1]

    def channel(s: Sequence[Any]) -> bool:
        return s[1] == channels and all(d == 1 for d in s[2:])

    def spatial(s: Sequence[Any]) -> bool:
        return s[1] == 1 and _same_dims(list(s[2:]), list(shapes[0][2:])) and rank > 2

    if channel(shapes[1]) and spatial(shapes[2]):
        return p, q
    if channel(shapes[2]) and spatial(shapes[1]):
        return q, p
    return None


def _per_channel(value: np.ndarray, channels: int) -> np.ndarray | None:
    """C per-channel values from a scalar or a (1, C, 1, ...) constant (which broadcasts along axis 1)."""
    flat = value.reshape(-1).astype(np.float32)
    if flat.size == 1:
        return np.full(channels, flat[0], np.float32)
    shape = value.shape
    if value.ndim >= 2 and shape[1] == channels and all(d == 1 for i, d in enumerate(shape) if i != 1):
        return flat
    return None


@rewrite
def fuse_aarm_gates(graph: gs.Graph) -> gs.Graph:
    """M * (w1*g_ch + w2*g_st) [+ b] [+ residual] [-> Relu] (the rewritten parallel fusion, with the residual
    block's addition and activation after it) -> one com.aarm AarmGate pass over M."""
    from export.kernels import DOMAIN

    for mul in [n for n in graph.nodes if n.op == "Mul" and len(n.inputs) == 2]:
        if not mul.outputs:
            continue
        for data, other in ((0, 1), (1, 0)):
            m, g = mul.inputs[data], mul.inputs[other]
            add = _producer(g)
            if add is None or add.op != "Add" or len(add.inputs) != 2 or m.shape is None or len(m.shape) < 3:
                continue
            (p, kp), (q, kq) = _scaled(add.inputs[0]), _scaled(add.inputs[1])
            roles = _gate_roles(m, p, q)
            channels = m.shape[1]
            if roles is None or not isinstance(channels, int | np.integer):
                continue
            (g1, k1), (g2, k2) = ((p, kp), (q, kq)) if roles[0] is p else ((q, kq), (p, kp))
            w1, w2 = _per_channel(k1, int(channels)), _per_channel(k2, int(channels))
            if w1 is None or w2 is None:
                continue
            tail, bias, residual, relu = mul.outputs[0], np.zeros(int(channels), np.float32), None, 0
            nxt = _only_consumer(tail, graph)
            if nxt is not None and nxt.op == "Add" and len(nxt.inputs) == 2:
                other_in = nxt.inputs[1] if nxt.inputs[0] is tail else nxt.inputs[0]
                value = _const(other_in)
                b = _per_channel(value, int(channels)) if value is not None else None
                if b is not None:
                    bias, tail = b, nxt.outputs[0]
                    nxt = _only_consumer(tail, graph)
            if nxt is not None and nxt.op == "Add" and len(nxt.inputs) == 2:
                other_in = nxt.inputs[1] if nxt.inputs[0] is tail else nxt.inputs[0]
                if _const(other_in) is None and _same_dims(other_in.shape, m.shape):
                    residual, tail = other_in, nxt.outputs[0]
                    nxt = _only_consumer(tail, graph)
            if nxt is not None and nxt.op == "Relu":
                relu, tail = 1, nxt.outputs[0]
            producer = _producer(tail)
            producer.outputs.clear()
            graph.layer(op="AarmGate", domain=DOMAIN, attrs={"relu": relu},
                        inputs=[m, g1, g2, w1, w2, bias, *([residual] if residual is not None else [])], outputs=[tail])
            break
    return graph.cleanup().toposort()


@rewrite
def fuse_aarm_kernels(graph: gs.Graph) -> gs.Graph:
    """Both kernel fusions: `fuse_aarm_pools`, then `fuse_aarm_gates`."""
    return fuse_aarm_gates(fuse_aarm_pools(graph))


KERNEL_PASSES: tuple[Pass, ...] = (*DEFAULT_PASSES, fuse_aarm_kernels)


# ------------------------------------------------------------------------------ onnxruntime's blocked layout


@rewrite
def blocked_gates(graph: gs.Graph) -> gs.Graph:
    """The rewritten parallel fusion on a 4-D map, M * (G_ch + w2*S) [+ b] (G_ch (N, C, 1, 1), the weighted channel
    gate; S (N, 1, H, W), the spatial gate; w2, b per channel), with w2*S as a 1x1 Conv 1 -> C (weights w2) and + b
    as a depthwise 1x1 Conv (weights 1, bias b): the same products and sums, in ops that onnxruntime's NCHWc
    transformer keeps in its blocked layout (it keeps a Mul or an Add only when every input is blocked, and never
    a Mul or Add with a constant). The map then stays blocked from the block's last convolution through the gate,
    the residual addition (fused into the bias conv) and the ReLU into the next block's convolutions: no
    ReorderInput per block. Only the channel max / mean of STAM still reads M in the plain layout. 3-D maps
    (which the transformer does not block) are left alone; so is the kernel graph (`KERNEL_PASSES`)."""
    for mul in [n for n in graph.nodes if n.op == "Mul" and len(n.inputs) == 2]:
        for data, other in ((0, 1), (1, 0)):
            m, add = mul.inputs[data], _producer(mul.inputs[other])
            if add is None or add.op != "Add" or len(add.inputs) != 2 or _rank(m) != 4:
                continue
            channels = m.shape[1]
            if not isinstance(channels, int | np.integer):
                continue
            channels = int(channels)
            scaled = [_scaled(t) for t in add.inputs]
            roles = _gate_roles(m, scaled[0][0], scaled[1][0])
            spatial = 0 if roles is not None and roles[1] is scaled[0][0] else 1
            w2 = _per_channel(scaled[spatial][1], channels) if roles is not None else None
            term = _producer(add.inputs[spatial])
            if w2 is None or term is None or term.op != "Mul":  # w2*S as exported: a Mul by a constant
                continue
            add.inputs[spatial] = graph.layer(op="Conv", inputs=[scaled[spatial][0], w2.reshape(channels, 1, 1, 1)],
                                              outputs=["aarm_gate/spatial"], attrs={"kernel_shape": [1, 1]})[0]
            nxt = _only_consumer(mul.outputs[0], graph)
            if nxt is not None and nxt.op == "Add" and len(nxt.inputs) == 2:
                value = _const(nxt.inputs[1] if nxt.inputs[0] is mul.outputs[0] else nxt.inputs[0])
                bias = _per_channel(value, channels) if value is not None else None
                if bias is not None:
                    y = nxt.outputs[0]
                    nxt.outputs.clear()
                    graph.layer(op="Conv", inputs=[mul.outputs[0], np.ones((channels, 1, 1, 1), np.float32), bias],
                                outputs=[y], attrs={"kernel_shape": [1, 1], "group": channels})
            break
    return graph.cleanup().toposort()


# What `optimize` writes without --kernels: the portable passes, then the layout rewrite for onnxruntime's CPU
# provider (still standard ops). calibrate's graph passes (`run_passes`) and the kernel graph start from
# DEFAULT_PASSES.
OPTIMIZE_PASSES: tuple[Pass, ...] = (*DEFAULT_PASSES, blocked_gates)


# ---------------------------------------------------------------------------------------------- whole graphs


def _import(model: onnx.ModelProto) -> gs.Graph:
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as exc:  # onnx raises InferenceError / ValidationError subclasses
        raise ArtifactError(f"shape inference failed on the graph: {str(exc).splitlines()[0]}") from None
    return gs.import_onnx(inferred)


def _export(graph: gs.Graph, template: onnx.ModelProto) -> onnx.ModelProto:
    model = gs.export_onnx(graph, do_type_check=True)
    model.ir_version = template.ir_version
    del model.opset_import[:]
    model.opset_import.extend(template.opset_import)
    domains = {n.domain for n in model.graph.node} - {"", "ai.onnx"} - {o.domain for o in model.opset_import}
    for domain in sorted(domains):
        model.opset_import.add(domain=domain, version=1)
    model.producer_name = template.producer_name
    model.metadata_props.extend(template.metadata_props)
    # Shapes inferred afresh (the imported ones are stale after rewrites). Not optional: onnxruntime plans
    # better with them (the symbolic 'K*N' dims); without them the same ResNet-50 convolutions ran 10 %
    # slower (0.91x of the exported graph at 2 threads, 1.01x with them; docs/optimize.md).
    del model.graph.value_info[:]
    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as exc:  # onnx raises InferenceError / ValidationError subclasses
        raise ArtifactError(f"shape inference failed on the optimised graph: {str(exc).splitlines()[0]}") from None


def run_passes(
    model: onnx.ModelProto, passes: Sequence[Pass] = DEFAULT_PASSES
) -> tuple[onnx.ModelProto, list[dict[str, Any]]]:
    """Apply `passes` in order; returns the new model and one row per pass (name, node count after it)."""
    graph = _import(model)
    rows = [{"pass": "(exported)", "nodes": len(graph.nodes)}]
    for fn in passes:
        graph = fn(graph)
        rows.append({"pass": fn.__name__, "nodes": len(graph.nodes)})
    out = _export(graph, model)
    try:
        onnx.checker.check_model(out, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ArtifactError(f"optimised graph fails onnx's checker: {str(exc).splitlines()[0]}") from None
    return out, rows


def optimize_onnx(
    src: str | Path,
    out: str | Path,
    *,
    kernels: bool = False,
    passes: Sequence[Pass] | None = None,
    force: bool = False,
) -> tuple[Sidecar, list[dict[str, Any]]]:
    """Optimise an exported graph file into `out` (atomic) with a sidecar derived from the source's
    (stage "optimize", parent = source path and sha256). Returns the sidecar and the per-pass rows.

    passes: default `OPTIMIZE_PASSES` (standard ops only: runs on any ONNX runtime), or `KERNEL_PASSES`
    with kernels=True: the AARM blocks become `export.kernels`' fused CPU ops; the library is built first
    and recorded in the kernel cache's manifest (runtime.kernel_library), which is what runners load it from;
    the sidecar's `extra["custom_ops"]` only describes it.
    """
    src, out = Path(src), Path(out)
    check_writable(out, force)
    parent = read_sidecar(src)
    if parent.kind != "onnx" or parent.precision != "fp32":
        raise ArtifactError(f"{src}: optimize takes an fp32 ONNX graph, this one is {parent.kind} {parent.precision}")
    extra: dict[str, Any] = dict(parent.extra)
    if kernels:
        from export.kernels import DOMAIN, custom_op_library

        library = custom_op_library()  # BackendUnavailable here, before anything is written
        extra["custom_ops"] = {"domain": DOMAIN, "ops": ["AarmPool", "AarmGate"], "library": str(library)}
    chosen = passes if passes is not None else (KERNEL_PASSES if kernels else OPTIMIZE_PASSES)
    model, rows = run_passes(load_onnx(src), chosen)
    with atomic_path(out) as tmp:
        onnx.save_model(model, str(tmp))
    sidecar = parent.derive(stage="optimize", parent=str(src), parent_sha256=parent.sha256,  # verified on read
                            extra={**extra, "passes": [r["pass"] for r in rows[1:]]})
    write_sidecar(out, sidecar)
    return sidecar, rows

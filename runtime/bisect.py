"""Parity that says where: the first PyTorch module whose output an ONNX artifact does not reproduce.

    result = bisect("model.onnx", model, feed, default_tolerances("fp32"))   # model: the reference nn.Module
    result.first        # a ModuleCheck ("backbone.layer3.1.attn", its metrics and failures), or None

Which tensor is which module's output: the torch.onnx dynamo exporter writes each node's module scope into
its metadata ("pkg.torch.onnx.name_scopes": the nn_module_stack paths, root first, then the FX node name).
A module's output is the one tensor its nodes produce that a node outside it reads (or a graph output).
Those node metadata do not survive onnx's opset converter or onnx-graphsurgeon, so the exporter stores
the map for the checked modules in the graph's metadata (`MODULE_OUTPUTS_KEY`), which graph passes, FP16
conversion and INT8 quantisation carry along with the tensor names; a graph without that key is mapped
from its node scopes where it has them. In a Q/DQ graph a tensor that is only quantized is read where it is
dequantized again (the value the graph carries on). A tensor that an optimised or fused graph no longer has
(or that no longer has the module's shape) is skipped and said so: the boundaries that survive are enough.

Checked modules, in the order PyTorch finishes them: the attention modules (AARM, SE, CBAM), residual
blocks, stages (sequences of blocks), max-pool layers, fully connected layers, VCM, each
backbone and the whole model (its scores). Convolutions and batch norms are not: the exporter folds
each batch norm into its convolution, so a convolution's own output is no tensor of the graph.

How: a copy of the graph with those tensors as extra outputs (the artifact's file is only read) runs once
on the feed in onnxruntime; the same feed goes through the PyTorch model with forward hooks on those
modules. Each pair, rows (N, -1) (N: the first axis, clips or clip x segment), is measured with
`runtime.compare.score_metrics` and judged by the error and cosine limits of the tolerances given
(max_rel, max_rel_rms, min_cosine, min_mean_cosine; agreement and accuracy limits mean nothing on a
feature map). The first module, in execution order, with a violated limit is the answer: everything it
reads was still within the limits, so the fault is in its own computation.
"""

import ast
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from aarm.attention import CBAM, SE, VCM, AARMBlock
from aarm.errors import ConfigError
from runtime.artifact import read_sidecar
from runtime.compare import Failure, Tolerances, judge, score_metrics
from runtime.errors import ArtifactError
from runtime.graph_precision import consumers, producers
from runtime.onnx_file import load_onnx

__all__ = ["MODULE_OUTPUTS_KEY", "SCOPES_KEY", "BisectResult", "ModuleCheck", "bisect", "checked_modules",
           "feature_tolerances", "module_outputs", "record_module_outputs", "scope_outputs"]

SCOPES_KEY = "pkg.torch.onnx.name_scopes"  # node metadata written by torch.onnx's dynamo exporter
MODULE_OUTPUTS_KEY = "aarm.module_outputs"  # graph metadata: {module path: output tensor name}, JSON
ROOT = ""  # the whole model's path; its output is the scores

_ATTENTION = (AARMBlock, SE, CBAM)
_FEATURE_LIMITS = ("max_rel", "max_rel_rms", "min_cosine", "min_mean_cosine")


# ------------------------------------------------------------------------------------------ which modules


def _is_block(module: nn.Module) -> bool:
    """A residual block (2D or 3D ResNet): a module with an attention slot and a shortcut."""
    return hasattr(module, "attn") and hasattr(module, "downsample")


def checked_modules(model: nn.Module) -> dict[str, str]:
    """{module path: class name} of the modules bisection checks (see the module docstring), in
    `named_modules` order; the root (path "") is the whole model, its output the scores."""
    chosen: dict[str, str] = {}
    for path, module in model.named_modules():
        children = list(module.children())
        if (
            path == ROOT
            or _is_block(module)
            or isinstance(module, _ATTENTION + (VCM, nn.Linear, nn.MaxPool2d, nn.MaxPool3d))
            or (isinstance(module, nn.Sequential) and bool(children) and all(_is_block(c) for c in children))
            or path.rsplit(".", 1)[-1] == "backbone"
        ):
            chosen[path] = "scores" if path == ROOT else type(module).__name__
    return chosen


# --------------------------------------------------------------------------------------- module -> tensor


def _node_scopes(node: onnx.NodeProto) -> list[str] | None:
    """The module paths a node was traced in (root first), from its dynamo-exporter metadata; None without."""
    for prop in node.metadata_props:
        if prop.key == SCOPES_KEY:
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return None
            return [str(s) for s in scopes[:-1]] if isinstance(scopes, list) else None  # last: the FX node
    return None


def scope_outputs(model: onnx.ModelProto, prefix: str = "") -> dict[str, str]:
    """{module path: output tensor} from the node scopes of a dynamo-exported graph (empty without them).

    A module's nodes are those whose scopes hold its path; its output is the one tensor they produce that a
    node outside it (or one with no scope) reads, else the one graph output they produce. Modules with no
    such tensor or with several (a tuple output, or a scope the exporter's optimiser blurred) are left out.
    prefix: the traced model's path of the model whose modules are wanted ("model." when a wrapper was
    traced); only paths under it are kept, without it. The root maps to the graph output "scores"."""
    nodes = list(model.graph.node)
    scopes = [_node_scopes(n) for n in nodes]
    if not any(scopes):
        return {}
    members: dict[str, set[int]] = {}
    for i, s in enumerate(scopes):
        for path in s or ():
            if path.startswith(prefix):
                members.setdefault(path[len(prefix):], set()).add(i)
    readers = consumers(nodes)
    graph_outputs = {o.name for o in model.graph.output}
    found: dict[str, str] = {}
    for path, inside in members.items():
        produced = {o for i in inside for o in nodes[i].output if o}
        mine = {id(nodes[i]) for i in inside}  # the node objects of `nodes`, which `readers` holds
        leaving = {o for o in produced if any(id(r) not in mine for r in readers.get(o, ()))}
        leaving = leaving or produced & graph_outputs
        if len(leaving) == 1:
            found[path] = leaving.pop()
    found.pop(ROOT, None)
    if "scores" in graph_outputs:
        found[ROOT] = "scores"
    return found


def record_module_outputs(model: onnx.ModelProto, torch_model: nn.Module, traced: nn.Module | None = None
                          ) -> dict[str, str]:
    """Store the checked modules' output tensors (from the node scopes) as the graph's `MODULE_OUTPUTS_KEY`
    metadata, in place; returns the map (empty, and nothing stored, for a graph without node scopes).
    traced: the module that was exported when it wraps `torch_model` (default: `torch_model` itself)."""
    prefix = ""
    if traced is not None and traced is not torch_model:
        path = next((p for p, m in traced.named_modules() if m is torch_model), None)
        if path is None:
            raise ConfigError("the traced module does not contain the model")
        prefix = f"{path}." if path else ""
    wanted = checked_modules(torch_model)
    found = {p: t for p, t in scope_outputs(model, prefix).items() if p in wanted}
    if len(found) > 1:  # more than the scores
        kept = [p for p in model.metadata_props if p.key != MODULE_OUTPUTS_KEY]
        del model.metadata_props[:]
        model.metadata_props.extend(kept)
        model.metadata_props.add(key=MODULE_OUTPUTS_KEY, value=json.dumps(found))
    return found


def module_outputs(model: onnx.ModelProto, where: str = "graph") -> dict[str, str]:
    """{module path: output tensor} of a graph: its `MODULE_OUTPUTS_KEY` metadata, else its node scopes.
    ArtifactError when it has neither (exported by another tool, or before the map was recorded)."""
    for prop in model.metadata_props:
        if prop.key == MODULE_OUTPUTS_KEY:
            try:
                found = json.loads(prop.value)
            except json.JSONDecodeError:
                found = None
            if not isinstance(found, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                      for k, v in found.items()):
                raise ArtifactError(f"{where}: metadata {MODULE_OUTPUTS_KEY} is not a map of module paths to "
                                    "tensor names")
            return found
    found = scope_outputs(model)
    if not found:
        raise ArtifactError(f"{where}: the graph records no module scopes (no {MODULE_OUTPUTS_KEY} metadata, no "
                            f"{SCOPES_KEY} node metadata), so its tensors cannot be matched to PyTorch modules; "
                            "export it again with `export_onnx`")
    return found


# ---------------------------------------------------------------------------------------------- results


@dataclass
class ModuleCheck:
    """One checked module: its path, class, graph tensor and, unless skipped, the metrics and failures."""

    module: str
    kind: str
    tensor: str | None = None
    shape: list[int] | None = None
    metrics: dict[str, Any] | None = None
    failures: list[Failure] = field(default_factory=list)
    skipped: str | None = None  # why it was not compared

    @property
    def label(self) -> str:
        return f"{self.module or '(model)'} ({self.kind})"

    @property
    def verdict(self) -> str:
        """"ok", "leaves the tolerance" or "skipped: <why>"."""
        if self.skipped is not None:
            return f"skipped: {self.skipped}"
        return "leaves the tolerance" if self.failures else "ok"

    def to_dict(self) -> dict[str, Any]:
        return {"module": self.module, "kind": self.kind, "tensor": self.tensor, "shape": self.shape,
                "metrics": self.metrics, "failures": [f.to_dict() for f in self.failures],
                "skipped": self.skipped, "verdict": self.verdict}


@dataclass
class BisectResult:
    """Every checked module in execution order, the limits applied and the clips compared."""

    artifact: str
    precision: str
    limits: dict[str, float]
    clips: int
    rows: list[ModuleCheck]

    @property
    def first(self) -> ModuleCheck | None:
        """The first module, in execution order, whose output leaves the tolerance; None if none does."""
        return next((r for r in self.rows if r.failures), None)

    @property
    def compared(self) -> list[ModuleCheck]:
        return [r for r in self.rows if r.skipped is None]

    def summary(self) -> str:
        """One line: the module at fault with its error, or that none leaves the tolerance."""
        first = self.first
        skipped = len(self.rows) - len(self.compared)
        tail = f" ({len(self.compared)} modules compared, {skipped} skipped)"
        if first is None:
            return f"bisect: no module leaves the {self.precision} tolerance{tail}"
        before = [r for r in self.compared[: self.compared.index(first)]]
        after = f"; last within it: {before[-1].module or '(model)'}" if before else "; it is the first compared"
        return (f"bisect: first module out of the {self.precision} tolerance: {first.label}: "
                f"{'; '.join(str(f).split(': ', 1)[1] for f in first.failures)}{after}{tail}")

    def table_rows(self) -> list[tuple[str, str, str, str]]:
        """(module, max_rel, cosine, verdict) per checked module, for a table."""
        rows = []
        for r in self.rows:
            m = r.metrics or {}
            rel = "-" if m.get("max_rel") is None else f"{m['max_rel']:.3g}"
            cos = "-" if m.get("min_cosine") is None else f"{m['min_cosine']:.10f}"
            rows.append((r.label, rel, cos, r.verdict))
        return rows

    def to_dict(self) -> dict[str, Any]:
        first = self.first
        return {"artifact": self.artifact, "precision": self.precision, "limits": self.limits, "clips": self.clips,
                "first": None if first is None else first.module, "summary": self.summary(),
                "modules": [r.to_dict() for r in self.rows]}


# ---------------------------------------------------------------------------------------------- running


def feature_tolerances(tolerances: Tolerances) -> Tolerances:
    """The error and cosine limits of `tolerances`, the ones that mean something on a feature map.
    ConfigError when it sets none of them."""
    picked = Tolerances(**{k: getattr(tolerances, k) for k in _FEATURE_LIMITS})
    if not picked.limits():
        raise ConfigError("bisect needs an error or cosine limit (max_rel, max_rel_rms, min_cosine or "
                          "min_mean_cosine); the tolerances set none")
    return picked


def _marked(model: onnx.ModelProto, names: Sequence[str]) -> bytes:
    """A copy of `model` with the tensors `names` as extra graph outputs, serialised."""
    marked = onnx.ModelProto()
    marked.CopyFrom(model)
    info = {v.name: v for v in marked.graph.value_info}
    present = {o.name for o in marked.graph.output}
    for name in names:
        if name not in present:
            marked.graph.output.append(info.get(name) or onnx.helper.make_empty_tensor_value_info(name))
            present.add(name)
    return marked.SerializeToString()


def _dequantized(model: onnx.ModelProto) -> dict[str, str]:
    """{tensor: the DequantizeLinear output that carries it on} for tensors that a Q/DQ graph only quantizes:
    their one reader is a QuantizeLinear feeding a DequantizeLinear. Downstream nodes read the dequantized
    value, and the quantizer may have dropped a ReLU that the quantized range replaces (the tensor then holds
    the sum before it), so that value is the module's output in the graph."""
    readers = consumers(model.graph.node)
    carried = {}
    for name, nodes in readers.items():
        if len(nodes) == 1 and nodes[0].op_type == "QuantizeLinear" and nodes[0].input[0] == name:
            dq = [r for r in readers.get(nodes[0].output[0], []) if r.op_type == "DequantizeLinear"]
            if dq:
                carried[name] = dq[0].output[0]
    return carried


def _torch_outputs(model: nn.Module, modules: Sequence[str], inputs: Sequence[np.ndarray]
                   ) -> tuple[list[str], dict[str, int], dict[str, np.ndarray]]:
    """Run `model` on `inputs` with forward hooks on `modules`: (paths in the order they finished, calls per
    path, last output per path as float numpy)."""
    order: list[str] = []
    calls: dict[str, int] = {}
    outputs: dict[str, np.ndarray] = {}

    def hook(path: str) -> Any:
        def record(_module: nn.Module, _args: Any, out: Any) -> None:
            calls[path] = calls.get(path, 0) + 1
            if path not in order:
                order.append(path)
            if isinstance(out, torch.Tensor):
                outputs[path] = out.detach().float().cpu().clone().numpy()  # a later in-place op cannot touch it
        return record

    handles = [model.get_submodule(p).register_forward_hook(hook(p)) for p in modules]
    was_training = model.training
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        model.eval()
        with torch.inference_mode():
            model(*(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device) for x in inputs))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return order, calls, outputs


def bisect(
    artifact: str | Path,
    reference: nn.Module,
    feed: Mapping[str, np.ndarray],
    tolerances: Tolerances,
    *,
    providers: Sequence[str] | None = None,
    threads: int | None = None,
) -> BisectResult:
    """Compare the checked modules' outputs of the ONNX `artifact` with `reference`'s on `feed`.

    feed: the artifact's inputs by name, in the graph's input order ((N, K, C, H, W) or (N, C, T, H, W)),
    passed positionally to `reference` (a TwoStream model takes rgb, flow). tolerances: usually the
    artifact precision's defaults (`runtime.parity.default_tolerances`); only their error and cosine limits
    apply (`feature_tolerances`). providers / threads: for the onnxruntime session. The artifact's sidecar
    must verify; the file is read, never written. ArtifactError for a graph without module scopes.
    """
    from runtime.backends.onnxruntime_backend import OnnxRuntimeRunner

    path = Path(artifact)
    limits = feature_tolerances(tolerances)
    sidecar = read_sidecar(path, verify=True)
    if sidecar.kind != "onnx":
        raise ConfigError(f"{path}: bisect marks tensors in an ONNX graph; this is a {sidecar.kind} artifact")
    graph = load_onnx(path)
    recorded = module_outputs(graph, str(path))
    graph_inputs = [i.name for i in graph.graph.input]
    if sorted(feed) != sorted(graph_inputs):
        raise ConfigError(f"{path}: the feed gives {', '.join(feed)}; the graph takes {', '.join(graph_inputs)}")

    wanted = checked_modules(reference)
    produced = set(producers(graph.graph.node)) | {o.name for o in graph.graph.output}
    carried = _dequantized(graph)
    tensors = {p: carried.get(recorded[p], recorded[p]) for p in wanted if p in recorded and recorded[p] in produced}
    runner = OnnxRuntimeRunner(_marked(graph, sorted(set(tensors.values()))), name=path.name,
                               providers=providers, threads=threads)
    del graph
    with runner:
        got = runner.infer({k: np.asarray(feed[k]) for k in graph_inputs})
    order, calls, want = _torch_outputs(reference, list(wanted), [feed[k] for k in graph_inputs])

    rows: list[ModuleCheck] = []
    for p in [*order, *(p for p in wanted if p not in order)]:
        row = ModuleCheck(p, wanted[p], tensor=tensors.get(p, recorded.get(p)))
        rows.append(row)
        if p not in order:
            row.skipped = "not run in the forward pass"
        elif calls[p] > 1:
            row.skipped = f"called {calls[p]} times in one forward pass"
        elif p not in want:
            row.skipped = "its output is not one tensor"
        elif p not in recorded:
            row.skipped = "no tensor for it in the exporter's scopes"
        elif p not in tensors:
            row.skipped = f"tensor {recorded[p]!r} is not in this graph (optimised away or fused)"
        elif got[tensors[p]].shape != want[p].shape:
            row.skipped = (f"tensor {tensors[p]!r} has shape {list(got[tensors[p]].shape)}, the module's output "
                           f"{list(want[p].shape)}")
        else:
            a, b = got[tensors[p]], want[p]
            row.shape = list(b.shape)
            rows_axis = b.shape[0] if b.ndim else 1
            row.metrics = score_metrics(a.reshape(rows_axis, -1), b.reshape(rows_axis, -1), rankings=False)
            row.failures = judge(row.metrics, limits, p or "(model)")
    n = len(next(iter(feed.values())))
    return BisectResult(str(path), runner.precision, limits.limits(), n, rows)

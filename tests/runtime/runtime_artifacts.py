"""Helpers that make runtime test artifacts: export through export.onnx_export (cached across test sessions,
since the dynamo exporter takes many seconds), derive a modified graph with a valid sidecar, and slow a
graph down without changing its outputs."""

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

import export.onnx_export
from aarm.data.preprocessing import Preprocessing
from runtime.artifact import read_sidecar, write_sidecar
from runtime.errors import ArtifactError


def _export_key(model: torch.nn.Module, classes: list[str], preprocessing: Preprocessing) -> str:
    """Everything the exported bytes depend on: exporter source, library versions, config, weights, inputs."""
    digest = hashlib.sha256()
    digest.update(Path(export.onnx_export.__file__).read_bytes())
    digest.update(json.dumps([torch.__version__, onnx.__version__, model.aarm_config, classes,
                              preprocessing.to_dict()], sort_keys=True).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:20]


def export_artifact(
    model: torch.nn.Module, cache: Path, slot: str, *, classes: list[str], preprocessing: Preprocessing
) -> Path:
    """`cache/slot/<key>/model.onnx` (+ sidecar) from export_onnx, reused while the key matches.

    The key covers the exporter's source, torch/onnx versions, the model's config and weights, classes and
    preprocessing. A new export goes to a temporary folder renamed into place (safe against a concurrent
    session) and replaces the slot's older keys. A cached file is used only if its sidecar verifies.
    """
    key = _export_key(model, classes, preprocessing)
    slot_dir = cache / slot
    target = slot_dir / key / "model.onnx"
    if target.is_file():
        try:
            read_sidecar(target, verify=True)
            return target
        except ArtifactError:
            shutil.rmtree(target.parent, ignore_errors=True)
    slot_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=slot_dir))
    try:
        export.onnx_export.export_onnx(model, tmp / "model.onnx", classes=classes, preprocessing=preprocessing,
                                       trained=True)
        try:
            os.rename(tmp, target.parent)
        except OSError:  # another session put the same key in place first
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for old in slot_dir.iterdir():
        if old.name != key and not old.name.startswith("."):
            shutil.rmtree(old, ignore_errors=True)
    read_sidecar(target, verify=True)
    return target


def derive_artifact(parent: Path, model: onnx.ModelProto, out: Path, **changes: object) -> Path:
    """Save a modified graph with a freshly written sidecar derived from its parent's (a valid artifact)."""
    onnx.save(model, str(out))
    write_sidecar(out, read_sidecar(parent).derive(**{"stage": "optimize", **changes}), parent=parent)
    return out


def slowed_graph(path: Path, *, convs: int = 3, width: int = 64) -> onnx.ModelProto:
    """The graph of `path` (input (N, K, 3, H, W)) with heavy convolutions on its input whose result is
    multiplied by zero and added to the scores: same outputs, several times the FLOPs."""
    model = onnx.load(str(path))
    g = model.graph
    h, w = (d.dim_value for d in g.input[0].type.tensor_type.shape.dim[3:5])
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.array([-1, 3, h, w], dtype=np.int64), "slow_shape"),
             numpy_helper.from_array(np.zeros((), dtype=np.float32), "slow_zero")]
    nodes = [helper.make_node("Reshape", [g.input[0].name, "slow_shape"], ["slow_x"])]
    prev, cin = "slow_x", 3
    for i in range(convs):
        inits.append(numpy_helper.from_array(
            (rng.standard_normal((width, cin, 3, 3)) * 0.05).astype(np.float32), f"slow_w{i}"))
        nodes.append(helper.make_node("Conv", [prev, f"slow_w{i}"], [f"slow_c{i}"], pads=[1, 1, 1, 1]))
        prev, cin = f"slow_c{i}", width
    out_name = g.output[0].name
    nodes += [
        helper.make_node("ReduceSum", [prev], ["slow_sum"], keepdims=0),
        helper.make_node("Mul", ["slow_sum", "slow_zero"], ["slow_zeroed"]),
    ]
    for node in g.node:  # rename the original output; the new Add produces it
        for i, o in enumerate(node.output):
            if o == out_name:
                node.output[i] = "slow_scores"
    nodes.append(helper.make_node("Add", ["slow_scores", "slow_zeroed"], [out_name]))
    g.node.extend(nodes)
    g.initializer.extend(inits)
    return model

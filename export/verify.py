"""Parity checks run right after each export step, on onnxruntime's CPU execution provider.

    verify_against_torch(model, "model.onnx")            # exported graph vs the PyTorch model
    compare_graphs("model.onnx", "model.opt.onnx")       # optimised / FP16 graph vs its parent

Inputs are random normal tensors shaped as the artifact's sidecar says ((N, K, C, H, W) or (N, C, T, H, W)
per input); both sides see the same ones. Graphs run through the runtime's onnxruntime runner
(`runtime.backends.onnxruntime_backend.OnnxRuntimeRunner`, which verifies the sidecar and registers the
project's custom-op library only for a graph that uses its domain); metrics and verdicts are
`runtime.compare`'s. Each returns a dict: the metrics of `runtime.compare.score_metrics` (samples, max_abs,
max_rel, rel_rms, min_cosine, top1, NaN/Inf counts, ...), the provider, the reference's largest |score|,
and under the names this module's JSON has always used: max_abs_error, mean_abs_error, top1_agreement and
max_abs_reference. With `tolerances`, also "failures" (one line each) and "passed".
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from aarm.errors import ConfigError
from runtime.artifact import read_sidecar
from runtime.backends.onnxruntime_backend import OnnxRuntimeRunner
from runtime.compare import Tolerances, judge_sets, score_metrics
from runtime.errors import ArtifactError
from runtime.onnx_file import load_onnx


def uses_custom_ops(path: str | Path) -> bool:
    """Whether a graph has nodes of the AARM custom-op domain (`export.kernels.DOMAIN`). An import of the domain
    alone does not count: onnxruntime's quantizer imported every domain registered in its process, com.aarm
    among them once a session had loaded the kernels (`calibration.quantize` now drops such imports)."""
    from runtime.kernel_library import DOMAIN, graph_custom_ops

    return DOMAIN in graph_custom_ops(load_onnx(path, load_external_data=False))


def random_inputs(shapes: Sequence[Sequence[int]], *, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(tuple(s), dtype=np.float32) for s in shapes]


def input_shapes(path: str | Path, batch: int) -> list[tuple[int, ...]]:
    """Concrete input shapes of an artifact for a batch size, from its sidecar."""
    sidecar = read_sidecar(path, verify=False)
    return [tuple(batch if isinstance(d, str) else int(d) for d in shape) for shape in sidecar.input_shapes()]


def _batches(samples: int, batch: int) -> list[int]:
    if samples < 1 or batch < 1:
        raise ConfigError(f"need samples >= 1 and batch >= 1, got {samples} and {batch}")
    return [min(batch, samples - i) for i in range(0, samples, batch)]


def _run(runner: OnnxRuntimeRunner, inputs: list[np.ndarray]) -> np.ndarray:
    names = [s.name for s in runner.input_specs]
    out = runner.infer(dict(zip(names, inputs, strict=True)))
    return out["scores"] if "scores" in out else out[runner.output_names[0]]


def _combine(parts: list[tuple[np.ndarray, np.ndarray]], provider: str,
             tolerances: Tolerances | None) -> dict[str, Any]:
    ref = np.concatenate([r for r, _ in parts])
    got = np.concatenate([g for _, g in parts])
    m = score_metrics(got, ref)
    finite = np.abs(ref[np.isfinite(ref)])
    result = {
        **m,
        "provider": provider,
        "max_abs_error": m["max_abs"],
        "mean_abs_error": m["mean_abs"],
        "top1_agreement": m["top1"],
        "max_abs_reference": float(finite.max()) if finite.size else 0.0,
    }
    if tolerances is not None:
        failures = [str(f) for f in judge_sets({"random": m}, tolerances)]
        result.update(failures=failures, passed=not failures)
    return result


def verify_against_torch(
    model: nn.Module, path: str | Path, *, samples: int = 8, batch: int = 4, seed: int = 0,
    tolerances: Tolerances | None = None,
) -> dict[str, Any]:
    """Run the exported graph (onnxruntime CPU) and the model (PyTorch, eval, no grad) on `samples` random
    inputs in batches of `batch`; returns the parity metrics (and the verdict of `tolerances` if given).
    The model's training flag is restored."""
    runner = OnnxRuntimeRunner.from_artifact(path)
    was_training = model.training
    model.eval()
    parts = []
    try:
        with runner:
            for i, n in enumerate(_batches(samples, batch)):
                inputs = random_inputs(input_shapes(path, n), seed=seed + i)
                with torch.no_grad():
                    ref = model(*(torch.from_numpy(x) for x in inputs)).numpy()
                parts.append((ref, _run(runner, inputs)))
    finally:
        model.train(was_training)
    return _combine(parts, runner.provider, tolerances)


def compare_graphs(
    reference: str | Path, candidate: str | Path, *, samples: int = 8, batch: int = 4, seed: int = 0,
    tolerances: Tolerances | None = None,
) -> dict[str, Any]:
    """Run two graphs with the same inputs (the reference's sidecar shapes) on onnxruntime CPU; the
    candidate's outputs are compared in float64 whatever its precision (verdict of `tolerances` if given)."""
    ref_runner = OnnxRuntimeRunner.from_artifact(reference)
    cand_runner = OnnxRuntimeRunner.from_artifact(candidate)
    parts = []
    with ref_runner, cand_runner:
        for i, n in enumerate(_batches(samples, batch)):
            inputs = random_inputs(input_shapes(reference, n), seed=seed + i)
            parts.append((_run(ref_runner, inputs), _run(cand_runner, inputs)))
    return _combine(parts, cand_runner.provider, tolerances)


def rebuilt_parent(path: str | Path) -> tuple[Path, bytes] | str:
    """For an FP16 conversion (sidecar stage "convert") whose parent graph is present with its recorded
    sha256 (at the recorded path or beside the artifact): that parent converted again here with
    `export.fp16.convert_fp16_model` and the ops the sidecar says stayed FP32, as (parent, graph bytes).
    Otherwise the reason there is nothing to rebuild from, as a string."""
    from export.fp16 import FP32_OPS, convert_fp16_model
    from runtime.artifact import file_sha256

    path = Path(path)
    sidecar = read_sidecar(path, verify=True)
    if sidecar.stage != "convert" or sidecar.precision != "fp16":
        return f"{path.name} is not an FP16 conversion (stage {sidecar.stage}, precision {sidecar.precision})"
    if not sidecar.parent or not sidecar.parent_sha256:
        return f"{path.name} records no parent graph"
    recorded = Path(sidecar.parent)
    parent = next((c for c in (recorded, path.parent / recorded.name)
                   if c.is_file() and file_sha256(c) == sidecar.parent_sha256), None)
    if parent is None:
        return f"its parent {recorded.name} is not present with the recorded sha256"
    keep = sidecar.extra.get("fp32_ops", list(FP32_OPS))
    if not isinstance(keep, list) or not all(isinstance(op, str) for op in keep):
        raise ArtifactError(f"{path}: sidecar field extra.fp32_ops must be a list of op names")
    return parent, convert_fp16_model(load_onnx(parent), keep_fp32=keep).SerializeToString()


def compare_with_rebuild(
    path: str | Path, *, samples: int = 8, batch: int = 4, seed: int = 0, threads: int | None = None,
) -> dict[str, Any]:
    """An FP16 graph's scores against its parent converted again here (`rebuilt_parent`) on random inputs:
    the same step on the same runtime, so a correct artifact matches to the last bit, while a change to
    its weights or ops shows however small it is next to FP16 rounding. Returns {"parent", "metrics"}
    (`runtime.compare.score_metrics`), or {"skipped": reason} when there is nothing to rebuild from."""
    rebuilt = rebuilt_parent(path)
    if isinstance(rebuilt, str):
        return {"skipped": rebuilt}
    parent, graph = rebuilt
    artifact = OnnxRuntimeRunner.from_artifact(path, threads=threads)
    reference = OnnxRuntimeRunner(graph, name=f"{Path(parent).name} (converted again)", threads=threads)
    parts = []
    with artifact, reference:
        for i, n in enumerate(_batches(samples, batch)):
            inputs = random_inputs(input_shapes(path, n), seed=seed + i)
            parts.append((_run(reference, inputs), _run(artifact, inputs)))
    ref = np.concatenate([r for r, _ in parts])
    got = np.concatenate([g for _, g in parts])
    return {"parent": str(parent), "metrics": score_metrics(got, ref)}


def parity_rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """Rows (metric, value) for a rich table."""
    def num(key: str, fmt: str) -> str:
        return "-" if result.get(key) is None else fmt.format(result[key])

    rows = [
        ("samples", str(result["samples"])),
        ("NaN/Inf scores (artifact/reference)",
         f"{result.get('artifact_nonfinite', 0)}/{result.get('reference_nonfinite', 0)}"),
        ("max abs error", num("max_abs_error", "{:.3g}")),
        ("mean abs error", num("mean_abs_error", "{:.3g}")),
        ("max relative error", num("max_rel", "{:.3g}")),
        ("top-1 agreement", "-" if result.get("top1_agreement") is None else f"{100 * result['top1_agreement']:.1f}%"),
        ("largest |score|", f"{result['max_abs_reference']:.3g}"),
        ("execution provider", result["provider"]),
    ]
    if "passed" in result:
        rows.append(("verdict", "pass" if result["passed"] else "FAIL: " + "; ".join(result["failures"])))
    return rows

"""Parity checks run right after each export step, on onnxruntime's CPU execution provider.

    verify_against_torch(model, "model.onnx")            # exported graph vs the PyTorch model
    compare_graphs("model.onnx", "model.opt.onnx")       # optimised / FP16 graph vs its parent

Inputs are random normal tensors shaped as the artifact's sidecar says ((N, K, C, H, W) or (N, C, T, H, W)
per input); both sides see the same ones. Each returns a dict: max_abs_error, mean_abs_error,
top1_agreement (fraction of samples whose arg-max class agrees), samples, provider.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from aarm.errors import ArtifactError, BackendUnavailable
from runtime.artifact import read_sidecar
from runtime.onnx_file import load_onnx

CPU_PROVIDER = "CPUExecutionProvider"


def session(path: str | Path, *, threads: int | None = None) -> Any:
    """An onnxruntime CPU session over `path`; registers the AARM custom-op library when the graph uses it."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise BackendUnavailable("onnxruntime is not installed") from None
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads is not None:
        opts.intra_op_num_threads = threads
    if uses_custom_ops(path):
        from export.kernels import custom_op_library

        opts.register_custom_ops_library(str(custom_op_library()))
    try:
        sess = ort.InferenceSession(str(path), opts, providers=[CPU_PROVIDER])
    except Exception as exc:  # onnxruntime raises its own Fail / InvalidGraph / RuntimeException types
        raise ArtifactError(f"{path}: onnxruntime cannot load it ({str(exc).strip().splitlines()[0][:200]})") from None
    return sess


def uses_custom_ops(path: str | Path) -> bool:
    """Whether a graph imports the AARM custom-op domain (`export.kernels.DOMAIN`)."""
    from export.kernels import DOMAIN

    model = load_onnx(path, load_external_data=False)
    return any(o.domain == DOMAIN for o in model.opset_import)


def random_inputs(shapes: Sequence[Sequence[int]], *, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(tuple(s), dtype=np.float32) for s in shapes]


def input_shapes(path: str | Path, batch: int) -> list[tuple[int, ...]]:
    """Concrete input shapes of an artifact for a batch size, from its sidecar."""
    sidecar = read_sidecar(path, verify=False)
    return [tuple(batch if isinstance(d, str) else int(d) for d in t.shape) for t in sidecar.inputs]


def _metrics(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    ref = ref.astype(np.float64)
    got = got.astype(np.float64)
    if ref.shape != got.shape:
        raise ArtifactError(f"output shapes differ: {ref.shape} vs {got.shape}")
    err = np.abs(ref - got)
    return {
        "max_abs_error": float(err.max()) if err.size else 0.0,
        "mean_abs_error": float(err.mean()) if err.size else 0.0,
        "top1_agreement": float((ref.argmax(-1) == got.argmax(-1)).mean()),
        "max_abs_reference": float(np.abs(ref).max()) if ref.size else 0.0,
    }


def _batches(samples: int, batch: int) -> list[int]:
    if samples < 1 or batch < 1:
        raise ArtifactError(f"need samples >= 1 and batch >= 1, got {samples} and {batch}")
    return [min(batch, samples - i) for i in range(0, samples, batch)]


def _run(sess: Any, inputs: list[np.ndarray]) -> np.ndarray:
    names = [i.name for i in sess.get_inputs()]
    return sess.run(None, dict(zip(names, inputs, strict=True)))[0]


def _combine(parts: list[tuple[np.ndarray, np.ndarray]], provider: str) -> dict[str, Any]:
    ref = np.concatenate([r for r, _ in parts])
    got = np.concatenate([g for _, g in parts])
    return {**_metrics(ref, got), "samples": int(ref.shape[0]), "provider": provider}


def verify_against_torch(
    model: nn.Module, path: str | Path, *, samples: int = 8, batch: int = 4, seed: int = 0
) -> dict[str, Any]:
    """Run the exported graph (onnxruntime CPU) and the model (PyTorch, eval, no grad) on `samples` random
    inputs in batches of `batch`; returns the parity metrics. The model's training flag is restored."""
    sess = session(path)
    was_training = model.training
    model.eval()
    parts = []
    try:
        for i, n in enumerate(_batches(samples, batch)):
            inputs = random_inputs(input_shapes(path, n), seed=seed + i)
            with torch.no_grad():
                ref = model(*(torch.from_numpy(x) for x in inputs)).numpy()
            parts.append((ref, _run(sess, inputs)))
    finally:
        model.train(was_training)
    return _combine(parts, sess.get_providers()[0])


def compare_graphs(
    reference: str | Path, candidate: str | Path, *, samples: int = 8, batch: int = 4, seed: int = 0
) -> dict[str, Any]:
    """Run two graphs with the same inputs (the reference's sidecar shapes) on onnxruntime CPU; the
    candidate's outputs are compared in float64 whatever its precision."""
    ref_sess, cand_sess = session(reference), session(candidate)
    parts = []
    for i, n in enumerate(_batches(samples, batch)):
        inputs = random_inputs(input_shapes(reference, n), seed=seed + i)
        parts.append((_run(ref_sess, inputs), _run(cand_sess, inputs)))
    return _combine(parts, cand_sess.get_providers()[0])


def parity_rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """Rows (metric, value) for a rich table."""
    return [
        ("samples", str(result["samples"])),
        ("max abs error", f"{result['max_abs_error']:.3g}"),
        ("mean abs error", f"{result['mean_abs_error']:.3g}"),
        ("top-1 agreement", f"{100 * result['top1_agreement']:.1f}%"),
        ("largest |score|", f"{result['max_abs_reference']:.3g}"),
        ("execution provider", result["provider"]),
    ]

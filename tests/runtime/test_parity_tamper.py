"""Parity catches a small, deliberate change to a graph whose sidecar was re-signed to match it.

The tamper: output channel 0 of the graph's first 3x3 convolution (more than one output channel) scaled by
1.05, in the FP32 graph and in the FP16 graph; the sidecar's sha256 rewritten so the file verifies, its
parent and parent_sha256 kept (the graph is tampered, not the chain). Parity with the default limits must
fail it, with and without labelled clips, and pass the untouched artifacts. FP32: the scores against
PyTorch catch it (a correct graph is 1000x closer, benchmarks/parity_limits.py). FP16: rounding moves the
scores about as much as the tamper does (benchmarks/results/parity_limits.json), so the FP16 graph is also
compared with its parent converted again, which a correct graph matches exactly.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from shared_fixtures import CLASSES
from typer.testing import CliRunner

import aarm
from aarm.checkpoint import save_checkpoint
from aarm.data.preprocessing import Preprocessing
from export.cli import app
from export.fp16 import convert_onnx
from export.onnx_export import export_onnx
from export.verify import compare_with_rebuild
from runtime.artifact import file_sha256, read_sidecar, sidecar_path, write_sidecar
from runtime.backends import open_runner
from runtime.parity import ParityFailure, compare, labelled_batches

SCALE = 1.05


def tamper(src: Path, out: Path) -> tuple[Path, str]:
    """Copy `src` to `out` with output channel 0 of its first 3x3 conv scaled by SCALE and the sidecar
    re-signed (new sha256, same parent and parent_sha256); returns the path and the weight's name."""
    model = onnx.load(str(src))
    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        init = inits.get(node.input[1]) if node.op_type == "Conv" else None
        if init is not None and len(init.dims) >= 4 and set(init.dims[2:]) == {3} and init.dims[0] > 1:
            w = numpy_helper.to_array(init).copy()
            w[0] = (w[0].astype(np.float32) * SCALE).astype(w.dtype)
            init.CopyFrom(numpy_helper.from_array(w, init.name))
            break
    else:
        raise AssertionError(f"{src}: no 3x3 convolution")
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    sidecar = json.loads(sidecar_path(src).read_text())
    sidecar["sha256"] = file_sha256(out)  # re-signed: the file verifies against its sidecar
    sidecar_path(out).write_text(json.dumps(sidecar, indent=2))
    signed = read_sidecar(out, verify=True)
    assert signed.parent_sha256 == read_sidecar(src, verify=False).parent_sha256
    return out, init.name


def artifacts(d: Path, onnx_path: Path) -> dict[str, Path]:
    """The FP32 graph, its FP16 conversion (the project's own step) and a tampered copy of each."""
    fp16 = d / "model.fp16.onnx"
    convert_onnx(onnx_path, fp16)
    made = {"fp32": onnx_path, "fp16": fp16}
    for precision, path in list(made.items()):
        made[f"{precision}-tampered"] = tamper(path, d / "tampered" / path.name)[0]
    return made


@pytest.fixture(scope="module")
def resnet18(tiny, tmp_path_factory) -> dict[str, Path]:
    """The tiny AARM ResNet-18 (TSN, K = 2, 32x32, 5 classes): FP32, FP16 and both tampered."""
    d = tmp_path_factory.mktemp("tamper18")
    onnx_path = Path(shutil.copy(tiny.onnx, d / "model.onnx"))
    write_sidecar(onnx_path, read_sidecar(tiny.onnx), parent=tiny.checkpoint)
    return {**artifacts(d, onnx_path), "checkpoint": tiny.checkpoint}


def _compare(path: Path, checkpoint: Path, prep: Preprocessing, classes: list[str], videos: Path | None):
    """Parity of `path` with `checkpoint` under the default limits, as `aarm-export parity` judges it: 8
    random clips, every labelled clip of `videos` when given, and for an FP16 graph the rebuild check."""
    data = None
    if videos is not None:
        data = labelled_batches(str(videos), prep, ["input"], classes=classes, samples=0, batch=5)
    result = compare(open_runner(path, threads=1), open_runner(checkpoint), samples=8, batch=8, data=data)
    if result.artifact["precision"] == "fp16":
        result.add_rebuild(compare_with_rebuild(path, samples=8, batch=8, threads=1))
    return result


@pytest.mark.parametrize("data", [False, True], ids=["random", "data"])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_resnet18_correct_passes_and_tampered_fails(resnet18, tiny, videos, precision, data):
    args = (resnet18["checkpoint"], tiny.preprocessing, tiny.classes, videos if data else None)
    good = _compare(resnet18[precision], *args)
    assert good, good.failures
    bad = _compare(resnet18[f"{precision}-tampered"], *args)
    assert not bad, (bad.metrics, bad.rebuild)
    if precision == "fp32":  # scores against PyTorch catch it, on the input set the verdict judges
        judged = "data" if data and not bad.tolerances.gate_random else "random"
        assert {f.input_set for f in bad.violations} >= {judged}
    else:  # FP16 rounding hides it in scores against PyTorch; the graph rebuilt from its parent does not
        assert good.rebuild["metrics"]["max_abs"] == 0.0  # the same step again: identical scores
        assert {f.input_set for f in bad.violations} == {"rebuild"}


def test_fp16_rebuild_check_is_skipped_without_its_parent(resnet18, tmp_path):
    lone = tmp_path / "model.fp16.onnx"
    shutil.copy(resnet18["fp16"], lone)
    sidecar = json.loads(sidecar_path(resnet18["fp16"]).read_text())
    sidecar["parent"] = str(tmp_path / "gone.onnx")
    sidecar_path(lone).write_text(json.dumps(sidecar))
    assert compare_with_rebuild(lone) == {"skipped": "its parent gone.onnx is not present with the recorded sha256"}
    assert "skipped" in compare_with_rebuild(resnet18["fp32"])  # not an FP16 conversion


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_parity_command_fails_the_tampered_graph(resnet18, videos, precision):
    base = ["parity", str(resnet18[f"{precision}-tampered"]), "--reference", str(resnet18["checkpoint"]),
            "--samples", "8", "--threads", "1", "--no-lineage"]
    for extra in ([], ["--data", str(videos)]):
        res = CliRunner().invoke(app, [*base, *extra])
        assert isinstance(res.exception, ParityFailure), res.output
        assert ("rebuild: " in str(res.exception)) == (precision == "fp16")


@pytest.mark.slow
def test_resnet50_correct_passes_and_tampered_fails(tmp_path, videos):
    """AARM ResNet-50 (TSN, K = 2, 32x32, 5 classes), exported by the project's exporter."""
    torch.manual_seed(0)
    model = aarm.create_model("resnet50", num_classes=len(CLASSES), attention="aarm", segments=2).eval()
    prep = Preprocessing.for_model(model.aarm_config, size=32)
    ckpt = save_checkpoint(tmp_path / "model.pt", model, classes=CLASSES, preprocessing=prep)
    onnx_path = tmp_path / "model.onnx"
    export_onnx(model, onnx_path, classes=CLASSES, preprocessing=prep, trained=True)
    write_sidecar(onnx_path, read_sidecar(onnx_path), parent=ckpt)
    made = artifacts(tmp_path, onnx_path)

    for precision in ("fp32", "fp16"):
        for data in (None, videos):
            good = _compare(made[precision], ckpt, prep, CLASSES, data)
            assert good, (precision, data, good.failures)
            bad = _compare(made[f"{precision}-tampered"], ckpt, prep, CLASSES, data)
            assert not bad, (precision, data, bad.metrics)

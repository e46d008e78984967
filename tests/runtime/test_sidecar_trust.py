"""The sidecar is untrusted input: validated on read, never choosing native code, never deciding precision or
class count against the graph."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from aarm.errors import BackendUnavailable
from runtime.artifact import TensorSpec, read_sidecar, sidecar_path, write_sidecar
from runtime.backends import open_runner
from runtime.errors import ArtifactError
from runtime.graph_precision import graph_precision
from runtime.kernel_library import DOMAIN, graph_custom_ops, record_library, trusted_library

# --------------------------------------------------------------------------------------- validation on read


def _tampered(tiny, tmp_path: Path, change) -> Path:
    """A copy of tiny.onnx whose sidecar document was edited by `change(dict)` (sha256 left valid)."""
    path = Path(shutil.copy(tiny.onnx, tmp_path / "model.onnx"))
    data = json.loads(sidecar_path(tiny.onnx).read_text())
    change(data)
    sidecar_path(path).write_text(json.dumps(data))
    return path


def test_precision_outside_the_allowed_values_is_one_line_naming_the_field(tiny, tmp_path):
    path = _tampered(tiny, tmp_path, lambda d: d.update(precision="fp64"))
    with pytest.raises(ArtifactError) as err:
        read_sidecar(path)
    assert str(err.value) == f"{sidecar_path(path)}: field 'precision' must be one of fp32, fp16, int8, got 'fp64'"


@pytest.mark.parametrize(("change", "field"), [
    (lambda d: d.update(kind="tarball"), "kind"),
    (lambda d: d.update(stage="deploy"), "stage"),
    (lambda d: d.update(format_version="1"), "format"),
    (lambda d: d.update(classes=["a", 2]), "classes"),
    (lambda d: d.update(classes="abc"), "classes"),
    (lambda d: d.pop("classes"), "classes"),
    (lambda d: d["inputs"][0].update(shape=["N", 2, 3, 32.5, 32]), "inputs[0].shape"),
    (lambda d: d["inputs"][0].update(shape=["N", -1, 3, 32, 32]), "inputs[0].shape"),
    (lambda d: d["inputs"][0].update(dtype="float128"), "inputs[0].dtype"),
    (lambda d: d["inputs"][0].update(library="/tmp/x.so"), "inputs[0]"),
    (lambda d: d.update(outputs=[]), "outputs"),
    (lambda d: d["outputs"][0].update(shape=["N", 3]), "outputs"),  # 3 classes in the output, 5 named
    (lambda d: d.update(sha256="not-a-hash"), "sha256"),
    (lambda d: d.update(parent="best.pt", parent_sha256="ABC"), "parent_sha256"),
    (lambda d: d.update(parent="best.pt", parent_sha256=None), "parent_sha256"),
    (lambda d: d.update(trained="yes"), "trained"),
    (lambda d: d.update(opset=0), "opset"),
    (lambda d: d.update(extra=["custom_ops"]), "extra"),
    (lambda d: d.update(versions={"onnx": 1}), "versions"),
    (lambda d: d.update(preprocessing=[d["preprocessing"], d["preprocessing"]]), "preprocessing"),
    (lambda d: d["preprocessing"].update(shell="rm -rf /"), "preprocessing"),
    (lambda d: d.update(library="/tmp/evil.so"), "'library'"),  # an unknown top-level key
], ids=lambda v: v if isinstance(v, str) else "")
def test_malformed_sidecar_is_refused_naming_the_field(tiny, tmp_path, change, field):
    path = _tampered(tiny, tmp_path, change)
    with pytest.raises(ArtifactError) as err:
        read_sidecar(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{sidecar_path(path)}: ") and field in message, message


def test_a_sidecar_that_is_not_json_or_not_an_object_is_refused(tiny, tmp_path):
    path = Path(shutil.copy(tiny.onnx, tmp_path / "model.onnx"))
    sidecar_path(path).write_text("{not json")
    with pytest.raises(ArtifactError, match="unreadable sidecar"):
        read_sidecar(path)
    sidecar_path(path).write_text("[1, 2]")
    with pytest.raises(ArtifactError, match="must be a JSON object"):
        read_sidecar(path)


# ---------------------------------------------------------------------------------------- precision from graph


def _graph(nodes, inits=(), in_type=TensorProto.FLOAT, out_type=TensorProto.FLOAT) -> onnx.ModelProto:
    graph = helper.make_graph(list(nodes), "g", [helper.make_tensor_value_info("x", in_type, [1, 4])],
                              [helper.make_tensor_value_info("y", out_type, [1, 4])], initializer=list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def test_graph_precision_reads_ops_and_tensor_types():
    assert graph_precision(_graph([helper.make_node("Relu", ["x"], ["y"])])) == "fp32"
    half = numpy_helper.from_array(np.ones(4, np.float16), "w")
    assert graph_precision(_graph([helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16),
                                   helper.make_node("Mul", ["h", "w"], ["m"]),
                                   helper.make_node("Cast", ["m"], ["y"], to=TensorProto.FLOAT)], [half])) == "fp16"
    assert graph_precision(_graph([helper.make_node("Relu", ["x"], ["y"])], in_type=TensorProto.FLOAT16,
                                  out_type=TensorProto.FLOAT16)) == "fp16"
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    assert graph_precision(_graph([helper.make_node("QuantizeLinear", ["x", "s"], ["q"]),
                                   helper.make_node("DequantizeLinear", ["q", "s"], ["y"])], [scale])) == "int8"
    branch = helper.make_graph([helper.make_node("DequantizeLinear", ["q8", "s"], ["b"])], "then", [],
                               [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 4])])
    cond = numpy_helper.from_array(np.array(True), "c")
    nested = _graph([helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch)], [cond, scale])
    assert graph_precision(nested) == "int8"  # a subgraph counts


def test_graph_precision_of_the_exported_graph_is_fp32(tiny):
    assert graph_precision(onnx.load(str(tiny.onnx))) == "fp32"
    assert open_runner(tiny.onnx).precision == "fp32"


def _with_extra_nodes(tiny, out: Path, nodes, inits, precision: str, **changes) -> Path:
    """tiny.onnx with `nodes` inserted between its last node and the scores output, re-signed as `precision`."""
    model = onnx.load(str(tiny.onnx))
    last = model.graph.node[-1]
    last.output[0] = "pre_scores"
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(inits)
    onnx.save(model, str(out))
    write_sidecar(out, read_sidecar(tiny.onnx).derive(stage="calibrate", precision=precision, **changes),
                  parent=tiny.onnx)
    return out


def test_runner_precision_is_the_graphs_and_a_disagreeing_sidecar_is_refused(tiny, tmp_path):
    scale = numpy_helper.from_array(np.array(0.05, np.float32), "qdq_scale")
    qdq = [helper.make_node("QuantizeLinear", ["pre_scores", "qdq_scale"], ["q_scores"]),
           helper.make_node("DequantizeLinear", ["q_scores", "qdq_scale"], ["scores"])]
    int8 = _with_extra_nodes(tiny, tmp_path / "model.int8.onnx", qdq, [scale], "int8")
    with open_runner(int8, threads=1) as runner:
        assert runner.precision == "int8"
        assert runner.infer(runner.example_feed(2))["scores"].shape == (2, len(tiny.classes))
    labelled_fp32 = _with_extra_nodes(tiny, tmp_path / "fp32.onnx", qdq, [scale], "fp32")
    with pytest.raises(ArtifactError, match="sidecar says precision fp32, the graph is int8"):
        open_runner(labelled_fp32)
    casts = [helper.make_node("Cast", ["pre_scores"], ["half"], to=TensorProto.FLOAT16),
             helper.make_node("Cast", ["half"], ["scores"], to=TensorProto.FLOAT)]
    fp16_graph = _with_extra_nodes(tiny, tmp_path / "half.onnx", casts, [], "fp32")
    with pytest.raises(ArtifactError, match="sidecar says precision fp32, the graph is fp16"):
        open_runner(fp16_graph)
    relabelled = tmp_path / "relabelled.onnx"
    shutil.copy(tiny.onnx, relabelled)
    write_sidecar(relabelled, read_sidecar(tiny.onnx).derive(stage="convert", precision="fp16"), parent=tiny.onnx)
    with pytest.raises(ArtifactError, match="sidecar says precision fp16, the graph is fp32"):
        open_runner(relabelled)  # an fp32 graph labelled fp16 would be judged by fp16's looser limits


def test_sidecar_class_count_must_match_the_graphs_scores(tiny, tmp_path):
    path = tmp_path / "model.onnx"
    shutil.copy(tiny.onnx, path)
    three = tiny.classes[:3]
    write_sidecar(path, read_sidecar(tiny.onnx).derive(
        classes=three, outputs=[TensorSpec("scores", ["N", 3], layout="NC")]), parent=tiny.onnx)
    with pytest.raises(ArtifactError, match=f"the graph scores {len(tiny.classes)} classes, its sidecar names 3"):
        open_runner(path)


# ----------------------------------------------------------------------------------- custom-op libraries


@pytest.fixture(scope="module")
def marker_library(tmp_path_factory) -> tuple[Path, Path]:
    """A shared library whose load (constructor) writes a marker file: proof of whether it was loaded."""
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler to build the marker library")
    d = tmp_path_factory.mktemp("marker")
    marker = d / "loaded"
    src = d / "marker.cc"
    src.write_text('#include <cstdio>\n__attribute__((constructor)) static void mark() {\n'
                   f'  if (FILE* f = std::fopen("{marker}", "w")) std::fclose(f);\n}}\n')
    lib = d / "libmarker.so"
    subprocess.run([compiler, "-shared", "-fPIC", str(src), "-o", str(lib)], check=True, capture_output=True)
    return lib, marker


def test_marker_library_marks_when_loaded(marker_library):
    lib, marker = marker_library
    subprocess.run([sys.executable, "-c", f"import ctypes; ctypes.CDLL({str(lib)!r})"], check=True)
    assert marker.is_file()  # the probe works: loading the library leaves the mark
    marker.unlink()


def test_a_sidecar_naming_a_library_for_a_standard_graph_loads_nothing(tiny, tmp_path, marker_library,
                                                                       monkeypatch):
    import runtime.backends.onnxruntime_backend as backend

    lib, marker = marker_library
    marker.unlink(missing_ok=True)
    path = tmp_path / "model.onnx"
    shutil.copy(tiny.onnx, path)
    write_sidecar(path, read_sidecar(tiny.onnx).derive(
        stage="optimize", extra={"custom_ops": {"domain": DOMAIN, "ops": ["AarmPool"], "library": str(lib)}}),
        parent=tiny.onnx)

    def no_lookup(*args: object, **kwargs: object) -> Path:
        raise AssertionError("a graph without custom ops must not look for a library")

    monkeypatch.setattr(backend, "trusted_library", no_lookup)
    with open_runner(path, threads=1) as runner:
        runner.infer(runner.example_feed(1))
    assert not marker.exists(), "the library named by the sidecar was loaded"


def test_graph_custom_ops_finds_domains_in_subgraphs_and_ignores_builtin_ones():
    aarm = helper.make_node("AarmPool", ["x"], ["g", "c"], domain=DOMAIN)
    body = helper.make_graph([aarm, helper.make_node("Relu", ["g"], ["b"])], "then", [],
                             [helper.make_tensor_value_info("b", TensorProto.FLOAT, None)])
    cond = numpy_helper.from_array(np.array(True), "cond")
    model = _graph([helper.make_node("If", ["cond"], ["y"], then_branch=body, else_branch=body),
                    helper.make_node("FusedMatMul", ["x", "x"], ["z"], domain="com.microsoft")], [cond])
    assert graph_custom_ops(model) == {DOMAIN: {"AarmPool"}}
    assert graph_custom_ops(_graph([helper.make_node("Relu", ["x"], ["y"])])) == {}


@pytest.fixture(scope="module")
def fused(tiny, tmp_path_factory) -> Path:
    """tiny.onnx optimised with the fused AARM kernels (library built and recorded in the default cache)."""
    from export.passes import optimize_onnx

    out = tmp_path_factory.mktemp("fused") / "model.kernels.onnx"
    try:
        optimize_onnx(tiny.onnx, out, kernels=True)
    except BackendUnavailable as exc:
        pytest.skip(str(exc))
    return out


@pytest.fixture
def own_cache(fused, tmp_path, monkeypatch) -> Path:
    """A private kernel cache holding a copy of the library built here; returns the library's path."""
    from export.kernels import custom_op_library

    built = custom_op_library()
    cache = tmp_path / "kernels"
    (cache / "build").mkdir(parents=True)
    lib = Path(shutil.copy(built, cache / "build" / built.name))
    monkeypatch.setenv("AARM_KERNEL_CACHE", str(cache))
    return lib


def _record(lib: Path, *, ops=("AarmPool", "AarmGate"), tested=None) -> None:
    from export.kernels import TESTED_ONNXRUNTIME

    record_library(lib, domain=DOMAIN, ops=list(ops), tested=tested or TESTED_ONNXRUNTIME, sources="test")


def test_the_recorded_library_runs_a_fused_graph(fused, own_cache):
    _record(own_cache)
    assert trusted_library(DOMAIN, {"AarmPool", "AarmGate"}) == own_cache.resolve()
    with open_runner(fused, threads=1) as runner:
        assert runner.infer(runner.example_feed(1))["scores"].shape[0] == 1


def test_a_fused_graph_without_a_recorded_library_is_refused(tiny, fused, own_cache, capsys, monkeypatch):
    from cli_runner import one_line_error, run_cli

    with pytest.raises(ArtifactError, match=r"uses the com.aarm custom ops, but this installation has built no "
                                            r"library .*re-run optimize with `kernels` on this machine, or use the "
                                            r"standard-op graph"):
        open_runner(fused)
    line = one_line_error(*run_cli(["parity", fused, "--reference", tiny.checkpoint], capsys, monkeypatch)[::2])
    assert "re-run optimize with --kernels on this machine" in line  # the flag, on the command line


def test_a_changed_library_is_refused(fused, own_cache):
    _record(own_cache)
    with open(own_cache, "ab") as f:
        f.write(b"\0")
    with pytest.raises(ArtifactError, match="differs from the one built here"):
        open_runner(fused)


def test_a_library_outside_the_cache_is_refused(fused, own_cache, tmp_path):
    outside = Path(shutil.copy(own_cache, tmp_path / "elsewhere.so"))
    _record(outside)
    with pytest.raises(ArtifactError, match="outside the kernel cache"):
        open_runner(fused)


@pytest.fixture
def uncached_build():
    """export.kernels with its per-process library cache cleared before and after the test, so a test's build
    attempt runs (and its monkeypatched result is not kept for the tests after it)."""
    import export.kernels

    export.kernels.custom_op_library.cache_clear()
    yield export.kernels
    export.kernels.custom_op_library.cache_clear()


def test_kernels_are_refused_on_an_untested_onnxruntime(fused, own_cache, monkeypatch, uncached_build):
    _record(own_cache, tested=("1.0.0", "1.1.0"))
    with pytest.raises(ArtifactError, match=r"tested on onnxruntime >=1.0.0,<1.1.0, not \d.*standard-op graph"):
        open_runner(fused)
    monkeypatch.setattr(uncached_build, "TESTED_ONNXRUNTIME", ("1.0.0", "1.1.0"))
    with pytest.raises(BackendUnavailable, match="tested on onnxruntime >=1.0.0,<1.1.0"):
        uncached_build.custom_op_library()


def test_a_build_that_hangs_is_backend_unavailable(tmp_path, monkeypatch, uncached_build):
    """A compiler that runs past the build timeout: one BackendUnavailable (the pipeline then skips its kernels
    stage and says why), not a TimeoutExpired traceback."""
    import subprocess

    def hang(cmd, **kwargs):
        raise subprocess.TimeoutExpired(cmd, kwargs.get("timeout"))

    monkeypatch.setenv("AARM_KERNEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(uncached_build.subprocess, "run", hang)
    with pytest.raises(BackendUnavailable, match="building the AARM CPU kernels took over 300 s"):
        uncached_build.custom_op_library()


def test_an_op_the_library_lacks_is_refused(fused, own_cache):
    _record(own_cache, ops=("AarmPool",))
    with pytest.raises(ArtifactError, match="custom ops AarmGate, which the library built here does not provide"):
        open_runner(fused)

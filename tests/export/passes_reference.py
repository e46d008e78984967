"""Reference graphs for tests/export/test_passes_equivalence.py: what export.passes made before its rewrite onto
onnx-graphsurgeon's `Graph.layer` and registered rewrites, to hold the rewritten passes to.

Per model, tests/fixtures/passes/ holds
- `<model>.exported.onnx`: the tiny model as the project exports it, with the interleaving channel fusion of
  older exports (so every AARM block goes through the fusion rewrite); its float tensors of more than
  `KEEP` values are stored without data and filled by `fill_large` (deterministic noise), so the file stays
  small and the test does not depend on how the model code initialises weights;
- `<case>.optimised.onnx`: the passes of a4bd174 over that filled graph, every initializer stored as its
  sha256 only (`strip_weights`); the test takes the data back from the graph the current passes make, by
  hash (`fill_weights`), which also proves the weights are identical.

Made by `python /path/to/tests/export/passes_reference.py export/passes.py` run in a checkout of a4bd174 (its
exporter and its passes).
"""

import hashlib
import importlib.util
import sys
import zlib
from collections import Counter
from pathlib import Path
from unittest import mock

import numpy as np
import onnx
from onnx import helper, numpy_helper

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "passes"
KEEP = 1024  # float tensors up to this many values are stored as they are
FILLED = "filled by passes_reference.fill_large"
MODELS = ("resnet18", "resnet3d18")
# (case, model, kernel passes)
CASES = [("resnet18", "resnet18", False), ("resnet18_kernels", "resnet18", True), ("resnet3d18", "resnet3d18", False)]


def tensor_sha256(tensor: onnx.TensorProto) -> str:
    array = numpy_helper.to_array(tensor)
    return hashlib.sha256(f"{array.dtype}{array.shape}".encode() + np.ascontiguousarray(array).tobytes()).hexdigest()


def _stripped(tensor: onnx.TensorProto, doc: str) -> onnx.TensorProto:
    return onnx.TensorProto(name=tensor.name, data_type=tensor.data_type, dims=list(tensor.dims), doc_string=doc)


def strip_large(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose float32 initializers of more than KEEP values carry no data (marked FILLED)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for t in out.graph.initializer:
        if t.data_type == onnx.TensorProto.FLOAT and int(np.prod(t.dims)) > KEEP:
            t.CopyFrom(_stripped(t, FILLED))
    return out


def fill_large(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with each FILLED initializer set to noise seeded by its name, scaled by 1/sqrt(fan-in)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for t in out.graph.initializer:
        if t.doc_string == FILLED:
            dims = [int(d) for d in t.dims]
            fan_in = int(np.prod(dims[1:])) if len(dims) > 1 else dims[0]
            rng = np.random.default_rng(zlib.crc32(t.name.encode()))
            values = (rng.standard_normal(dims) / np.sqrt(fan_in)).astype(np.float32)
            t.CopyFrom(numpy_helper.from_array(values, t.name))
    return out


def strip_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose initializers keep name, type and dims but carry their sha256 (doc_string) instead of data."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for t in out.graph.initializer:
        t.CopyFrom(_stripped(t, tensor_sha256(t)))
    return out


def fill_weights(stripped: onnx.ModelProto, source: onnx.ModelProto) -> onnx.ModelProto:
    """`stripped` with each initializer's data taken from the initializer of `source` with the same sha256;
    AssertionError when `source` holds no such tensor."""
    by_hash = {tensor_sha256(t): t for t in source.graph.initializer}
    out = onnx.ModelProto()
    out.CopyFrom(stripped)
    for t in out.graph.initializer:
        assert t.doc_string in by_hash, f"no initializer holds the data of reference initializer {t.name}"
        name = t.name
        t.CopyFrom(by_hash[t.doc_string])
        t.name = name
    return out


def op_histogram(model: onnx.ModelProto) -> Counter:
    return Counter(f"{n.domain}:{n.op_type}" if n.domain else n.op_type for n in model.graph.node)


def _attr_key(attr: onnx.AttributeProto) -> str:
    value = helper.get_attribute_value(attr)
    if isinstance(value, onnx.TensorProto):
        value = tensor_sha256(value)
    return f"{attr.name}={value!r}"


def node_signatures(model: onnx.ModelProto) -> Counter:
    """Name-free identity of every node: a hash over its domain, op, attributes and the identities of its inputs
    (graph inputs by position, initializers by content, node outputs by their producer's identity and index),
    plus which identities the graph outputs are. Equal multisets mean node-for-node equivalent graphs, whatever
    the names and the order of the node list."""
    ids: dict[str, str] = {"": ""}
    ids.update({i.name: f"input{k}" for k, i in enumerate(model.graph.input)})
    ids.update({t.name: f"init:{t.doc_string if len(t.doc_string) == 64 else tensor_sha256(t)}"
                for t in model.graph.initializer})
    pending, found = list(model.graph.node), Counter()
    while pending:
        ready = [n for n in pending if all(i in ids for i in n.input)]
        assert ready, "the graph has a cycle or reads an undefined tensor"
        for node in ready:
            attrs = sorted(_attr_key(a) for a in node.attribute)
            digest = hashlib.sha256(repr((node.domain, node.op_type, attrs, [ids[i] for i in node.input])).encode())
            for j, o in enumerate(node.output):
                ids[o] = f"{digest.hexdigest()}:{j}"
            found[digest.hexdigest()] += 1
        pending = [n for n in pending if all(n is not r for r in ready)]
    found.update(f"output{k}={ids[o.name]}" for k, o in enumerate(model.graph.output))
    return found


def _legacy_forward(self, x):
    """AARM's fusion as exported before it became weighted sums: an interleaving stack and a grouped 1x1 conv."""
    import torch

    m_ch, m_st = self.cam(x) * x, self.stam(x) * x
    return self.fuse.conv(torch.stack((m_ch, m_st), dim=2).flatten(1, 2))


def export_model(name: str, out: Path) -> onnx.ModelProto:
    """A randomised tiny AARM model exported the legacy way: resnet18 (TSN, K = 2, 64x64, 7 classes) or
    resnet3d18 (8 frames of 32x32)."""
    from test_onnx_export import build, export_small

    from aarm.attention import AARMBlock

    model = build(name, "aarm", seed=3)
    with mock.patch.object(AARMBlock, "forward", _legacy_forward):
        export_small(model, out)
    return onnx.load(str(out))


def main(old_passes: Path) -> None:
    import tempfile

    spec = importlib.util.spec_from_file_location("old_passes", old_passes)
    old = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old)
    FIXTURES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            stored = strip_large(export_model(name, Path(tmp) / f"{name}.onnx"))
            onnx.save(stored, str(FIXTURES / f"{name}.exported.onnx"))
            for case, model, kernels in CASES:
                if model == name:
                    passes = old.KERNEL_PASSES if kernels else old.DEFAULT_PASSES
                    optimised, _ = old.run_passes(fill_large(stored), passes)
                    onnx.save(strip_weights(optimised), str(FIXTURES / f"{case}.optimised.onnx"))
                    print(f"{case}: {len(optimised.graph.node)} nodes")


if __name__ == "__main__":
    sys.path[:0] = [str(Path.cwd()), str(Path(__file__).resolve().parent)]
    main(Path(sys.argv[1]))

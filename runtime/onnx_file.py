"""The one reader of ONNX files: every command that opens a graph goes through `load_onnx`.

An ONNX file is untrusted input. Whatever is wrong with it (missing, a folder, truncated, random bytes, a
protobuf that is not a model) becomes one `ArtifactError` naming the file, never a protobuf traceback.
"""

from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from runtime.errors import ArtifactError


def _checked(model: onnx.ModelProto, source: str) -> onnx.ModelProto:
    """A parsed message is a model only if it has a graph with an output and an opset; protobuf happily parses
    an empty file (and some random bytes) into an empty ModelProto."""
    if not model.HasField("graph") or not model.graph.output or not model.opset_import:
        raise ArtifactError(f"{source} is not a valid ONNX model (no graph, outputs or opset in it)")
    return model


def load_onnx(path: str | Path, *, load_external_data: bool = True) -> onnx.ModelProto:
    """Read an ONNX model from `path`; ArtifactError "FILE is not a valid ONNX model (...)" on any failure.

    With `load_external_data=False` initializers stored in external files are left unloaded (for reading the
    graph's structure only).
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"ONNX graph not found: {path}" if not path.exists() else f"{path} is not a file")
    try:
        model = onnx.load(str(path), load_external_data=load_external_data)
    except (DecodeError, ValueError, RuntimeError, OSError, onnx.checker.ValidationError) as exc:
        why = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise ArtifactError(f"{path} is not a valid ONNX model ({why})") from None
    return _checked(model, str(path))


def parse_onnx(data: bytes, source: str = "ONNX bytes") -> onnx.ModelProto:
    """Parse a serialized ONNX model held in memory; `source` names it in the error."""
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        why = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise ArtifactError(f"{source} is not a valid ONNX model ({why})") from None
    return _checked(model, source)

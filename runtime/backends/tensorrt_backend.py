"""TensorRT backend: a serialized engine run through Polygraphy's TrtRunner.

`runtime.tensorrt_engine.load_trt_runner` checks the engine's sidecar against the TensorRT version and
GPU running here and builds the TrtRunner; this module adapts it to the `Runner` interface and checks
the engine's bindings against the sidecar on activation. TensorRT is imported lazily: opening an engine
on a machine without it raises BackendUnavailable, and nothing here is imported by `import runtime`.
"""

from pathlib import Path
from typing import Any

import numpy as np

from aarm.errors import ArtifactError, BackendUnavailable
from runtime.artifact import read_sidecar
from runtime.runner import Runner, check_graph_matches_sidecar, sidecar_input_specs


def _load_trt_runner(path: Path) -> Any:
    try:
        from runtime.tensorrt_engine import load_trt_runner
    except ImportError as exc:
        raise BackendUnavailable(f"TensorRT backend unavailable here ({exc})") from None
    return load_trt_runner(path)


def _engine_outputs(trt_runner: Any) -> list[str]:
    """Output tensor names of an active TrtRunner's engine, in binding order."""
    import tensorrt as trt

    engine = trt_runner.engine
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    return [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]


class TensorRTRunner(Runner):
    """A TensorRT engine. Execution contexts are not thread-safe, so `infer` holds the runner's lock."""

    backend = "tensorrt"

    def __init__(self, path: Path, trt_runner: Any, sidecar: Any) -> None:
        super().__init__(
            name=path.name, inputs=sidecar_input_specs(sidecar), outputs=[t.name for t in sidecar.outputs],
            classes=sidecar.classes, preprocessing=sidecar.preprocessings(), precision=sidecar.precision,
            path=path, sidecar=sidecar,
        )
        self.trt_runner = trt_runner

    @classmethod
    def from_engine(cls, path: str | Path) -> "TensorRTRunner":
        path = Path(path)
        sidecar = read_sidecar(path, verify=True)
        if sidecar.kind != "engine":
            raise ArtifactError(f"{path}: sidecar says kind {sidecar.kind!r}, expected 'engine'")
        return cls(path, _load_trt_runner(path), sidecar)

    @property
    def provider(self) -> str:
        return "TensorRT"

    @property
    def device(self) -> str:
        return "cuda:0"

    def activate_impl(self) -> None:
        self.trt_runner.activate()
        meta = self.trt_runner.get_input_metadata(use_numpy_dtypes=False)
        inputs = []
        for name, (dtype, shape) in meta.items():
            from polygraphy.datatype import DataType

            np_dtype = np.dtype(DataType.to_dtype(DataType.from_dtype(dtype), "numpy"))
            inputs.append((name, [d if isinstance(d, int) else -1 for d in shape], np_dtype.name))
        try:
            check_graph_matches_sidecar(self.path, self.sidecar, inputs, _engine_outputs(self.trt_runner))
        except ArtifactError:
            self.trt_runner.deactivate()
            raise

    def deactivate_impl(self) -> None:
        self.trt_runner.deactivate()

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self.lock:
            outputs = self.trt_runner.infer(feed)
        return {name: np.asarray(outputs[name]) for name in self.output_names}

"""TensorRT backend: a serialized engine run through Polygraphy's TrtRunner.

`runtime.tensorrt_engine.load_engine` checks the engine's sidecar against the TensorRT version and the GPU
chosen by `device` ("cuda" or "cuda:<i>", the convention every runner shares) and deserializes it there
with TensorRT's host code off (a version-compatible engine only with `allow_host_code`);
this module hands that engine to a TrtRunner, adapts it to the `Runner` interface and checks the engine's
bindings (inputs, outputs, the class count of the scores) against the sidecar on activation. Only public
API: TensorRT's engine getters for the bindings, Polygraphy's runner for inference. TensorRT is imported
lazily: opening an engine on a machine without it raises BackendUnavailable, and nothing here is imported
by `import runtime`.
"""

from pathlib import Path
from typing import Any

import numpy as np

from runtime.artifact import read_sidecar
from runtime.errors import ArtifactError
from runtime.runner import Runner, check_graph_matches_sidecar, sidecar_input_specs
from runtime.tensorrt_engine import cuda_device_index, engine_io, load_engine, use_cuda_device


class TensorRTRunner(Runner):
    """A TensorRT engine on one GPU. Execution contexts are not thread-safe, so `infer` holds the runner's lock,
    and each call makes the runner's GPU current on the calling thread."""

    backend = "tensorrt"

    def __init__(self, path: Path, engine: Any, sidecar: Any, *, device_index: int = 0) -> None:
        super().__init__(
            name=path.name, inputs=sidecar_input_specs(sidecar), outputs=[t.name for t in sidecar.outputs],
            classes=sidecar.classes, preprocessing=sidecar.preprocessings(), precision=sidecar.precision,
            path=path, sidecar=sidecar,
        )
        from polygraphy.backend.trt import TrtRunner

        self.engine = engine
        self.device_index = device_index
        self.trt_runner = TrtRunner(engine, name=path.name)

    @classmethod
    def from_engine(cls, path: str | Path, *, device: str | None = None,
                    allow_host_code: bool = False) -> "TensorRTRunner":
        """Open `path` (+ its sidecar) on `device` ("cuda" or "cuda:<i>"; default cuda:0).

        The engine is deserialized with host code off; allow_host_code opens a version-compatible engine, which
        runs native code embedded in it (only for engines you built yourself)."""
        path = Path(path)
        index = cuda_device_index(device)
        sidecar = read_sidecar(path, verify=True)
        if sidecar.kind != "engine":
            raise ArtifactError(f"{path}: sidecar says kind {sidecar.kind!r}, expected 'engine'")
        return cls(path, load_engine(path, device=index, allow_host_code=allow_host_code), sidecar,
                   device_index=index)

    @property
    def provider(self) -> str:
        return "TensorRT"

    @property
    def device(self) -> str:
        return f"cuda:{self.device_index}"

    def activate_impl(self) -> None:
        inputs, outputs, output_shapes = engine_io(self.engine)
        check_graph_matches_sidecar(self.path, self.sidecar, inputs, outputs, output_shapes)
        use_cuda_device(self.device_index)
        self.trt_runner.activate()

    def deactivate_impl(self) -> None:
        use_cuda_device(self.device_index)
        self.trt_runner.deactivate()

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self.lock:
            use_cuda_device(self.device_index)
            outputs = self.trt_runner.infer(feed)
        return {name: np.asarray(outputs[name]) for name in self.output_names}

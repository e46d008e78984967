"""One inference interface over every backend, shaped like Polygraphy's runners: `Runner` with
`activate()` / `infer(feed)` / `deactivate()`, and the checks every backend shares (feeds, sidecar against
graph). `runtime.backends.open_runner` opens an artifact on its backend. `infer` is safe to call from several
threads on one runner.
"""

import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aarm.data.preprocessing import Preprocessing
from aarm.errors import AarmError
from runtime.artifact import Sidecar
from runtime.errors import ArtifactError


class FeedError(AarmError):
    """An inference feed whose names, shapes or dtypes do not fit the runner's inputs."""


@dataclass(frozen=True)
class InputSpec:
    """One runner input. `shape` holds ints and strings for dynamic axes ("N" for the batch)."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"

    def concrete(self, batch: int) -> tuple[int, ...]:
        """The shape with the batch axis (axis 0) set to `batch`; any other dynamic axis is an error."""
        dims = []
        for i, d in enumerate(self.shape):
            if isinstance(d, int):
                dims.append(d)
            elif i == 0:
                dims.append(batch)
            else:
                raise ArtifactError(f"input {self.name!r}: axis {i} is dynamic ({d!r}); only the batch may be")
        return tuple(dims)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


def frames_per_clip(preprocessing: Preprocessing) -> int:
    """Video frames one clip consumes: K snippets of 1 RGB frame or `flow_stack` flow fields (2D), T (3D)."""
    if preprocessing.layout == "NKCHW":
        return preprocessing.segments * (preprocessing.flow_stack if preprocessing.modality == "flow" else 1)
    return preprocessing.frames


class Runner(ABC):
    """Base class: `activate()` / `infer(feed)` / `deactivate()`, or use it as a context manager.

    Subclasses set `backend`, implement `provider`, `infer_impl` and, where they hold resources,
    `activate_impl` / `deactivate_impl`. `infer` checks the feed against `input_specs` and is thread-safe:
    backends whose engines are not (PyTorch modules, TensorRT contexts) serialise calls with `self.lock`.
    """

    backend: str = ""
    threads: int | None = None  # intra-op threads asked for (None: the backend's default)
    requested_providers: Sequence[str] = ()  # onnxruntime: the execution providers asked for, in order

    def __init__(
        self,
        *,
        name: str,
        inputs: Sequence[InputSpec],
        outputs: Sequence[str],
        classes: Sequence[str] = (),
        preprocessing: Sequence[Preprocessing] = (),
        precision: str = "fp32",
        path: Path | None = None,
        sidecar: Sidecar | None = None,
    ) -> None:
        self.name = name
        self.input_specs = list(inputs)
        self.output_names = list(outputs)
        self.classes = list(classes)
        self.preprocessing = list(preprocessing)
        self.precision = precision
        self.path = path
        self.sidecar = sidecar
        self.is_active = False
        self.lock = threading.RLock()
        self._active_count = 0

    # -- what ran ------------------------------------------------------------------------------------
    @property
    @abstractmethod
    def provider(self) -> str:
        """The execution provider or device that actually runs the model (e.g. CPUExecutionProvider)."""

    @property
    def device(self) -> str:
        """"cpu" or "cuda:<i>"."""
        return "cpu"

    @property
    def config(self) -> dict[str, Any] | None:
        """The model's aarm config: its sidecar's (None for a runner without one)."""
        return self.sidecar.model if self.sidecar is not None else None

    @property
    def frames_per_clip(self) -> int:
        """Video frames behind one clip of the first input (1 when the runner has no preprocessing)."""
        return frames_per_clip(self.preprocessing[0]) if self.preprocessing else 1

    def describe(self) -> dict[str, Any]:
        """What a result needs to say about the runner that produced it."""
        return {
            "name": self.name,
            "path": str(self.path) if self.path else None,
            "backend": self.backend,
            "provider": self.provider,
            "device": self.device,
            "precision": self.precision,
            "inputs": [s.to_dict() for s in self.input_specs],
            "outputs": list(self.output_names),
            "frames_per_clip": self.frames_per_clip,
        }

    # -- life cycle ----------------------------------------------------------------------------------
    def activate_impl(self) -> None:  # noqa: B027 - optional hook
        """Allocate what inference needs (sessions, device memory)."""

    def deactivate_impl(self) -> None:  # noqa: B027 - optional hook
        """Free what `activate_impl` allocated."""

    def activate(self) -> "Runner":
        """Make the runner ready; nested activations are counted and only the outermost one allocates."""
        with self.lock:
            if self._active_count == 0:
                self.activate_impl()
                self.is_active = True
            self._active_count += 1
        return self

    def deactivate(self) -> None:
        with self.lock:
            if self._active_count == 0:
                return
            self._active_count -= 1
            if self._active_count == 0:
                self.deactivate_impl()
                self.is_active = False

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    # -- inference -----------------------------------------------------------------------------------
    @abstractmethod
    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch; `feed` has been checked against `input_specs`."""

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch: `feed` maps every input name to an array of its spec's shape (any batch) and dtype.

        Returns {output name: array}; the classifier's output "scores" is (N, num_classes).
        """
        if not self.is_active:
            raise AarmError(f"runner {self.name} is not active; use it in a `with` block or call activate()")
        return self.infer_impl(self.check_feed(feed))

    def check_feed(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [s.name for s in self.input_specs]
        if set(feed) != set(names):
            raise FeedError(f"{self.name}: feed has inputs {sorted(feed)}, the model takes {names}")
        checked: dict[str, np.ndarray] = {}
        batch = None
        for spec in self.input_specs:
            arr = feed[spec.name]
            if not isinstance(arr, np.ndarray):
                raise FeedError(f"{self.name}: input {spec.name!r} must be a numpy array, got {type(arr).__name__}")
            if arr.dtype != np.dtype(spec.dtype):
                raise FeedError(f"{self.name}: input {spec.name!r} is {arr.dtype}, the model takes {spec.dtype}")
            if arr.ndim != len(spec.shape) or any(
                isinstance(d, int) and d != a for d, a in zip(spec.shape, arr.shape, strict=True)
            ):
                raise FeedError(f"{self.name}: input {spec.name!r} has shape {tuple(arr.shape)}, "
                                f"the model takes {tuple(spec.shape)}")
            if batch is not None and arr.shape[0] != batch:
                raise FeedError(f"{self.name}: inputs disagree on the batch size ({batch} vs {arr.shape[0]})")
            batch = arr.shape[0]
            checked[spec.name] = np.ascontiguousarray(arr)
        return checked

    def example_feed(self, batch: int = 1, *, rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
        """Random normalised inputs (standard normal) of the runner's shapes, batch `batch`."""
        rng = rng if rng is not None else np.random.default_rng(0)
        return {
            s.name: rng.standard_normal(s.concrete(batch), dtype=np.float32).astype(s.dtype, copy=False)
            for s in self.input_specs
        }

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} on {self.provider}>"


def sidecar_input_specs(sidecar: Sidecar) -> list[InputSpec]:
    """The runner inputs a sidecar declares; a dynamic K or T is set to what the preprocessing samples
    (`runtime.temporal.choose_temporal` picks another size within the recorded range)."""
    return [InputSpec(t.name, tuple(shape), t.dtype)
            for t, shape in zip(sidecar.inputs, sidecar.input_shapes(), strict=True)]


def check_graph_matches_sidecar(
    artifact: Path,
    sidecar: Sidecar,
    inputs: Sequence[tuple[str, Sequence[Any], str]],
    outputs: Sequence[str],
    output_shapes: Mapping[str, Sequence[Any]] | None = None,
) -> None:
    """Refuse an artifact whose graph inputs/outputs differ from what its sidecar declares.

    inputs: the graph's actual (name, shape, dtype) with dynamic axes as strings, None or negative ints.
    A sidecar axis given as a string must be dynamic in the graph; an int must be equal.
    output_shapes: the graph's output shapes by name, where the backend can read them; then the class axis of
    every scores output (layout "NC") must be static and equal to the number of the sidecar's classes.
    """
    declared = [(t.name, list(t.shape), t.dtype) for t in sidecar.inputs]
    if [n for n, _, _ in declared] != [n for n, _, _ in inputs]:
        raise ArtifactError(f"{artifact}: sidecar declares inputs {[n for n, _, _ in declared]}, "
                            f"the graph has {[n for n, _, _ in inputs]}")
    for (name, want, want_dtype), (_, got, got_dtype) in zip(declared, inputs, strict=True):
        got = list(got)
        dynamic = [not isinstance(g, int) or g < 0 for g in got]
        ok = len(want) == len(got) and all(
            dyn if isinstance(w, str) else (not dyn and w == g) for w, g, dyn in zip(want, got, dynamic, strict=True)
        )
        if not ok:
            shown = ["?" if d else g for g, d in zip(got, dynamic, strict=True)]
            raise ArtifactError(f"{artifact}: input {name!r} is {shown} in the graph, its sidecar says {want}")
        if want_dtype != got_dtype:
            raise ArtifactError(
                f"{artifact}: input {name!r} is {got_dtype} in the graph, its sidecar says {want_dtype}")
    want_out = [t.name for t in sidecar.outputs]
    if want_out != list(outputs):
        raise ArtifactError(f"{artifact}: sidecar declares outputs {want_out}, the graph has {list(outputs)}")
    if output_shapes is None:
        return
    for spec in sidecar.outputs:
        if spec.layout != "NC":
            continue
        shape = list(output_shapes[spec.name])
        n = shape[-1] if shape else None
        if not isinstance(n, int) or n < 1:
            raise ArtifactError(f"{artifact}: output {spec.name!r} is {shape} in the graph, without a static class "
                                f"axis to check against the sidecar's {len(sidecar.classes)} classes")
        if n != len(sidecar.classes):
            raise ArtifactError(f"{artifact}: the graph scores {n} classes, its sidecar names "
                                f"{len(sidecar.classes)}")

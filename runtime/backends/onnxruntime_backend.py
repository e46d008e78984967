"""onnxruntime backend: CPU, CUDA and TensorRT execution providers.

The providers a session actually runs on are read back from `session.get_providers()` after it is
created; onnxruntime quietly drops a provider it cannot load (and retries on the CPU), so a requested
provider missing from that list raises BackendUnavailable instead of running somewhere else.
The precision (which sets parity limits) is read from the graph, and a sidecar that says otherwise is refused;
the AARM custom-op library is registered only for a graph with nodes of its domain, from this installation's
own build (`runtime.kernel_library`), never from a path in a sidecar. On the CPU provider such a graph runs with
its kernels on onnxruntime's blocked layout (`runtime.blocked_kernels`), rewritten when the session opens.
`InferenceSession.run` is thread-safe, so `infer` takes no lock.
"""

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from aarm.errors import BackendUnavailable, ConfigError
from runtime.artifact import read_sidecar
from runtime.errors import ArtifactError
from runtime.graph_precision import graph_precision
from runtime.kernel_library import DOMAIN, graph_custom_ops, recorded_ops, trusted_library
from runtime.onnx_file import load_onnx, parse_onnx
from runtime.runner import InputSpec, Runner, check_graph_matches_sidecar, sidecar_input_specs

PROVIDER_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
}
_OPT_LEVELS = ("disable", "basic", "extended", "all")
_ORT_DTYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int32)": "int32", "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise BackendUnavailable("onnxruntime is not installed (pip install onnxruntime)") from None
    return onnxruntime


def resolve_providers(providers: Sequence[str] | None) -> list[str]:
    """Full provider names from short ones (cpu, cuda, tensorrt); default CPU only."""
    names = [PROVIDER_NAMES.get(p.lower(), p) for p in (providers or ["cpu"])]
    available = _ort().get_available_providers()
    for name in names:
        if name not in available:
            raise BackendUnavailable(f"execution provider {name} is not in this onnxruntime build "
                                     f"(available: {', '.join(available)})")
    return names


def session_options(
    threads: int | None = None, inter_threads: int | None = None, optimization: str = "all"
) -> Any:
    ort = _ort()
    opts = ort.SessionOptions()
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"threads must be >= 1, got {threads}")
        opts.intra_op_num_threads = threads
    if inter_threads is not None:
        if inter_threads < 1:
            raise ConfigError(f"inter_threads must be >= 1, got {inter_threads}")
        opts.inter_op_num_threads = inter_threads
        opts.execution_mode = ort.ExecutionMode.ORT_PARALLEL
    if optimization not in _OPT_LEVELS:
        raise ConfigError(f"optimization must be one of {', '.join(_OPT_LEVELS)}, got {optimization!r}")
    opts.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    opts.log_severity_level = 3
    return opts


def register_custom_ops(options: Any, model: onnx.ModelProto, where: str) -> Path | None:
    """Register the AARM custom-op library in the session options when, and only when, the graph has nodes of
    its domain; the library is the one this installation built and recorded (`runtime.kernel_library`), never
    one a sidecar names. A graph with another unknown domain is left to onnxruntime, which refuses it.
    Returns the library registered, None when the graph needs none."""
    ops = graph_custom_ops(model).get(DOMAIN)
    if not ops:
        return None
    library = trusted_library(DOMAIN, ops, where=where)
    options.register_custom_ops_library(str(library))
    return library


class OnnxRuntimeRunner(Runner):
    """An onnxruntime session over an ONNX file (with its sidecar) or in-memory model bytes.

    providers: short or full provider names in priority order; every one of them must be active in the
    created session, else BackendUnavailable. threads / inter_threads: intra-/inter-op thread counts
    (default: onnxruntime's). optimization: graph optimisation level. provider_options: one dict applied
    to every non-CPU provider (e.g. {"device_id": 1}). A graph with the AARM CPU kernels runs them on
    onnxruntime's blocked layout when the session is CPU-only at optimisation "all" and this CPU blocks
    (`kernel_layout` says "nchwc"; "plain" otherwise, None for a graph without them).
    """

    backend = "onnxruntime"

    def __init__(
        self,
        model: str | Path | bytes,
        *,
        name: str | None = None,
        sidecar: Any = None,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        inter_threads: int | None = None,
        optimization: str = "all",
        provider_options: Mapping[str, Any] | None = None,
    ) -> None:
        path = None if isinstance(model, bytes) else Path(model)
        self._model = model if isinstance(model, bytes) else str(model)
        where = str(path) if path is not None else "<bytes>"
        graph = parse_onnx(model, where) if isinstance(model, bytes) else load_onnx(path, load_external_data=False)
        self.graph_precision = graph_precision(graph)
        if sidecar is not None and sidecar.precision != self.graph_precision:
            raise ArtifactError(f"{where}: its sidecar says precision {sidecar.precision}, the graph is "
                                f"{self.graph_precision}")
        self.requested_providers = resolve_providers(providers)
        self._provider_options = [
            {} if p == "CPUExecutionProvider" else {str(k): str(v) for k, v in (provider_options or {}).items()}
            for p in self.requested_providers
        ]
        self._options = session_options(threads, inter_threads, optimization)
        library = register_custom_ops(self._options, graph, where)
        del graph
        self.kernel_layout = None if library is None else "plain"
        if library is not None and optimization == "all" and self.requested_providers == ["CPUExecutionProvider"]:
            self._block_kernels(library)
        self.threads, self.inter_threads, self.optimization = threads, inter_threads, optimization
        self.session: Any = None
        self.session = self._create_session()
        graph_inputs = [(i.name, list(i.shape), _ORT_DTYPES.get(i.type, i.type)) for i in self.session.get_inputs()]
        graph_outputs = [o.name for o in self.session.get_outputs()]
        if sidecar is not None:
            check_graph_matches_sidecar(path or Path("<bytes>"), sidecar, graph_inputs, graph_outputs,
                                        {o.name: list(o.shape) for o in self.session.get_outputs()})
            specs = sidecar_input_specs(sidecar)
            super().__init__(
                name=name or (path.name if path else "onnx"), inputs=specs, outputs=graph_outputs,
                classes=sidecar.classes, preprocessing=sidecar.preprocessings(), precision=self.graph_precision,
                path=path, sidecar=sidecar,
            )
        else:
            specs = [
                InputSpec(n, tuple(d if isinstance(d, int) and d >= 0 else (str(d) if d else "?") for d in shape), dt)
                for n, shape, dt in graph_inputs
            ]
            super().__init__(name=name or (path.name if path else "onnx"), inputs=specs, outputs=graph_outputs,
                             precision=self.graph_precision, path=path)

    @classmethod
    def from_artifact(cls, path: str | Path, **kwargs: Any) -> "OnnxRuntimeRunner":
        """Open an exported ONNX graph; its sidecar must verify and describe the graph's inputs/outputs."""
        sidecar = read_sidecar(path, verify=True)
        if sidecar.kind != "onnx":
            raise ArtifactError(f"{path}: sidecar says kind {sidecar.kind!r}, expected 'onnx'")
        return cls(path, sidecar=sidecar, **kwargs)

    def _block_kernels(self, library: Path) -> None:
        """Run the AARM kernels on onnxruntime's blocked layout (`runtime.blocked_kernels`). Where the rewrite
        fails the graph still runs as it is, with a warning that says why; so does a library recorded before the
        blocked ops existed."""
        from runtime.blocked_kernels import BLOCKED, blocked_kernel_graph  # onnx-graphsurgeon: only for such graphs

        if not set(BLOCKED.values()) <= recorded_ops(DOMAIN):
            return
        try:
            blocked = blocked_kernel_graph(self._model, library)
        except Exception as exc:  # onnxruntime / onnx-graphsurgeon raise their own types
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            warnings.warn(f"AARM kernels stay on the plain layout (the blocked rewrite failed: {first[:200]})",
                          RuntimeWarning, stacklevel=3)
            return
        if blocked is not None:
            self._model = blocked.SerializeToString()
            self.kernel_layout = "nchwc"

    def _create_session(self) -> Any:
        ort = _ort()
        try:
            session = ort.InferenceSession(
                self._model, sess_options=self._options, providers=self.requested_providers,
                provider_options=self._provider_options,
            )
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
            where = "<bytes>" if isinstance(self._model, bytes) else self._model
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ArtifactError(f"{where}: onnxruntime cannot load it ({first[:200]})") from None
        active = session.get_providers()
        missing = [p for p in self.requested_providers if p not in active]
        if missing:
            raise BackendUnavailable(
                f"execution provider {', '.join(missing)} requested but the session runs on {', '.join(active)} "
                "(its libraries or device are missing here); refusing to fall back"
            )
        return session

    @property
    def providers(self) -> list[str]:
        """Providers of the live session, in priority order."""
        return list(self.session.get_providers()) if self.session is not None else []

    @property
    def provider(self) -> str:
        """The highest-priority provider that actually runs (the one requested first)."""
        return self.requested_providers[0]

    @property
    def device(self) -> str:
        if self.provider == "CPUExecutionProvider":
            return "cpu"
        opts = dict(zip(self.requested_providers, self._provider_options, strict=True))[self.provider]
        return f"cuda:{opts.get('device_id', '0')}"

    def describe(self) -> dict[str, Any]:
        facts = {**super().describe(), "providers": self.providers, "threads": self.threads,
                 "inter_threads": self.inter_threads, "optimization": self.optimization}
        if self.kernel_layout is not None:  # a graph with the AARM CPU kernels: on which layout they run
            facts["kernel_layout"] = self.kernel_layout
        return facts

    def activate_impl(self) -> None:
        if self.session is None:
            self.session = self._create_session()

    def deactivate_impl(self) -> None:
        self.session = None

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self.session.run(self.output_names, feed)
        return dict(zip(self.output_names, outputs, strict=True))

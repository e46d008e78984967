"""A stand-in `tensorrt` module for CPU tests: the public `Logger` / `Runtime` surface the runtime deserializes
engines through, recording each deserialization (the plan's bytes and whether host code was allowed then)."""

import sys
from types import ModuleType
from typing import Any

VERSION = "11.4.0.106"
GPU = ("NVIDIA H100 80GB HBM3", "9.0")


class FakeLogger:
    WARNING = "WARNING"

    def __init__(self, severity: Any = None) -> None:
        self.severity = severity


def install(monkeypatch: Any, engine: Any, *, deserializes: bool = True) -> list[dict[str, Any]]:
    """Put a fake `tensorrt` into sys.modules and a fake GPU / CUDA context into runtime.tensorrt_engine.

    engine: what `Runtime.deserialize_cuda_engine` returns (None when `deserializes` is False). Returns the
    record list: one {"data", "host_code", "device"} per deserialization, plus {"current": i} per
    `use_cuda_device(i)` call.
    """
    import runtime.backends.tensorrt_backend as backend
    import runtime.tensorrt_engine as te

    records: list[dict[str, Any]] = []
    current = {"device": None}

    class FakeRuntime:
        def __init__(self, logger: FakeLogger) -> None:
            self.engine_host_code_allowed = True  # TensorRT's default must not matter: the runtime sets it

        def deserialize_cuda_engine(self, data: bytes) -> Any:
            records.append({"data": bytes(data), "host_code": self.engine_host_code_allowed,
                            "device": current["device"]})
            return engine if deserializes else None

    trt = ModuleType("tensorrt")
    trt.__version__ = VERSION
    trt.Logger = FakeLogger
    trt.Runtime = FakeRuntime
    trt.init_libnvinfer_plugins = lambda logger, namespace: True
    trt.TensorIOMode = type("Mode", (), {"INPUT": "IN", "OUTPUT": "OUT"})
    monkeypatch.setitem(sys.modules, "tensorrt", trt)

    def use_cuda_device(index: int = 0) -> None:
        current["device"] = index
        records.append({"current": index})

    monkeypatch.setattr(te, "current_gpu", lambda device=0: GPU)
    monkeypatch.setattr(te, "use_cuda_device", use_cuda_device)
    monkeypatch.setattr(backend, "use_cuda_device", use_cuda_device)
    return records

"""INT8 post-training quantization of exported AARM graphs: calibration clips, Q/DQ quantization per target,
calibration caches and per-layer sensitivity.

    from calibration import CalibrationConfig, calibrate
    result = calibrate(Path("model.onnx"), Path("model.int8.onnx"), CalibrationConfig(data=Path("UCF101")))

Names are imported on first use, so `import calibration` stays light.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "ClipReader": "calibration.reader",
    "ClipSet": "calibration.reader",
    "find_clips": "calibration.reader",
    "choose_clips": "calibration.reader",
    "clips_identity": "calibration.reader",
    "sidecar_preprocessing": "calibration.reader",
    "calibrate": "calibration.quantize",
    "CalibrationConfig": "calibration.quantize",
    "CalibrationReport": "calibration.report",
    "CalibrationResult": "calibration.quantize",
    "compute_ranges": "calibration.quantize",
    "quantize_graph": "calibration.quantize",
    "prepare_graph": "calibration.quantize",
    "METHODS": "calibration.quantize",
    "TARGETS": "calibration.quantize",
    "cache_key": "calibration.cache",
    "load_ranges": "calibration.cache",
    "save_ranges": "calibration.cache",
    "write_tensorrt_table": "calibration.cache",
    "layer_groups": "calibration.sensitivity",
    "measure_sensitivity": "calibration.sensitivity",
    "float_variant": "calibration.sensitivity",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'calibration' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)

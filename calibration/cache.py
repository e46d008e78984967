"""Calibration caches: tensor ranges computed once, reused by later runs with the same graph, data and method.

    key = cache_key(graph_sha256, clips_identity(clips, prep), "entropy")
    ranges = load_ranges(Path("model.calib.json"), key)       # TensorsData, or None on a miss
    save_ranges(Path("model.calib.json"), key, ranges, meta={...})
    write_tensorrt_table(ranges, Path("model.int8.calibration.cache"))

The JSON cache holds any number of entries, one per key: {"format": "aarm-calibration-cache", "version": 1,
"entries": {key: {"method", "meta", "ranges": {tensor: [lowest, highest]}}}}. The key hashes the graph,
the calibration clips' identity, the method and onnxruntime's version, so a different graph or data set
never reads another's ranges.

For TensorRT the calibration is the Q/DQ graph: TensorRT 10 and 11 both build it as a strongly typed network
and read the scales from it. The table is only for TensorRT 10's implicit-quantization calibrators (an
`IInt8Calibrator` whose `read_calibration_cache` returns it; TensorRT 11 has no calibrators). Its text format
is the one those calibrators write: a "TRT-<NV_TENSORRT_VERSION>-<algorithm>" header, then one
"tensor: <big-endian hex of the float32 scale>" line per tensor, scale = max(|lowest|, |highest|) / 127. The
header's algorithm is the calibrator class that accepts the table, named for the method the ranges came from
(`TENSORRT_CALIBRATORS`): minmax -> MinMaxCalibration (IInt8MinMaxCalibrator), entropy -> EntropyCalibration2
(IInt8EntropyCalibrator2; the thresholds are onnxruntime's KL search, the same idea as TensorRT's). TensorRT
has no percentile calibrator: percentile ranges are written as MinMaxCalibration, the calibrator that takes
each range as given, which is what a percentile-clipped range is.
"""

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData

from aarm.errors import ConfigError
from aarm.fileio import write_json, write_text
from runtime.errors import ArtifactError

CACHE_FORMAT = "aarm-calibration-cache"
CACHE_VERSION = 1
# NV_TENSORRT_VERSION (major * 10000 + minor * 100 + patch) of TensorRT 10.3, JetPack 6's: the newest line of
# TensorRT with calibrators is 10, and a calibrator may ignore a table whose header names another version.
TENSORRT_VERSION = 100300
# onnxruntime calibration method -> the header algorithm of the TensorRT 10 calibrator that reads its ranges.
TENSORRT_CALIBRATORS = {"MinMax": "MinMaxCalibration", "Entropy": "EntropyCalibration2",
                        "Percentile": "MinMaxCalibration"}


def cache_key(graph_sha256: str, data_identity: str, method: str, options: dict[str, Any] | None = None) -> str:
    """sha256 of what decides the ranges: graph, calibration data, method (and its options), onnxruntime."""
    payload = {
        "graph": graph_sha256, "data": data_identity, "method": method, "options": options or {},
        "onnxruntime": onnxruntime.__version__,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: unreadable calibration cache ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
        raise ArtifactError(f"{path}: not an aarm calibration cache (no format tag {CACHE_FORMAT!r})")
    if data.get("version") != CACHE_VERSION:
        raise ArtifactError(f"{path}: calibration cache version {data.get('version')}, this aarm reads {CACHE_VERSION}")
    return data


def ranges_to_json(ranges: TensorsData) -> dict[str, list[float]]:
    """{tensor: [lowest, highest]} (float32 values, exact in JSON)."""
    return {name: [float(np.asarray(d.lowest).reshape(-1)[0]), float(np.asarray(d.highest).reshape(-1)[0])]
            for name, d in ranges.items()}


def ranges_from_json(method: str, ranges: dict[str, list[float]]) -> TensorsData:
    """TensorsData that quantize_static takes, from {tensor: [lowest, highest]}."""
    if method not in CalibrationMethod.__members__:
        raise ArtifactError(f"calibration cache entry has unknown calibration method {method!r}")
    calib = CalibrationMethod[method]
    data = {name: TensorData(lowest=np.array(lo, dtype=np.float32), highest=np.array(hi, dtype=np.float32))
            for name, (lo, hi) in ranges.items()}
    return TensorsData(calib, data)


def load_ranges(path: str | Path, key: str) -> TensorsData | None:
    """The ranges stored under `key` in the cache at `path`; None when the file or the entry is absent."""
    path = Path(path)
    if not path.exists():
        return None
    entry = _read(path)["entries"].get(key)
    if entry is None:
        return None
    return ranges_from_json(entry["calibration_method"], entry["ranges"])


def save_ranges(path: str | Path, key: str, ranges: TensorsData, *, meta: dict[str, Any] | None = None) -> Path:
    """Add (or replace) the entry `key` in the cache at `path`, keeping the other entries; atomic."""
    path = Path(path)
    data = _read(path) if path.exists() else {"format": CACHE_FORMAT, "version": CACHE_VERSION, "entries": {}}
    data["entries"][key] = {
        "calibration_method": ranges.calibration_method.name, "meta": meta or {}, "ranges": ranges_to_json(ranges),
    }
    return write_json(path, data)


def tensorrt_scale(lowest: float, highest: float) -> float:
    """Symmetric int8 scale of a range: max(|lowest|, |highest|) / 127."""
    return max(abs(float(lowest)), abs(float(highest))) / 127.0


def tensorrt_calibrator(method: CalibrationMethod) -> str:
    """The header algorithm of the TensorRT 10 calibrator that reads ranges of `method` (TENSORRT_CALIBRATORS)."""
    if method.name not in TENSORRT_CALIBRATORS:
        raise ConfigError(f"{method.name} ranges have no TensorRT calibrator table form; the Q/DQ graph carries "
                          f"them (use one of {', '.join(TENSORRT_CALIBRATORS).lower()} for a table)")
    return TENSORRT_CALIBRATORS[method.name]


def write_tensorrt_table(ranges: TensorsData, path: str | Path, *, version: int = TENSORRT_VERSION) -> Path:
    """A TensorRT 10 calibration table (text): "TRT-<version>-<algorithm>" with the algorithm of the ranges'
    method (`tensorrt_calibrator`), then "tensor: <big-endian hex of float32 scale>" lines. version:
    NV_TENSORRT_VERSION of the TensorRT 10 that reads it; TensorRT 11 has no calibrators (version >= 110000 is a
    ConfigError)."""
    if not 100000 <= version < 110000:
        raise ConfigError(f"calibration tables are for TensorRT 10 (version 100000..109999), got {version}; "
                          "TensorRT 11 reads the scales from the Q/DQ graph")
    lines = [f"TRT-{version}-{tensorrt_calibrator(ranges.calibration_method)}"]
    for name, (lo, hi) in sorted(ranges_to_json(ranges).items()):
        lines.append(f"{name}: {struct.pack('>f', tensorrt_scale(lo, hi)).hex()}")
    return write_text(path, "\n".join(lines) + "\n")


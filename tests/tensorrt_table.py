"""TensorRT calibration tables read back, to check the ones `calibration.cache.write_tensorrt_table` writes
(the project itself only writes them; TensorRT 10's calibrator reads them)."""

import struct
from pathlib import Path


def table_scales(path: str | Path) -> dict[str, float]:
    """{tensor: scale} of the table at `path`: a "TRT-<version>-<algorithm>" header, then one
    "<tensor>: <big-endian hex of the float32 scale>" line per tensor."""
    header, *lines = Path(path).read_text().splitlines()
    assert header.startswith("TRT-"), f"{path}: no TRT-<version>-<algorithm> header: {header!r}"
    pairs = [line.rpartition(": ") for line in lines]
    assert all(sep for _, sep, _ in pairs), f"{path}: a line is not '<tensor>: <hex scale>'"
    return {name: struct.unpack(">f", bytes.fromhex(value))[0] for name, _, value in pairs}

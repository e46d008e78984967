"""Fused AARM kernels for onnxruntime's CPU execution provider (custom-op domain `com.aarm`).

`AarmPool` reads a feature map once for all four of AARM's poolings (CAM's global average / max, STAM's
channel average / max); `AarmGate` applies the rewritten parallel fusion `M * (w1*F_ch + w2*F_st) + b`,
with the block's residual addition and ReLU, in one pass. `export.passes.fuse_aarm_kernels` puts them
into an optimised graph; such a graph needs this library registered in its session (see
`export.verify.session`), while the standard-op graph stays the portable artifact.

The library is compiled from `aarm_ops.cc` with the machine's g++ on first use (onnxruntime's wheels ship
no C headers; `ort_abi.h` declares the slice of its stable C ABI that is used) and cached per source and
CPU under $AARM_KERNEL_CACHE (default ~/.cache/aarm/kernels). Each build is recorded in that folder's
manifest (`runtime.kernel_library.record_library`: sha256, ops, CPU, tested onnxruntime range); the runtime
registers the library only from that record, never from a path in a sidecar.

The ABI is declared by table position, so the kernels are built and loaded only on the onnxruntime versions
they were tested against: `TESTED_ONNXRUNTIME`, lowest inclusive, highest exclusive (tested on 1.31.1; the
`OrtApi` table is append-only, but a version outside the range has not been run against these positions).
"""

import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

from aarm.errors import BackendUnavailable
from runtime.kernel_library import (
    DOMAIN,
    cache_dir,
    cpu_key,
    is_recorded,
    onnxruntime_version,
    record_library,
    version_in_range,
)

OPSET = 1
OPS = ("AarmPool", "AarmGate", "AarmPoolNchwc", "AarmGateNchwc")
TESTED_ONNXRUNTIME = ("1.31.0", "1.32.0")
SOURCES = ("aarm_ops.cc", "ort_abi.h")
LIBRARY = "libaarm_ort_ops.so"
BUILD_TIMEOUT_S = 300
CXXFLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fPIC", "-shared", "-std=c++17", "-fvisibility=hidden")

__all__ = ["DOMAIN", "OPS", "OPSET", "TESTED_ONNXRUNTIME", "custom_op_library"]


@cache
def custom_op_library() -> Path:
    """Path of the compiled kernel library, building it on first use and recording it in the kernel cache's
    manifest. BackendUnavailable without a C++ compiler, on a platform other than Linux, or on an onnxruntime
    outside `TESTED_ONNXRUNTIME`."""
    if platform.system() != "Linux":
        raise BackendUnavailable(f"the AARM CPU kernels build on Linux only, not {platform.system()}")
    running = onnxruntime_version()
    if running is None or not version_in_range(running, TESTED_ONNXRUNTIME):
        low, high = TESTED_ONNXRUNTIME
        raise BackendUnavailable(f"the AARM CPU kernels are tested on onnxruntime >={low},<{high}, not {running}; "
                                 "use the standard-op graph")
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        raise BackendUnavailable("no C++ compiler (g++) to build the AARM CPU kernels; use the standard-op graph")
    here = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update((here / name).read_bytes())
    digest.update(" ".join((compiler, *CXXFLAGS, cpu_key())).encode())
    sources = digest.hexdigest()
    target = cache_dir() / sources[:16] / LIBRARY
    if target.is_file() and is_recorded(target, domain=DOMAIN, sources=sources):
        return target  # built here before and unchanged since; anything else is rebuilt and recorded anew
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".build.", suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        try:
            done = subprocess.run([compiler, *CXXFLAGS, str(here / "aarm_ops.cc"), "-o", tmp],
                                  capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise BackendUnavailable(f"building the AARM CPU kernels took over {BUILD_TIMEOUT_S} s; use the "
                                     "standard-op graph") from None
        if done.returncode != 0:
            first = next((ln for ln in done.stderr.splitlines() if "error" in ln), done.stderr.strip()[:200])
            raise BackendUnavailable(f"building the AARM CPU kernels failed: {first}")
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    record_library(target, domain=DOMAIN, ops=list(OPS), tested=TESTED_ONNXRUNTIME, sources=sources)
    return target

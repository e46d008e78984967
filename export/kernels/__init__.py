"""Fused AARM kernels for onnxruntime's CPU execution provider (custom-op domain `com.aarm`).

`AarmPool` reads a feature map once for all four of AARM's poolings (CAM's global average / max, STAM's
channel average / max); `AarmGate` applies the rewritten parallel fusion `M * (w1*F_ch + w2*F_st) + b`,
with the block's residual addition and ReLU, in one pass. `export.passes.fuse_aarm_kernels` puts them
into an optimised graph; such a graph needs this library registered in its session (see
`export.verify.session`), while the standard-op graph stays the portable artifact.

The library is compiled from `aarm_ops.cc` with the machine's g++ on first use (onnxruntime's wheels ship
no C headers; `ort_abi.h` declares the slice of its stable C ABI that is used) and cached per source and
CPU under $AARM_KERNEL_CACHE (default ~/.cache/aarm/kernels).
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

DOMAIN = "com.aarm"
OPSET = 1
SOURCES = ("aarm_ops.cc", "ort_abi.h")
LIBRARY = "libaarm_ort_ops.so"
CXXFLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fPIC", "-shared", "-std=c++17", "-fvisibility=hidden")


def _cpu_key() -> str:
    try:
        flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "")
    except OSError:
        flags = ""
    return f"{platform.machine()}|{flags}"


def _cache_dir() -> Path:
    return Path(os.environ.get("AARM_KERNEL_CACHE", Path.home() / ".cache" / "aarm" / "kernels"))


@cache
def custom_op_library() -> Path:
    """Path of the compiled kernel library, building it on first use. BackendUnavailable without a C++ compiler
    or on a platform other than Linux."""
    if platform.system() != "Linux":
        raise BackendUnavailable(f"the AARM CPU kernels build on Linux only, not {platform.system()}")
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        raise BackendUnavailable("no C++ compiler (g++) to build the AARM CPU kernels; use the standard-op graph")
    here = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update((here / name).read_bytes())
    digest.update(" ".join((compiler, *CXXFLAGS, _cpu_key())).encode())
    target = _cache_dir() / digest.hexdigest()[:16] / LIBRARY
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".build.", suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        done = subprocess.run([compiler, *CXXFLAGS, str(here / "aarm_ops.cc"), "-o", tmp],
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            first = next((ln for ln in done.stderr.splitlines() if "error" in ln), done.stderr.strip()[:200])
            raise BackendUnavailable(f"building the AARM CPU kernels failed: {first}")
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target

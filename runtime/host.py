"""Facts about the machine a measurement ran on: CPU, cores, threads, versions, and how busy it was.

`host_info()` is what a bench result and a latency-regression fingerprint record; `CpuUse` measures, over
a block of work, how much CPU time other processes took on the cores this process may run on (the
benchmark's "busy" flag), next to the load averages before and after.
"""

import os
import platform
import resource
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import numpy as np

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "ORT_NUM_THREADS")


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> list[int]:
    """The CPUs this process may run on (its affinity mask; all CPUs where there is none)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def load_average() -> list[float] | None:
    """The 1, 5 and 15-minute load averages (None where the system has none)."""
    try:
        return [round(v, 3) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def thread_settings() -> dict[str, Any]:
    """Thread counts that shape inference speed: PyTorch's intra/inter-op threads (when torch is loaded)
    and the thread environment variables that are set."""
    out: dict[str, Any] = {"env": {k: os.environ[k] for k in THREAD_ENV if k in os.environ}}
    torch = sys.modules.get("torch")
    if torch is not None:
        out["torch_intra_op"] = torch.get_num_threads()
        out["torch_inter_op"] = torch.get_num_interop_threads()
    return out


def software_versions() -> dict[str, str | None]:
    """Installed versions of the packages that shape an artifact (None where absent): what every sidecar and
    host_info record."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("aarm", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "onnx-graphsurgeon", "tensorrt",
                 "polygraphy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def host_info() -> dict[str, Any]:
    """CPU model, cores (all and usable), OS, Python, numpy and the inference libraries' versions, GPU.

    The flat keys (cpu, cores, machine, system, gpu, onnxruntime, torch, numpy, ...) are what a latency
    baseline's fingerprint hashes; `versions` is the artifact sidecars' full version table."""
    versions = software_versions()
    info: dict[str, Any] = {
        "hostname": platform.node(), "cpu": cpu_model(), "cores": os.cpu_count(), "usable_cores": len(usable_cores()),
        "machine": platform.machine(), "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(), "numpy": np.__version__, "torch": versions.get("torch"),
        "onnxruntime": versions.get("onnxruntime-gpu") or versions.get("onnxruntime"),
        "tensorrt": versions.get("tensorrt"), "versions": versions,
    }
    gpu = gpu_name()
    if gpu:
        info["gpu"] = gpu
    return info


def gpu_name() -> str | None:
    """The first CUDA device's name, where PyTorch sees one."""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def _proc_stat_busy(cpus: list[int]) -> float | None:
    """Seconds the given CPUs have spent busy (user, nice, system, irq, softirq, steal) since boot."""
    try:
        with open("/proc/stat") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    wanted = {f"cpu{i}" for i in cpus}
    ticks = 0
    for line in lines:
        parts = line.split()
        if parts and parts[0] in wanted:
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in parts[1:9])
            ticks += user + nice + system + irq + softirq + steal
    return ticks / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


# Other processes using more than this many cores on average, on the CPUs a benchmark runs on, make it
# "busy"; without /proc/stat, a 1-minute load average over BUSY_LOAD_PER_CORE x usable cores does.
BUSY_OTHER_CORES = 0.25
BUSY_LOAD_PER_CORE = 0.5


@dataclass
class CpuUse:
    """CPU use over a block: `with CpuUse() as use: ...`, then `use.result()`.

    others_cores: CPU time other processes took on this process's usable CPUs, divided by the wall time
    (0.5 = half a core kept busy throughout); own_cores likewise for this process (all its threads)."""

    def __enter__(self) -> "CpuUse":
        self.cpus = usable_cores()
        self.load_before = load_average()
        self.busy0, self.own0, self.t0 = _proc_stat_busy(self.cpus), _own_cpu_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.t0
        self.busy1, self.own1 = _proc_stat_busy(self.cpus), _own_cpu_seconds()
        self.load_after = load_average()

    def result(self) -> dict[str, Any]:
        """JSON-ready: wall_s, own_cores, others_cores (None without /proc/stat), load before/after, busy
        (with the rule that decided it in `busy_rule`)."""
        own = (self.own1 - self.own0) / self.wall if self.wall > 0 else 0.0
        others = None
        if self.busy0 is not None and self.busy1 is not None and self.wall > 0:
            # /proc/stat counts in clock ticks (10 ms): clip the rounding below zero
            others = max(0.0, (self.busy1 - self.busy0) / self.wall - own)
        cores = len(self.cpus)
        if others is not None:
            busy = others > BUSY_OTHER_CORES
            rule = f"other processes used {others:.2f} cores on the {cores} usable (busy over {BUSY_OTHER_CORES})"
        elif self.load_before is not None:
            busy = self.load_before[0] > BUSY_LOAD_PER_CORE * cores
            rule = (f"1-min load average {self.load_before[0]:.2f} before the run "
                    f"(busy over {BUSY_LOAD_PER_CORE} x {cores} usable cores)")
        else:
            busy, rule = False, "no load measurement on this system"
        return {"wall_s": round(self.wall, 3), "usable_cores": cores, "own_cores": round(own, 3),
                "others_cores": None if others is None else round(others, 3), "load_before": self.load_before,
                "load_after": self.load_after, "busy": busy, "busy_rule": rule}

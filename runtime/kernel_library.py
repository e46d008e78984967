"""Which native custom-op library a session may load: only the one this installation built, only for a graph
that uses its op domain, only on an onnxruntime version it was tested against.

A sidecar never chooses native code. `export.kernels` builds the AARM CPU kernels into the kernel cache
($AARM_KERNEL_CACHE, default ~/.cache/aarm/kernels) and records each build in that folder's `manifest.json`:
the library's path and sha256, its op domain and ops, the CPU it was compiled for and the onnxruntime
versions its C ABI (declared by table position in `export/kernels/ort_abi.h`) was tested against. The runtime
reads that record, never the sidecar, when a graph imports the domain:

    ops = graph_custom_ops(model)                   # {"com.aarm": {"AarmPool", "AarmGate"}} or {}
    if DOMAIN in ops:
        options.register_custom_ops_library(str(trusted_library(DOMAIN, ops[DOMAIN])))

`trusted_library` raises a one-line ArtifactError when there is no record for this CPU, the file is missing,
outside the cache or differs from its recorded sha256, the running onnxruntime is outside the tested range, or
the graph uses an op the library does not provide.
"""

import hashlib
import os
import platform
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import onnx

from aarm.fileio import write_json
from runtime.artifact import file_sha256
from runtime.errors import ArtifactError
from runtime.graph_precision import all_nodes

DOMAIN = "com.aarm"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
FALLBACK = "re-run optimize with `kernels` on this machine, or use the standard-op graph"


def cache_dir() -> Path:
    """Where the project builds and records its kernels: $AARM_KERNEL_CACHE or ~/.cache/aarm/kernels."""
    return Path(os.environ.get("AARM_KERNEL_CACHE", Path.home() / ".cache" / "aarm" / "kernels"))


def manifest_path() -> Path:
    return cache_dir() / MANIFEST


def cpu_key() -> str:
    """The machine and its CPU flags: a library compiled with -march=native runs only on the CPU it was built on."""
    try:
        flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "")
    except OSError:
        flags = ""
    return f"{platform.machine()}|{flags}"


def cpu_id() -> str:
    """A short, stable digest of `cpu_key()` (what the manifest records)."""
    return hashlib.sha256(cpu_key().encode()).hexdigest()[:16]


def onnxruntime_version() -> str | None:
    """The installed onnxruntime's version, None when it is not installed."""
    try:
        import onnxruntime
    except ImportError:
        return None
    return str(onnxruntime.__version__)


def version_tuple(version: str) -> tuple[int, ...]:
    """(1, 31, 1) from "1.31.1" (a suffix such as ".dev20250101" or "+cu124" is dropped)."""
    parts = []
    for piece in version.split("+")[0].split("."):
        m = re.match(r"\d+", piece)
        if m is None:
            break
        parts.append(int(m.group()))
        if m.end() != len(piece):
            break
    if not parts:
        raise ArtifactError(f"cannot read the version {version!r}")
    return tuple(parts)


def version_in_range(version: str, tested: tuple[str, str]) -> bool:
    """Whether `version` lies in [tested[0], tested[1]) (lowest inclusive, highest exclusive)."""
    low, high = (version_tuple(v) for v in tested)
    v = version_tuple(version)
    return low <= v < high


def _read_manifest() -> list[dict[str, Any]]:
    """The recorded builds; [] when there is no manifest. A malformed manifest is an ArtifactError."""
    import json

    path = manifest_path()
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: unreadable kernel manifest ({exc}); {FALLBACK}") from None
    entries = data.get("libraries") if isinstance(data, dict) else None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT or not isinstance(entries, list):
        raise ArtifactError(f"{path}: not a kernel manifest of format {MANIFEST_FORMAT}; {FALLBACK}")
    for e in entries:
        ok = (isinstance(e, dict) and all(isinstance(e.get(k), str) for k in ("domain", "path", "sha256", "cpu"))
              and isinstance(e.get("ops"), list) and all(isinstance(o, str) for o in e["ops"])
              and isinstance(e.get("onnxruntime_tested"), list) and len(e["onnxruntime_tested"]) == 2
              and all(isinstance(v, str) for v in e["onnxruntime_tested"]))
        if not ok:
            raise ArtifactError(f"{path}: malformed kernel record {str(e)[:80]}; {FALLBACK}")
    return entries


def record_library(
    library: Path, *, domain: str, ops: list[str], tested: tuple[str, str], sources: str
) -> dict[str, Any]:
    """Record a library that `export.kernels` has just built in the cache's manifest: its sha256,
    domain, ops, this CPU and the onnxruntime range [tested[0], tested[1]) its ABI was tested on. Replaces an
    earlier record of the same domain and CPU. Returns the record."""
    library = Path(library).resolve()
    record = {
        "domain": domain, "ops": sorted(ops), "path": str(library), "sha256": file_sha256(library),
        "cpu": cpu_id(), "onnxruntime_built": onnxruntime_version() or "", "onnxruntime_tested": list(tested),
        "sources": sources, "recorded": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    try:
        entries = _read_manifest()
    except ArtifactError:  # a broken manifest is replaced by the build that is recorded now
        entries = []
    entries = [e for e in entries if (e["domain"], e["cpu"]) != (domain, record["cpu"])]
    write_json(manifest_path(), {"format": MANIFEST_FORMAT, "libraries": [*entries, record]})
    return record


def is_recorded(library: Path, *, domain: str, sources: str) -> bool:
    """Whether the manifest records `library` for `domain` on this CPU, built from `sources`, with the file's
    current sha256 (a cached file without such a record is not trusted and gets rebuilt)."""
    try:
        entries = _read_manifest()
    except ArtifactError:
        return False
    path = str(Path(library).resolve())
    for e in entries:
        if (e["domain"], e["cpu"], e["path"], e.get("sources")) == (domain, cpu_id(), path, sources):
            return Path(path).is_file() and file_sha256(Path(path)) == e["sha256"]
    return False


def trusted_library(domain: str, ops: set[str], *, where: str = "the graph") -> Path:
    """The library this installation built for `domain` on this CPU, checked: the file lies in the kernel
    cache and has its recorded sha256, the running onnxruntime is in the tested range, and it provides every
    op in `ops`. ArtifactError otherwise (`where` names the graph in the message)."""
    need = f"{where} uses the {domain} custom ops"
    record = next((e for e in _read_manifest() if e["domain"] == domain and e["cpu"] == cpu_id()), None)
    if record is None:
        raise ArtifactError(f"{need}, but this installation has built no library for them on this CPU "
                            f"(no record in {manifest_path()}); {FALLBACK}")
    library = Path(record["path"])
    root = cache_dir().resolve()
    if not library.resolve().is_relative_to(root):
        raise ArtifactError(f"{need}, but the recorded library {library} lies outside the kernel cache {root}; "
                            f"{FALLBACK}")
    if not library.is_file():
        raise ArtifactError(f"{need}, but their library {library} is missing; {FALLBACK}")
    if file_sha256(library) != record["sha256"]:
        raise ArtifactError(f"{need}, but their library {library} differs from the one built here (sha256); "
                            f"{FALLBACK}")
    running = onnxruntime_version()
    low, high = record["onnxruntime_tested"]
    if running is None or not version_in_range(running, (low, high)):
        raise ArtifactError(f"{need}, whose kernels were tested on onnxruntime >={low},<{high}, not {running}; "
                            "use the standard-op graph")
    missing = sorted(set(ops) - set(record["ops"]))
    if missing:
        raise ArtifactError(f"{need} {', '.join(missing)}, which the library built here does not provide; {FALLBACK}")
    return library


def recorded_ops(domain: str) -> set[str]:
    """The ops of the library recorded for `domain` on this CPU (empty without a record)."""
    record = next((e for e in _read_manifest() if e["domain"] == domain and e["cpu"] == cpu_id()), None)
    return set(record["ops"]) if record is not None else set()


def graph_custom_ops(model: onnx.ModelProto) -> dict[str, set[str]]:
    """{domain: op types} of the nodes outside onnxruntime's own domains, over the main graph, its subgraphs and
    model-local functions. A domain the model imports without using it is left out (it needs no library)."""
    builtin = {"", "ai.onnx", "ai.onnx.ml", "ai.onnx.training", "ai.onnx.preview.training", "com.microsoft",
               "com.microsoft.nchwc", "com.ms.internal.nhwc"}
    local = {(f.domain, f.name) for f in model.functions}
    found: dict[str, set[str]] = {}
    for node in all_nodes(model):
        if node.domain not in builtin and (node.domain, node.op_type) not in local:
            found.setdefault(node.domain, set()).add(node.op_type)
    return found

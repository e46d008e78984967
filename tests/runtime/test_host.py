"""Host facts, recorded once for bench and regress, and the busy-machine measurement."""

import subprocess
import sys
import time

import pytest

import runtime.bench
import runtime.regress
from runtime.host import BUSY_OTHER_CORES, CpuUse, host_info, software_versions, usable_cores


def test_one_source_of_host_facts():
    assert runtime.bench.host_info is host_info and runtime.regress.host_info is host_info
    info = host_info()
    assert info["versions"] == software_versions()  # the sidecars' version table, not a second list
    assert info["cpu"] and info["cores"] >= info["usable_cores"] == len(usable_cores()) >= 1
    assert info["onnxruntime"] in (info["versions"]["onnxruntime"], info["versions"]["onnxruntime-gpu"])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/stat")
def test_other_work_on_our_cores_marks_the_run_busy():
    """A child process spinning for a second is other work on the same cores: others_cores counts it, and
    this process, only waiting, uses next to no CPU."""
    spin = "import time\nt = time.perf_counter()\nwhile time.perf_counter() - t < 1.2: pass"
    child = subprocess.Popen([sys.executable, "-c", spin])
    time.sleep(0.1)
    with CpuUse() as use:
        time.sleep(1.0)
    child.wait()
    r = use.result()
    assert r["others_cores"] > BUSY_OTHER_CORES and r["busy"] and "other processes used" in r["busy_rule"]
    assert r["own_cores"] < 0.2 and 0.9 < r["wall_s"] < 3 and len(r["load_before"]) == 3

"""Report: self-contained HTML with embedded PNG plots, and Markdown with the same tables."""

import base64
import json
import re

import pytest
from sleepy import SleepRunner
from typer.testing import CliRunner

from aarm.errors import AarmError, ConfigError
from aarm.fileio import write_json
from export.cli import app
from runtime.backends import open_runner
from runtime.bench import benchmark
from runtime.parity import compare
from runtime.regress import RatioMeasurement, RegressResult
from runtime.report import build_report, load_results


@pytest.fixture(scope="module")
def results(tiny, tmp_path_factory):
    d = tmp_path_factory.mktemp("results")
    bench = benchmark([SleepRunner("a.onnx", 0.002), SleepRunner("b.onnx", 0.004)], batches=[1, 4], iterations=6,
                      warmup=1, rounds=2, flops=False, reference=False)
    parity = compare(open_runner(tiny.onnx, threads=1), open_runner(tiny.checkpoint), samples=4, batch=4)
    m = RatioMeasurement("a.onnx", "reference:mixed", 1.2, 1.1, 1.3, 0.95, [1.2] * 3, [2.0] * 3, [1.7] * 3, 5, 1)
    regress = RegressResult("fail", "1.200x mixed over the 10% tolerance", "a.onnx", "a.onnx", {}, measurement=m,
                            baseline_ratio=1.0, threshold=1.1)
    return [write_json(d / "bench.json", bench.to_json()), write_json(d / "parity.json", parity.to_dict()),
            write_json(d / "regress.json", regress.to_dict())]


def test_report_embeds_plots_and_writes_markdown(results, tmp_path):
    html_path, md_path = build_report(results, tmp_path / "report.html")
    html = html_path.read_text()
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)
    assert len(images) == 4  # latency at batch 1 and 4, throughput, parity
    assert all(base64.b64decode(img).startswith(b"\x89PNG\r\n\x1a\n") for img in images)
    assert "<script" not in html and "http" not in html  # nothing fetched from elsewhere
    for text in ("Benchmark", "Parity", "Latency regression", "a.onnx", "b.onnx", "model.onnx", "pass", "fail"):
        assert text in html, text
    md = md_path.read_text()
    assert md_path == tmp_path / "report.md"
    assert "| artifact | provider | threads | precision | batch |" in md and "| a.onnx | sleep | default |" in md
    for text in ("speed-up vs a.onnx (x, higher is faster)", "95% interval", "baseline", "Method:", "Host:",
                 "Load:"):  # one convention: speed-up, named with its baseline; how and where it was measured
        assert text in html and text in md, text
    b1 = next(r for r in json.loads(results[0].read_text())["results"] if r["name"] == "b.onnx" and r["batch"] == 1)
    assert b1["speedup"]["value"] < 1 and b1["speedup"]["low"] <= b1["speedup"]["value"] <= b1["speedup"]["high"]
    cell = md.split("| b.onnx |")[1].split("|")[8].strip()  # b sleeps twice as long: a speed-up below 1
    assert "vs first" not in html and cell == f"{b1['speedup']['value']:.2f}x", cell
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) == 4 and all((tmp_path / link).read_bytes().startswith(b"\x89PNG") for link in links)
    with pytest.raises(AarmError, match="exists; pass `force` to overwrite it"):
        build_report(results, html_path)
    build_report(results[:1], html_path, force=True)
    assert "Parity" not in html_path.read_text()


def test_report_refuses_unknown_results(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"kind": "something"}))
    with pytest.raises(ConfigError, match="no known \"kind\""):
        load_results([bad])
    with pytest.raises(ConfigError, match="not found"):
        load_results([tmp_path / "missing.json"])
    with pytest.raises(ConfigError, match=".html"):
        build_report([bad], tmp_path / "report.pdf")


def test_report_command(results, tmp_path):
    out = tmp_path / "r.html"
    res = CliRunner().invoke(app, ["report", *map(str, results), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert out.is_file() and (tmp_path / "r.md").is_file() and (tmp_path / "r_files" / "throughput.png").is_file()


def test_report_refuses_an_old_bench_result(results, tmp_path):
    old = json.loads(results[0].read_text())
    old["version"] = 1
    path = write_json(tmp_path / "old.json", old)
    with pytest.raises(ConfigError, match="bench result version 1 .* rerun `benchmark`$"):  # runtime.bench's
        build_report([path], tmp_path / "r.html")
    res = CliRunner().invoke(app, ["report", str(path), "-o", str(tmp_path / "r.html")])
    assert str(res.exception).endswith(": rerun aarm-export bench")  # the command, on the command line

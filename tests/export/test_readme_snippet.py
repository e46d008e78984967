"""The Python API snippet runs as written, on files it makes itself: docs/api.md's ```python block, and the
README's once it carries the same snippet (the README's old one needed a file nobody gave the user)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def python_block(path: Path) -> str:
    """The first ```python block of a Markdown file."""
    match = re.search(r"^```python\n(.*?)^```", path.read_text(), re.S | re.M)
    assert match, f"{path}: no ```python block"
    return match.group(1)


def test_readme_carries_the_tested_snippet():
    readme = python_block(ROOT / "README.md")
    if "resnet50-imagenet.pth" in readme:
        pytest.skip("README.md still has the old snippet; docs/api.md's replaces it")
    assert readme == python_block(ROOT / "docs" / "api.md")


@pytest.mark.slow
def test_api_snippet_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = python_block(ROOT / "docs" / "api.md")
    exec(compile(code, "docs/api.md", "exec"), {"__name__": "__snippet__"})
    out = capsys.readouterr().out
    assert re.search(r"epoch 1: loss \d+\.\d+, held-out top-1 \d+%", out)  # progress while it trains
    assert "Prediction(path='aarm-api/data/videos/" in out
    assert (tmp_path / "aarm-api" / "model.onnx.json").is_file()

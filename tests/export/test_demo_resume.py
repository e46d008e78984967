"""`aarm-export demo` (and `make demo`) run twice: the second run resumes instead of asking for --force; other
settings or a folder that is not a demo are a one-line error naming what is in the way."""

import json
from dataclasses import asdict

import pytest

from aarm.errors import ConfigError
from export.demo import RECORD, DemoSettings, demo_state, run_demo

TINY = DemoSettings(classes=2, videos_per_class=4, frames=8, video_size=32, size=32, epochs=2, batch_size=4)


def test_state_of_a_folder(tmp_path):
    assert demo_state(tmp_path / "new", TINY) == "new"
    assert demo_state(tmp_path, TINY) == "new"  # empty
    (tmp_path / RECORD).write_text(json.dumps({"settings": asdict(TINY)}))
    assert demo_state(tmp_path, TINY) == "resume"
    with pytest.raises(ConfigError, match=r"made with epochs = 2, this run asks 5; pass --force \(make demo FORCE=1\)"):
        demo_state(tmp_path, DemoSettings(**{**asdict(TINY), "epochs": 5}))
    (tmp_path / RECORD).unlink()
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds no demo.json"):
        demo_state(tmp_path, TINY)
    with pytest.raises(ConfigError, match="is not a folder"):
        demo_state(tmp_path / "notes.txt", TINY)


@pytest.mark.slow
def test_second_run_resumes_and_keeps_everything(tmp_path):
    out = tmp_path / "demo"
    first: list[str] = []
    run_demo(out, TINY, log=first.append)
    files = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    second: list[str] = []
    result, checkpoint = run_demo(out, TINY, log=second.append)
    assert any("made by an earlier run, kept" in line for line in second)
    assert any("done by an earlier run, kept" in line for line in second)
    assert all(s.skipped for s in result.stages.values()), second
    assert {p: p.stat().st_mtime_ns for p in files} == files  # not one file rewritten
    assert checkpoint == out / "train" / "best.pt"

"""Parameter counts against the paper's Table 6 (101 classes), and the `aarm-export models` table."""

import json

import pytest
from typer.testing import CliRunner

from aarm.models.summary import parameter_table
from export.cli import app

# Table 6: ResNet-50, millions of parameters (RGB, optical flow).
TABLE_6 = {"none": (23.71, 23.76), "se": (26.22, 26.27), "cbam": (26.23, 26.28), "aarm": (26.25, 26.3)}


@pytest.fixture(scope="module")
def table():
    return {(r["model"], r["attention"]): r for r in parameter_table(101)}


@pytest.mark.parametrize("attention", list(TABLE_6))
def test_resnet50_matches_table_6(table, attention):
    row = table[("resnet50", attention)]
    rgb, flow = TABLE_6[attention]
    assert abs(row["rgb"] / 1e6 - rgb) < 0.1
    assert abs(row["flow"] / 1e6 - flow) < 0.1


def test_aarm_adds_little_over_se(table):
    se, ours = table[("resnet50", "se")]["rgb"], table[("resnet50", "aarm")]["rgb"]
    assert 0 < ours - se < 0.1e6  # a dense 2C -> C fusion conv would add ~40M


def test_models_command_prints_every_model_and_writes_json(tmp_path):
    out = tmp_path / "params.json"
    result = CliRunner().invoke(app, ["models", "--json", str(out)])
    assert result.exit_code == 0, result.output
    for name in ("resnet18", "resnet152", "vgg16", "c3d", "resnet3d18"):
        assert name in result.output
    rows = json.loads(out.read_text())
    assert len(rows) == 8 * 4
    assert {r["attention"] for r in rows} == {"none", "se", "cbam", "aarm"}

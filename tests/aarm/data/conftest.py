"""Fixtures shared by the data tests (tiny sizes: the whole folder runs in seconds)."""

from pathlib import Path

import pytest

from aarm.data.synthetic import make_synthetic


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 classes x 4 videos x 12 frames of 32 x 32."""
    out = tmp_path_factory.mktemp("synthetic") / "synth"
    make_synthetic(out, classes=2, videos_per_class=4, seed=3, frames=12, size=32)
    return out

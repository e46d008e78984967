"""Video data: annotation readers, decoding, sampling, transforms, datasets, synthetic data, optical flow.

    from aarm.data import load_split, VideoDataset, load_video_input
    split = load_split(Path("UCF101"), split=1, subset="train")
    dataset = VideoDataset(split.records, preprocessing, train=True)

Names are imported on first use, so `import aarm.data.preprocessing` stays light (no PyAV, no Pillow).
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Preprocessing": "aarm.data.preprocessing",
    "Split": "aarm.data.annotations",
    "VideoRecord": "aarm.data.annotations",
    "load_split": "aarm.data.annotations",
    "detect_format": "aarm.data.annotations",
    "frame_count": "aarm.data.video",
    "read_frames": "aarm.data.video",
    "read_rgb_frames": "aarm.data.frames",
    "read_flow_frames": "aarm.data.frames",
    "VideoDataset": "aarm.data.datasets",
    "load_video_input": "aarm.data.clips",
    "make_synthetic": "aarm.data.synthetic",
    "extract_flow": "aarm.data.flow",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'aarm.data' has no attribute {name!r}")

"""A torch Dataset of videos, sampled and transformed as a Preprocessing describes.

    ds = VideoDataset(split.records, preprocessing, train=True, seed=0)
    ds.set_epoch(epoch)              # before iterating a DataLoader (non-persistent workers) each epoch
    x, label = ds[0]                 # x: (V, K, C, H, W) for NKCHW or (V, C, T, H, W) for NCTHW

Training items (V = 1) draw their frames, crop and flip from numpy's generator seeded with
(seed, epoch, index): a run is reproducible, DataLoader workers never repeat each other and any item can
be regenerated alone. `flip=False` turns off the horizontal flip of training items (for classes that a
mirror swaps, such as the synthetic dataset's MoveLeft/MoveRight). Evaluation items (V = num_clips) are
deterministic and equal to `aarm.data.clips.load_video_input` for the same video.
"""

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from aarm.data.annotations import VideoRecord
from aarm.data.clips import count_frames, load_views
from aarm.data.preprocessing import Preprocessing
from aarm.errors import DataError


class VideoDataset(Dataset):
    """Videos (files or frame folders) -> (x float32 (V, *preprocessing.input_shape(1)[1:]), label int)."""

    def __init__(
        self, records: Sequence[VideoRecord], preprocessing: Preprocessing, *, train: bool, num_clips: int = 1,
        seed: int = 0, flip: bool = True,
    ) -> None:
        if num_clips < 1:
            raise DataError(f"num_clips must be >= 1, got {num_clips}")
        if not records:
            raise DataError("VideoDataset needs at least one video")
        self.records = list(records)
        self.preprocessing = preprocessing
        self.train = train
        self.num_clips = 1 if train else num_clips
        self.seed = seed
        self.flip = flip
        self.epoch = 0
        self._frames: dict[int, int] = {}

    def set_epoch(self, epoch: int) -> None:
        """Training randomness depends on the epoch; call this before each epoch's iteration."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def num_frames(self, index: int) -> int:
        """Frames (or flow fields) of video `index`, from its record or counted once and cached."""
        if index not in self._frames:
            record = self.records[index]
            n = record.num_frames
            self._frames[index] = n if n is not None else count_frames(record.path, self.preprocessing.modality)
        return self._frames[index]

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        record = self.records[index]
        x = load_views(
            record.path, self.preprocessing, train=self.train, num_clips=self.num_clips,
            rng=self.rng(index) if self.train else None, num_frames=self.num_frames(index), flip=self.flip,
        )
        return x, record.label

"""VideoDataset item shapes for every layout and modality; load_video_input equals the evaluation item."""

from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import write_frame_folder

from aarm.data import VideoDataset, load_split, load_video_input
from aarm.data.annotations import VideoRecord
from aarm.data.clips import sample_indices
from aarm.data.preprocessing import FLOW_MEAN, FLOW_STD, Preprocessing
from aarm.errors import DataError

RGB_TSN = Preprocessing(size=24, scale_size=28, segments=3)
FLOW_TSN = Preprocessing(
    modality="flow", size=24, scale_size=28, segments=3, flow_stack=4, mean=(FLOW_MEAN,) * 2, std=(FLOW_STD,) * 2
)
RGB_3D = Preprocessing(layout="NCTHW", size=24, scale_size=28, segments=1, frames=4, stride=2)
FLOW_3D = Preprocessing(
    modality="flow", layout="NCTHW", size=24, scale_size=28, segments=1, frames=4, stride=1,
    mean=(FLOW_MEAN,) * 2, std=(FLOW_STD,) * 2,
)


@pytest.fixture(scope="module")
def frame_folders(tmp_path_factory: pytest.TempPathFactory) -> list[VideoRecord]:
    root = tmp_path_factory.mktemp("frames")
    return [
        VideoRecord(write_frame_folder(root / f"v{i}", rgb=9, flows=8, size=(30, 40)), label=i) for i in range(2)
    ]


@pytest.mark.parametrize(("pre", "videos"), [(RGB_TSN, "files"), (RGB_TSN, "folders"), (RGB_3D, "files"),
                                             (FLOW_TSN, "folders"), (FLOW_3D, "folders")])
def test_item_shapes(pre: Preprocessing, videos: str, tiny_synthetic: Path, frame_folders: list) -> None:
    records = load_split(tiny_synthetic).records if videos == "files" else frame_folders
    train = VideoDataset(records, pre, train=True, seed=1)
    x, label = train[1]
    assert x.dtype == torch.float32 and x.shape == (1, *pre.input_shape(1)[1:])
    assert label == records[1].label
    x, _ = VideoDataset(records, pre, train=False, num_clips=3)[0]
    assert x.shape == (3, *pre.input_shape(1)[1:])
    assert torch.isfinite(x).all()


def test_expected_shapes_spelled_out(tiny_synthetic: Path, frame_folders: list) -> None:
    records = load_split(tiny_synthetic).records
    assert VideoDataset(records, RGB_TSN, train=True)[0][0].shape == (1, 3, 3, 24, 24)  # (V, K, C, H, W)
    assert VideoDataset(frame_folders, FLOW_TSN, train=True)[0][0].shape == (1, 3, 8, 24, 24)  # C = 2 * stack
    assert VideoDataset(records, RGB_3D, train=False, num_clips=2)[0][0].shape == (2, 3, 4, 24, 24)  # (V, C, T, H, W)


@pytest.mark.parametrize("pre", [RGB_TSN, RGB_3D])
def test_load_video_input_equals_evaluation_item(pre: Preprocessing, tiny_synthetic: Path) -> None:
    records = load_split(tiny_synthetic, subset="test").records
    dataset = VideoDataset(records, pre, train=False, num_clips=2)
    for i in (0, len(records) - 1):
        x, _ = dataset[i]
        assert torch.equal(x, load_video_input(records[i].path, pre, num_clips=2))


def test_load_video_input_flow_folder(frame_folders: list) -> None:
    dataset = VideoDataset(frame_folders, FLOW_TSN, train=False)
    assert torch.equal(dataset[1][0], load_video_input(frame_folders[1].path, FLOW_TSN))


def test_training_items_are_reproducible_per_seed_epoch_index(tiny_synthetic: Path) -> None:
    records = load_split(tiny_synthetic).records
    a = VideoDataset(records, RGB_TSN, train=True, seed=4)
    b = VideoDataset(records, RGB_TSN, train=True, seed=4)
    assert torch.equal(a[2][0], b[2][0])
    draws = set()
    for epoch in range(4):
        a.set_epoch(epoch)
        draws.add(a[2][0].sum().item())
    assert len(draws) > 1  # epochs draw different frames/crops
    ev = VideoDataset(records, RGB_TSN, train=False)
    assert torch.equal(ev[2][0], ev[2][0])


def test_sample_indices_follow_the_preprocessing() -> None:
    rng = np.random.default_rng(0)
    assert sample_indices(30, RGB_TSN, train=True, rng=rng).shape == (1, 3, 1)
    assert sample_indices(30, FLOW_TSN, train=False, num_clips=2).shape == (2, 3, 4)
    assert sample_indices(30, RGB_3D, train=False, num_clips=5).shape == (5, 4)
    with pytest.raises(DataError, match="needs an rng"):
        sample_indices(30, RGB_TSN, train=True)


def test_errors(tiny_synthetic: Path) -> None:
    records = load_split(tiny_synthetic).records
    with pytest.raises(DataError, match="flow input needs a frame folder of flow_x/flow_y JPEGs; run `extract_flow`$"):
        VideoDataset(records, FLOW_TSN, train=False)[0]
    with pytest.raises(DataError, match="at least one video"):
        VideoDataset([], RGB_TSN, train=True)
    with pytest.raises(IndexError):
        VideoDataset(records, RGB_TSN, train=False)[len(records)]


def test_dataloader_workers_give_the_same_items_as_indexing(tiny_synthetic: Path) -> None:
    records = load_split(tiny_synthetic).records
    dataset = VideoDataset(records, RGB_TSN, train=True, seed=2)
    dataset.set_epoch(3)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2, shuffle=False)
    batches = torch.cat([x for x, _ in loader])
    direct = torch.stack([dataset[i][0] for i in range(len(dataset))])
    assert torch.equal(batches, direct)


def test_flip_can_be_turned_off(tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "ramp"
    folder.mkdir()
    ramp = np.repeat(np.linspace(0, 250, 40, dtype=np.uint8)[None, :, None], 30, axis=0).repeat(3, axis=2)
    for i in range(1, 7):
        Image.fromarray(ramp).save(folder / f"img_{i:05d}.jpg", quality=100)
    records = [VideoRecord(folder, 0)]

    def left_darker(flip: bool) -> set[bool]:
        dataset = VideoDataset(records, RGB_TSN, train=True, flip=flip)
        seen = set()
        for epoch in range(12):
            dataset.set_epoch(epoch)
            x = dataset[0][0]
            seen.add(bool(x[..., 0].mean() < x[..., -1].mean()))
        return seen

    assert left_darker(flip=True) == {True, False}
    assert left_darker(flip=False) == {True}

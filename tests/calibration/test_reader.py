"""Calibration clips: what evaluation sees, chosen deterministically, and clear errors for empty sets."""

import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from aarm.data.clips import load_video_input
from aarm.data.datasets import VideoDataset
from aarm.errors import DataError
from calibration.reader import (
    ClipReader,
    ClipSet,
    choose_clips,
    clips_identity,
    find_clips,
    sidecar_preprocessing,
)
from runtime.artifact import read_sidecar
from runtime.errors import ArtifactError


def test_reader_yields_exactly_the_clips_evaluation_sees(tiny, videos):
    clips = choose_clips(find_clips(videos, subset="test"), None, seed=0)
    reader = ClipReader(clips, tiny.preprocessing, "input", batch_size=2)
    batches = [b["input"] for b in reader]
    assert [len(b) for b in batches] == [2, 2, 1] and len(reader) == 3
    got = np.concatenate(batches)
    # aarm.training.evaluate.checkpoint_scores: DataLoader over VideoDataset(train=False), views flattened
    loader = DataLoader(VideoDataset(clips.records, tiny.preprocessing, train=False, num_clips=1), batch_size=4)
    want = torch.cat([x.flatten(0, 1) for x, _ in loader]).numpy()
    np.testing.assert_array_equal(got, want)
    for row, record in zip(got, clips.records, strict=True):
        np.testing.assert_array_equal(row, load_video_input(record.path, tiny.preprocessing)[0].numpy())
    assert got.shape[1:] == tiny.preprocessing.input_shape(1)[1:]
    np.testing.assert_array_equal(reader.labels, [r.label for r in clips.records])

    reader.set_range(1, 2)  # onnxruntime's strided calibration: only the second batch
    assert np.array_equal(reader.get_next()["input"], batches[1]) and reader.get_next() is None
    reader.rewind()
    assert np.array_equal(reader.get_next()["input"], batches[0])


def test_clip_choice_is_deterministic_and_covers_classes_first(videos):
    every = find_clips(videos / "videos")  # class folders without a split: all ten videos
    assert len(every) == 10 and every.labelled
    a, b = choose_clips(every, 5, seed=0), choose_clips(every, 5, seed=0)
    assert [r.path for r in a.records] == [r.path for r in b.records]
    assert sorted(r.label for r in a.records) == [0, 1, 2, 3, 4]  # one per class before any second
    others = [choose_clips(every, 5, seed=s).records for s in range(1, 6)]
    assert any([r.path for r in o] != [r.path for r in a.records] for o in others)
    assert len(choose_clips(every, 50, seed=0)) == 10  # more than there are: all of them


def test_a_plain_folder_of_videos_is_unlabelled(videos, tmp_path):
    for video in sorted((videos / "videos").rglob("*.*"))[:3]:
        shutil.copy(video, tmp_path / video.name)
    clips = find_clips(tmp_path)
    assert len(clips) == 3 and not clips.labelled and (clips.labels == -1).all()


def test_empty_or_zero_clip_sets_are_data_errors(videos, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        find_clips(tmp_path / "empty")
    (tmp_path / "hollow" / "SomeClass").mkdir(parents=True)
    with pytest.raises(DataError, match="empty split"):
        find_clips(tmp_path / "hollow")
    with pytest.raises(DataError, match="empty calibration set"):
        choose_clips(ClipSet([], source="nothing"), 8)
    with pytest.raises(DataError, match=">= 1"):
        choose_clips(find_clips(videos), 0)


def test_identity_follows_clips_and_preprocessing(tiny, videos):
    clips = find_clips(videos)
    same = clips_identity(clips, tiny.preprocessing)
    assert same == clips_identity(find_clips(videos), tiny.preprocessing)
    assert same != clips_identity(choose_clips(clips, 3, seed=0), tiny.preprocessing)
    assert same != clips_identity(clips, replace(tiny.preprocessing, size=28))


def test_sidecar_preprocessing_must_describe_the_graph(tiny):
    sidecar = read_sidecar(tiny.onnx)
    assert sidecar_preprocessing(sidecar, tiny.onnx) == tiny.preprocessing
    sidecar.preprocessing = {**sidecar.preprocessing, "size": 48, "scale_size": 55}
    with pytest.raises(ArtifactError, match="does not describe this graph"):
        sidecar_preprocessing(sidecar, tiny.onnx)

"""Calibration clips: real videos sampled and preprocessed exactly as evaluation does.

    clips = choose_clips(find_clips(Path("UCF101"), split=1, subset="train"), count=64, seed=0)
    reader = ClipReader(clips, sidecar_preprocessing(sidecar, graph), "input", batch_size=8)
    quantize_static(..., calibration_data_reader=reader)            # or calibration.quantize.compute_ranges

A clip is one video turned into one model input by `aarm.data.datasets.VideoDataset(train=False)` (the
same tensors `aarm.data.clips.load_video_input` gives and evaluation scores): (K, C, H, W) for NKCHW,
(C, T, H, W) for NCTHW. Which clips are chosen depends only on the seed; the order is class-balanced, so
the first clips of a small count cover every class.
"""

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader

from aarm.data.annotations import VIDEO_SUFFIXES, VideoRecord, load_split
from aarm.data.datasets import VideoDataset
from aarm.data.frames import is_frame_folder
from aarm.data.preprocessing import Preprocessing
from aarm.errors import DataError
from aarm.progress import Progress
from runtime.artifact import Sidecar
from runtime.errors import ArtifactError
from runtime.onnx_file import load_onnx


@dataclass(frozen=True)
class ClipSet:
    """Videos to read: `labelled` sets carry class labels (index into `classes`); a plain folder of videos
    has none (labels -1). `source` says where they came from, for reports and cache keys."""

    records: list[VideoRecord]
    classes: list[str] = field(default_factory=list)
    labelled: bool = True
    source: str = ""

    def __len__(self) -> int:
        return len(self.records)

    @property
    def labels(self) -> np.ndarray:
        return np.array([r.label for r in self.records], dtype=np.int64)


def _plain_videos(root: Path) -> list[Path]:
    """Video files and frame folders directly in `root` (a folder of videos without class folders)."""
    found = []
    for p in sorted(root.iterdir(), key=lambda p: p.name):
        if p.name.startswith("."):
            continue
        if (p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES) or (p.is_dir() and is_frame_folder(p)):
            found.append(p)
    return found


def find_clips(
    data: Path, *, split: int = 1, subset: str = "train", format: str = "auto", videos: Path | None = None,
    annotations: Path | None = None,
) -> ClipSet:
    """The videos of one subset of a dataset split (UCF101, HMDB51, class folders; labelled), or every video
    of a plain folder of videos (unlabelled). A folder with neither is a DataError. videos / annotations:
    where the dataset keeps its videos and split files when `data` does not (as `load_split` takes them)."""
    data = Path(data)
    if not data.is_dir():
        raise DataError(f"calibration data {data} is not a folder")
    dataset = videos is not None or annotations is not None
    plain = _plain_videos(data) if format in ("auto", "folder") and not dataset else []
    if plain:
        records = [VideoRecord(p, -1) for p in plain]
        return ClipSet(records, [], labelled=False, source=f"{data} (folder of {len(records)} videos)")
    found = load_split(data, format=format, split=split, subset=subset, videos=videos, annotations=annotations)
    return ClipSet(found.records, found.classes, labelled=True, source=f"{data} split {split} {subset}")


def choose_clips(clips: ClipSet, count: int | None, *, seed: int = 0) -> ClipSet:
    """`count` clips (all when None or more than there are), the same for the same seed. Labelled sets are
    drawn class by class in turn (a random video of each class, then a second of each, ...)."""
    if count is not None and count < 1:
        raise DataError(f"the number of clips must be >= 1, got {count}")
    if not clips.records:
        raise DataError(f"no clips in {clips.source or 'the calibration set'} (empty calibration set)")
    order = np.random.default_rng(seed).permutation(len(clips.records))
    if clips.labelled:
        seen: dict[int, int] = {}
        ranks = []
        for i in order:
            label = clips.records[i].label
            ranks.append(seen.get(label, 0))
            seen[label] = seen.get(label, 0) + 1
        order = order[np.argsort(np.array(ranks), kind="stable")]
    chosen = [clips.records[i] for i in order[: count or len(order)]]
    return ClipSet(chosen, clips.classes, clips.labelled, clips.source)


def graph_input(graph: str | Path | onnx.ModelProto) -> tuple[str, list[int | str]]:
    """Name and shape (ints, or strings for symbolic axes) of the graph's only input."""
    model = graph if isinstance(graph, onnx.ModelProto) else load_onnx(graph, load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs)
        raise ArtifactError(f"INT8 calibration takes graphs with one input (one stream at a time); got {names}")
    dims = inputs[0].type.tensor_type.shape.dim
    return inputs[0].name, [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]


def sidecar_preprocessing(sidecar: Sidecar, graph: str | Path | onnx.ModelProto) -> Preprocessing:
    """The preprocessing the sidecar records, checked against the graph's input: one input whose
    non-batch dimensions are what that preprocessing produces. A mismatch is an ArtifactError."""
    preps = sidecar.preprocessings()
    if len(preps) != 1:
        raise ArtifactError(f"INT8 calibration takes single-stream artifacts; the sidecar has {len(preps)} inputs")
    prep = preps[0]
    name, shape = graph_input(graph)
    expected = list(prep.input_shape(1)[1:])
    ranged = sidecar.inputs[0].ranges or {}  # a dynamic K / T is calibrated at the size the preprocessing samples
    if [e if isinstance(d, str) and d in ranged else d for d, e in zip(shape[1:], expected, strict=False)] != expected:
        raise ArtifactError(
            f"graph input {name!r} has shape {shape} but the sidecar's preprocessing ({prep.layout}, size {prep.size}) "
            f"gives (N, {', '.join(map(str, expected))}); the sidecar does not describe this graph"
        )
    return prep


def _path_fingerprint(path: Path) -> list[Any]:
    """Name, size and modification time of a video file, or of every file in a frame folder."""
    if path.is_dir():
        return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(path.iterdir()) if p.is_file()]
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def clips_identity(clips: ClipSet, preprocessing: Preprocessing) -> str:
    """sha256 over the chosen videos (path, size, mtime, label, in order) and the preprocessing: equal
    identities give equal calibration tensors."""
    payload = {
        "preprocessing": preprocessing.to_dict(),
        "clips": [[str(r.path.resolve()), r.label, _path_fingerprint(r.path)] for r in clips.records],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class ClipReader(CalibrationDataReader):
    """Feeds chosen clips to onnxruntime's calibrators: batches {input_name: float32 (B, ...)}.

    Clips are decoded once and kept in memory (`arrays()`), so the reader can be rewound and read again
    (calibration, then accuracy checks). `set_range(start, end)` limits the next pass to those batches,
    as onnxruntime's strided calibration asks.
    """

    def __init__(
        self, clips: ClipSet, preprocessing: Preprocessing, input_name: str, *, batch_size: int = 8,
        progress: Progress | None = None,
    ) -> None:
        if not clips.records:
            raise DataError(f"no clips in {clips.source or 'the calibration set'} (empty calibration set)")
        if batch_size < 1:
            raise DataError(f"batch size must be >= 1, got {batch_size}")
        self.clips = clips
        self.preprocessing = preprocessing
        self.input_name = input_name
        self.batch_size = batch_size
        self.progress = progress
        self._data: np.ndarray | None = None
        self._range = (0, len(self))
        self._next = 0

    def __len__(self) -> int:
        """Number of batches."""
        return -(-len(self.clips.records) // self.batch_size)

    def arrays(self) -> np.ndarray:
        """Every clip: float32 (clips, K, C, H, W) for NKCHW or (clips, C, T, H, W) for NCTHW."""
        if self._data is None:
            dataset = VideoDataset(self.clips.records, self.preprocessing, train=False, num_clips=1)
            expected = self.preprocessing.input_shape(1)[1:]
            out = np.empty((len(dataset), *expected), dtype=np.float32)
            for i in range(len(dataset)):
                x, _ = dataset[i]
                if tuple(x.shape[1:]) != expected:
                    raise DataError(f"{self.clips.records[i].path}: gives an input of shape {tuple(x.shape[1:])}, "
                                    f"the graph takes {expected}")
                out[i] = x[0].numpy()
                if self.progress:
                    self.progress("reading clips", i + 1, len(dataset))
            self._data = out
        return self._data

    @property
    def labels(self) -> np.ndarray:
        return self.clips.labels

    def set_range(self, start_index: int, end_index: int) -> None:
        self._range = (max(0, start_index), min(len(self), end_index))
        self._next = self._range[0]

    def rewind(self) -> None:
        self.set_range(0, len(self))

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= self._range[1]:
            return None
        data = self.arrays()
        batch = data[self._next * self.batch_size : (self._next + 1) * self.batch_size]
        self._next += 1
        return {self.input_name: batch}


def batches(x: np.ndarray, size: int) -> Sequence[np.ndarray]:
    """Consecutive slices of at most `size` items along the first axis."""
    return [x[i : i + size] for i in range(0, len(x), size)]

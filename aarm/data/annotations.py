"""Train/test splits of action-recognition datasets: UCF101, HMDB51 and a plain folder-per-class layout.

    split = load_split(Path("UCF101"), split=1, subset="train")   # Split(records=[VideoRecord...], classes=[...])

UCF101: `classInd.txt` ("1 ApplyEyeMakeup"), `trainlist0{1,2,3}.txt` ("ApplyEyeMakeup/v_x.avi 1") and
`testlist0{1,2,3}.txt` ("ApplyEyeMakeup/v_x.avi", label from the folder), found in `annotations`,
`root/ucfTrainTestlist/` or `root`. HMDB51: one `<class>_test_split{1,2,3}.txt` per class, lines
"video.avi 1|2|0" (1 train, 2 test, 0 unused), found in `annotations`, `root/testTrainMulti_7030_splits/`,
`root/splits/` or `root`. Folder: `root/<class>/<video>` (classes sorted), or `root/<subset>/<class>/<video>`
when `root/train/` exists; a plain folder without subset folders has no split, so every subset is every video.

A listed video is looked for under `videos` when given, else `root`, and under their subfolders named `videos`,
`UCF-101`, `UCF101`, `hmdb51_org` or `HMDB51` in any case (`root/hmdb51/<class>/` is found), as the file itself
or as a frame folder of the same name without its suffix (`<class>/v_x/` holding `img_00001.jpg`, ...). The
annotation folders' names are matched in any case too. Every problem is a DataError naming the file and, for a
bad line, its line number; a video that is not found names the folders searched.

`check_held_out(train, test)` refuses a train and a test subset that share videos (a plain folder of class
folders has no split: its train and test are the same videos).
"""

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from aarm.data.frames import is_frame_folder
from aarm.errors import DataError

FORMATS = ("auto", "ucf101", "hmdb51", "folder")
SUBSETS = ("train", "test")
VIDEO_SUFFIXES = frozenset({".avi", ".mp4", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v", ".flv", ".wmv", ".3gp"})
VIDEO_DIRS = (".", "videos", "UCF-101", "UCF101", "hmdb51_org", "HMDB51")  # "." is the folder itself; any case
UCF_ANNOTATION_DIRS = ("ucfTrainTestlist", ".")
HMDB_ANNOTATION_DIRS = ("testTrainMulti_7030_splits", "splits", ".")
_HMDB_SPLIT = re.compile(r"^(?P<cls>.+)_test_split(?P<split>\d+)\.txt$")


@dataclass(frozen=True)
class VideoRecord:
    """One video of a split: a video file or a frame folder, its class index, its frame count if known."""

    path: Path
    label: int
    num_frames: int | None = None


@dataclass
class Split:
    """The videos of one subset of one split, and the class names (label i is classes[i])."""

    records: list[VideoRecord]
    classes: list[str] = field(default_factory=list)
    format: str = ""  # the layout it was read from: ucf101 | hmdb51 | folder

    def __len__(self) -> int:
        return len(self.records)


def load_split(
    root: Path, *, format: str = "auto", split: int = 1, subset: str = "train", annotations: Path | None = None,
    videos: Path | None = None,
) -> Split:
    """Read the `subset` ("train" | "test") videos of split `split` (1..3) of the dataset at `root`.

    format: auto | ucf101 | hmdb51 | folder; "auto" picks UCF101 when a classInd.txt is found, HMDB51 when
    `*_test_split<n>.txt` files are, else the folder layout. annotations: the folder (or one file) of the
    annotation files, instead of searching `root`. videos: the folder holding `<class>/<video>`, instead of
    searching `root` (for the folder layout, the folder of class folders).
    """
    root = Path(root)
    if format not in FORMATS:
        raise DataError(f"unknown dataset format {format!r}; choose one of {', '.join(FORMATS)}")
    if subset not in SUBSETS:
        raise DataError(f"unknown subset {subset!r}; choose one of {', '.join(SUBSETS)}")
    if not root.is_dir():
        raise DataError(f"dataset root {root} is not a folder")
    if annotations is not None and not Path(annotations).exists():
        raise DataError(f"annotation path {annotations} does not exist")
    if videos is not None and not Path(videos).is_dir():
        raise DataError(f"video folder {videos} is not a folder")
    if format == "auto":
        format = detect_format(root, annotations)
        if format == "folder" and annotations is not None:
            raise DataError(f"no annotation files in {annotations}: expected UCF101's classInd.txt or HMDB51's "
                            "<class>_test_split<n>.txt")
    if format == "ucf101":
        return _load_ucf101(root, split, subset, annotations, videos)
    if format == "hmdb51":
        return _load_hmdb51(root, split, subset, annotations, videos)
    return _load_folder(Path(videos) if videos is not None else root, subset)


def check_held_out(train: Split, test: Split, where: str | Path) -> None:
    """Refuse a train and a test subset that share videos: accuracy on such a test subset is not held out."""
    shared = sorted({r.path for r in train.records} & {r.path for r in test.records})
    if not shared:
        return
    hint = ("a folder of class folders has no split; give annotation files with `annotations` DIR or put the "
            "videos in train/ and test/ subfolders" if test.format == "folder" else "check the split files")
    raise DataError(f"{where}: train and test share {len(shared)} of {len(test)} test videos (e.g. {shared[0]}), "
                    f"so held-out accuracy would be measured on training videos: {hint}, or pass `allow_overlap`")


def detect_format(root: Path, annotations: Path | None = None) -> str:
    """"ucf101", "hmdb51" or "folder", from the annotation files present."""
    if _find_ucf_dir(root, annotations) is not None:
        return "ucf101"
    if _find_hmdb_dir(root, annotations) is not None:
        return "hmdb51"
    return "folder"


# ---------------------------------------------------------------------------------------------- helpers


def known_folders(base: Path, names: tuple[str, ...]) -> list[Path]:
    """The subfolders of `base` whose names are among `names` in any case ("." is `base` itself), in the order
    of `names` (folders differing only in case, on a case-sensitive file system, in sorted order)."""
    try:
        children = sorted(p for p in Path(base).iterdir() if p.is_dir())
    except OSError as exc:
        raise DataError(f"cannot list {base}: {exc}") from exc
    found: list[Path] = []
    for name in names:
        matches = [Path(base)] if name == "." else [p for p in children if p.name.lower() == name.lower()]
        found += [p for p in matches if p not in found]
    return found


def _candidate_dirs(root: Path, annotations: Path | None, names: tuple[str, ...]) -> list[Path]:
    if annotations is not None:
        annotations = Path(annotations)
        return [annotations.parent] if annotations.is_file() else known_folders(annotations, names)
    return known_folders(root, names)


def _find_ucf_dir(root: Path, annotations: Path | None) -> Path | None:
    for d in _candidate_dirs(root, annotations, UCF_ANNOTATION_DIRS):
        if (d / "classInd.txt").is_file():
            return d
    return None


def _find_hmdb_dir(root: Path, annotations: Path | None) -> Path | None:
    for d in _candidate_dirs(root, annotations, HMDB_ANNOTATION_DIRS):
        if any(_HMDB_SPLIT.match(p.name) for p in d.glob("*_test_split*.txt")):
            return d
    return None


def _lines(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, whitespace-split fields) of the non-blank lines of a text file (any newline style)."""
    if not path.is_file():
        raise DataError(f"annotation file {path} not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read annotation file {path}: {exc}") from exc
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if fields:
            yield number, fields


def _parse_int(text: str, path: Path, number: int, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DataError(f"{path}:{number}: {what} {text!r} is not an integer") from None


class _VideoFinder:
    """Resolves "<class>/<name>" to a video file or frame folder under the dataset's video folders: `videos`
    (else `root`) and its subfolders with the known names (VIDEO_DIRS, any case)."""

    def __init__(self, root: Path, videos: Path | None = None) -> None:
        self.bases = known_folders(Path(videos) if videos is not None else root, VIDEO_DIRS)
        self._class_base: dict[str, Path | None] = {}

    def find(self, folder: str, name: str) -> Path | None:
        if folder not in self._class_base:
            self._class_base[folder] = next((b for b in self.bases if (b / folder).is_dir()), None)
        base = self._class_base[folder]
        if base is None:
            return None
        path = base / folder / name
        if path.is_file():
            return path
        frames = path.with_suffix("") if path.suffix.lower() in VIDEO_SUFFIXES else path
        return frames if frames.is_dir() else None

    def not_found(self, folder: str, name: str) -> str:
        """Why `folder/name` was not found: the class folder that lacks it, or the folders searched."""
        base = self._class_base.get(folder)
        if base is not None:
            return f"video {folder}/{name} not found in {base / folder}"
        searched = ", ".join(str(b) for b in self.bases)
        return (f"video {folder}/{name} not found: no folder {folder}/ in {searched} "
                f"(give the video folder with `videos`)")


def _class_lookup(classes: list[str]) -> dict[str, int]:
    """Exact names, and their lower-case forms (UCF101 spells HandstandPushups two ways)."""
    lookup = {c.lower(): i for i, c in enumerate(classes)}
    lookup.update({c: i for i, c in enumerate(classes)})
    return lookup


# ---------------------------------------------------------------------------------------------- UCF101


def read_ucf_classes(path: Path) -> list[str]:
    """classInd.txt: lines "<index> <name>", indices 1..N each once."""
    by_index: dict[int, str] = {}
    for number, fields in _lines(path):
        if len(fields) != 2:
            raise DataError(f"{path}:{number}: expected '<index> <class>', got {' '.join(fields)!r}")
        index = _parse_int(fields[0], path, number, "class index")
        if index in by_index:
            raise DataError(f"{path}:{number}: class index {index} appears twice")
        if fields[1] in by_index.values():
            raise DataError(f"{path}:{number}: class {fields[1]!r} appears twice")
        by_index[index] = fields[1]
    if not by_index:
        raise DataError(f"{path} lists no classes")
    if sorted(by_index) != list(range(1, len(by_index) + 1)):
        raise DataError(f"{path}: class indices must be 1..{len(by_index)}, got {sorted(by_index)}")
    return [by_index[i] for i in range(1, len(by_index) + 1)]


def _load_ucf101(root: Path, split: int, subset: str, annotations: Path | None, videos: Path | None) -> Split:
    ann = _find_ucf_dir(root, annotations)
    if ann is None:
        where = ", ".join(str(d) for d in _candidate_dirs(root, annotations, UCF_ANNOTATION_DIRS))
        raise DataError(f"UCF101 annotation file classInd.txt not found in {where}")
    if split not in (1, 2, 3):
        raise DataError(f"UCF101 has splits 1, 2 and 3, got {split}")
    classes = read_ucf_classes(ann / "classInd.txt")
    lookup = _class_lookup(classes)
    path = ann / f"{subset}list0{split}.txt"
    finder = _VideoFinder(root, videos)
    records = []
    for number, fields in _lines(path):
        if len(fields) not in (1, 2) or "/" not in fields[0]:
            raise DataError(f"{path}:{number}: expected '<class>/<video> [label]', got {' '.join(fields)!r}")
        folder, _, name = fields[0].rpartition("/")
        folder_class = folder.rsplit("/", 1)[-1]
        label = lookup.get(folder_class, lookup.get(folder_class.lower()))
        if label is None:
            raise DataError(f"{path}:{number}: unknown class {folder_class!r} (not in classInd.txt)")
        if len(fields) == 2:
            given = _parse_int(fields[1], path, number, "label")
            if not 1 <= given <= len(classes):
                raise DataError(f"{path}:{number}: label {given} outside 1..{len(classes)}")
            if given - 1 != label:
                raise DataError(
                    f"{path}:{number}: label {given} ({classes[given - 1]}) does not match folder {folder_class!r}"
                )
        video = finder.find(folder, name)
        if video is None:
            raise DataError(f"{path}:{number}: {finder.not_found(folder, name)}")
        records.append(VideoRecord(video, label))
    if not records:
        raise DataError(f"{path} lists no videos (empty split)")
    return Split(records, classes, "ucf101")


# ---------------------------------------------------------------------------------------------- HMDB51


def _load_hmdb51(root: Path, split: int, subset: str, annotations: Path | None, videos: Path | None) -> Split:
    ann = _find_hmdb_dir(root, annotations)
    if ann is None:
        where = ", ".join(str(d) for d in _candidate_dirs(root, annotations, HMDB_ANNOTATION_DIRS))
        raise DataError(f"HMDB51 split files (<class>_test_split<n>.txt) not found in {where}")
    files = {}
    for p in ann.glob("*_test_split*.txt"):
        m = _HMDB_SPLIT.match(p.name)
        if m and int(m["split"]) == split:
            files[m["cls"]] = p
    if not files:
        raise DataError(f"no HMDB51 files *_test_split{split}.txt in {ann}")
    classes = sorted(files)
    wanted = "1" if subset == "train" else "2"
    finder = _VideoFinder(root, videos)
    records = []
    for label, cls in enumerate(classes):
        path = files[cls]
        for number, fields in _lines(path):
            if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
                raise DataError(f"{path}:{number}: expected '<video> 0|1|2', got {' '.join(fields)!r}")
            if fields[1] != wanted:
                continue
            video = finder.find(cls, fields[0])
            if video is None:
                raise DataError(f"{path}:{number}: {finder.not_found(cls, fields[0])}")
            records.append(VideoRecord(video, label))
    if not records:
        raise DataError(f"HMDB51 split {split} in {ann} has no {subset} videos (empty split)")
    return Split(records, classes, "hmdb51")


# ---------------------------------------------------------------------------------------------- folder


def _is_video(path: Path) -> bool:
    if path.name.startswith("."):
        return False
    if path.is_file():
        return path.suffix.lower() in VIDEO_SUFFIXES
    return path.is_dir() and is_frame_folder(path)


def _class_dirs(root: Path) -> list[Path]:
    return sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def _load_folder(root: Path, subset: str) -> Split:
    subset_root = root / subset
    if (root / "train").is_dir():
        if not subset_root.is_dir():
            raise DataError(f"{root} has a train/ folder but no {subset}/ folder")
        # One class list for every subset, so labels agree between train and test.
        names = sorted({d.name for s in SUBSETS if (root / s).is_dir() for d in _class_dirs(root / s)})
        root = subset_root
    else:
        names = [d.name for d in _class_dirs(root)]
    if not names:
        raise DataError(f"{root} holds no class folders (expected <root>/<class>/<video>)")
    records = []
    for label, name in enumerate(names):
        folder = root / name
        if folder.is_dir():
            records += [VideoRecord(p, label) for p in sorted(folder.iterdir()) if _is_video(p)]
    if not records:
        raise DataError(f"{root} holds no videos or frame folders in its class folders (empty split)")
    return Split(records, names, "folder")

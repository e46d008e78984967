"""UCF101, HMDB51 and folder-per-class split readers, including their error messages."""

from pathlib import Path

import pytest

from aarm.data.annotations import detect_format, load_split
from aarm.errors import DataError

UCF_CLASSES = ["ApplyEyeMakeup", "Archery", "HandstandPushups"]


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def make_ucf(root: Path, *, ann_dir: str = "ucfTrainTestlist", crlf: bool = True) -> Path:
    """UCF101-like tree: UCF-101/<class>/v_*.avi plus annotation files with blank lines (and CRLF)."""
    nl = "\r\n" if crlf else "\n"
    videos = {c: [f"v_{c}_g0{g}_c01.avi" for g in (1, 2, 3)] for c in UCF_CLASSES}
    for c, names in videos.items():
        for n in names:
            touch(root / "UCF-101" / c / n)
    ann = root / ann_dir
    ann.mkdir(parents=True, exist_ok=True)
    (ann / "classInd.txt").write_text(nl.join(f"{i + 1} {c}" for i, c in enumerate(UCF_CLASSES)) + nl, newline="")
    train = [f"{c}/{videos[c][g]} {i + 1}" for i, c in enumerate(UCF_CLASSES) for g in (1, 2)]
    test = [f"{c}/{videos[c][0]}" for c in UCF_CLASSES]
    (ann / "trainlist01.txt").write_text(nl + nl.join(train) + nl + nl, newline="")
    (ann / "testlist01.txt").write_text(nl.join(test) + nl, newline="")
    return root


def test_ucf101_train_and_test(tmp_path: Path) -> None:
    root = make_ucf(tmp_path / "UCF101")
    assert detect_format(root) == "ucf101"
    train = load_split(root, split=1, subset="train")
    assert train.classes == UCF_CLASSES
    assert len(train) == 6
    assert [r.label for r in train.records] == [0, 0, 1, 1, 2, 2]
    assert all(r.path.is_file() and r.num_frames is None for r in train.records)
    test = load_split(root, split=1, subset="test")
    assert [r.label for r in test.records] == [0, 1, 2]
    assert test.records[1].path == root / "UCF-101" / "Archery" / "v_Archery_g01_c01.avi"


def test_ucf101_annotations_elsewhere_and_frame_folders(tmp_path: Path) -> None:
    ann = make_ucf(tmp_path / "lists", ann_dir=".") / "."
    # A frame-folder root: <class>/<video stem>/img_00001.jpg, no annotation files of its own.
    frames = tmp_path / "frames"
    for c in UCF_CLASSES:
        for g in (1, 2, 3):
            touch(frames / c / f"v_{c}_g0{g}_c01" / "img_00001.jpg")
    split = load_split(frames, annotations=ann, subset="test")
    assert split.records[0].path == frames / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g01_c01"
    assert split.records[0].path.is_dir()


def test_ucf101_case_insensitive_class_folder(tmp_path: Path) -> None:
    root = make_ucf(tmp_path / "u", crlf=False)
    (root / "ucfTrainTestlist" / "testlist01.txt").write_text("handstandPushups/v_HandstandPushups_g01_c01.avi\n")
    touch(root / "UCF-101" / "handstandPushups" / "v_HandstandPushups_g01_c01.avi")
    assert load_split(root, subset="test").records[0].label == 2


@pytest.mark.parametrize(
    ("file", "text", "message"),
    [
        ("testlist01.txt", "Archery/v_Archery_g01_c01.avi\n\nJuggling/v_x.avi\n",
         "testlist01.txt:3: unknown class 'Juggling'"),
        ("trainlist01.txt", "Archery/v_Archery_g01_c01.avi two\n", "trainlist01.txt:1: label 'two' is not an integer"),
        ("trainlist01.txt", "Archery/v_Archery_g01_c01.avi 9\n", "trainlist01.txt:1: label 9 outside 1..3"),
        ("trainlist01.txt", "\r\nArchery/v_Archery_g01_c01.avi 1\r\n", "trainlist01.txt:2: label 1 (ApplyEyeMakeup)"),
        ("trainlist01.txt", "Archery/v_Archery_g01_c01.avi 2 extra\n", "trainlist01.txt:1: expected"),
        ("trainlist01.txt", "Archery/v_missing.avi 2\n", "trainlist01.txt:1: video Archery/v_missing.avi not found"),
        ("trainlist01.txt", "\n  \r\n", "trainlist01.txt lists no videos (empty split)"),
        ("classInd.txt", "1 ApplyEyeMakeup\n3 Archery\n", "classInd.txt: class indices must be 1..2"),
        ("classInd.txt", "1 ApplyEyeMakeup\nArchery\n", "classInd.txt:2: expected '<index> <class>'"),
        ("classInd.txt", "", "classInd.txt lists no classes"),
    ],
)
def test_ucf101_errors_name_file_and_line(tmp_path: Path, file: str, text: str, message: str) -> None:
    root = make_ucf(tmp_path / "u")
    (root / "ucfTrainTestlist" / file).write_text(text)
    subset = "test" if file.startswith("test") else "train"
    with pytest.raises(DataError) as err:
        load_split(root, subset=subset)
    assert message in str(err.value)


def test_ucf101_missing_file_and_bad_arguments(tmp_path: Path) -> None:
    root = make_ucf(tmp_path / "u")
    with pytest.raises(DataError, match=r"annotation file .*trainlist02.txt not found"):
        load_split(root, split=2)
    with pytest.raises(DataError, match="splits 1, 2 and 3"):
        load_split(root, split=4)
    with pytest.raises(DataError, match="unknown subset"):
        load_split(root, subset="val")
    with pytest.raises(DataError, match="unknown dataset format"):
        load_split(root, format="kinetics")
    with pytest.raises(DataError, match="classInd.txt not found"):
        load_split(tmp_path / "u" / "UCF-101", format="ucf101")
    with pytest.raises(DataError, match="is not a folder"):
        load_split(tmp_path / "nowhere")


def make_hmdb(root: Path) -> Path:
    """HMDB51-like tree: hmdb51_org/<class>/*.avi and testTrainMulti_7030_splits/<class>_test_split1.txt."""
    splits = root / "testTrainMulti_7030_splits"
    splits.mkdir(parents=True)
    for c in ("wave", "brush_hair"):  # written unsorted; labels follow sorted names
        names = [f"{c}_{i}.avi" for i in range(5)]
        for n in names:
            touch(root / "hmdb51_org" / c / n)
        marks = [1, 1, 2, 0, 1]
        lines = "".join(f"{n} {m} \r\n" for n, m in zip(names, marks, strict=True))  # HMDB's trailing spaces
        (splits / f"{c}_test_split1.txt").write_text(lines + "\r\n")
    (splits / "wave_test_split2.txt").write_text("wave_0.avi 2\n")
    return root


def test_hmdb51_train_test_unused(tmp_path: Path) -> None:
    root = make_hmdb(tmp_path / "hmdb")
    assert detect_format(root) == "hmdb51"
    train = load_split(root, split=1, subset="train")
    assert train.classes == ["brush_hair", "wave"]
    assert [(r.path.name, r.label) for r in train.records] == [
        ("brush_hair_0.avi", 0), ("brush_hair_1.avi", 0), ("brush_hair_4.avi", 0),
        ("wave_0.avi", 1), ("wave_1.avi", 1), ("wave_4.avi", 1),
    ]
    test = load_split(root, split=1, subset="test")
    assert [r.path.name for r in test.records] == ["brush_hair_2.avi", "wave_2.avi"]
    assert load_split(root, split=2, subset="test").classes == ["wave"]


def test_hmdb51_errors(tmp_path: Path) -> None:
    root = make_hmdb(tmp_path / "hmdb")
    split_file = root / "testTrainMulti_7030_splits" / "wave_test_split1.txt"
    split_file.write_text("wave_0.avi 1\nwave_1.avi 3\n")
    with pytest.raises(DataError, match=r"wave_test_split1.txt:2: expected '<video> 0\|1\|2'"):
        load_split(root)
    split_file.write_text("wave_0.avi 1\n\nwave_9.avi 1\n")
    with pytest.raises(DataError, match=r"wave_test_split1.txt:3: video wave/wave_9.avi not found"):
        load_split(root)
    with pytest.raises(DataError, match="no HMDB51 files"):
        load_split(root, split=3)
    with pytest.raises(DataError, match="has no train videos"):
        load_split(root, split=2, subset="train")  # wave split 2 has only a test video
    load_split(root, split=2, subset="test")


def test_folder_layout(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    touch(root / "b_wave" / "x.mp4")
    touch(root / "b_wave" / "notes.txt")
    touch(root / "b_wave" / ".hidden.mp4")
    touch(root / "a_jump" / "y.AVI")
    touch(root / "a_jump" / "z_frames" / "img_00001.jpg")
    (root / "c_empty").mkdir()
    assert detect_format(root) == "folder"
    split = load_split(root)
    assert split.classes == ["a_jump", "b_wave", "c_empty"]
    assert [(r.path.name, r.label) for r in split.records] == [("y.AVI", 0), ("z_frames", 0), ("x.mp4", 1)]
    assert load_split(root, subset="test").records == split.records  # no subset folders: no split


def test_folder_layout_with_subsets_and_errors(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    touch(root / "train" / "run" / "a.mp4")
    touch(root / "train" / "sit" / "b.mp4")
    touch(root / "test" / "sit" / "c.mp4")
    test = load_split(root, subset="test")
    assert test.classes == ["run", "sit"]
    assert [(r.path.name, r.label) for r in test.records] == [("c.mp4", 1)]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no class folders"):
        load_split(tmp_path / "empty")
    touch(tmp_path / "novideos" / "cls" / "readme.txt")
    with pytest.raises(DataError, match="empty split"):
        load_split(tmp_path / "novideos")


# -- datasets as people unpack them -----------------------------------------------------------------------
def test_hmdb51_videos_in_a_lower_case_folder(tmp_path: Path) -> None:
    root = make_hmdb(tmp_path / "hmdb")
    (root / "hmdb51_org").rename(root / "hmdb51")  # <root>/hmdb51/<class>/, a common way to unpack it
    train = load_split(root, subset="train")
    assert train.records[0].path == root / "hmdb51" / "brush_hair" / "brush_hair_0.avi"
    (root / "testTrainMulti_7030_splits").rename(root / "TESTTRAINMULTI_7030_SPLITS")  # annotation folders too
    assert load_split(root, subset="test").format == "hmdb51"


def test_explicit_video_and_annotation_folders(tmp_path: Path) -> None:
    make_hmdb(tmp_path / "unpacked")
    videos, splits = tmp_path / "clips", tmp_path / "lists"
    (tmp_path / "unpacked" / "hmdb51_org").rename(videos)
    (tmp_path / "unpacked" / "testTrainMulti_7030_splits").rename(splits)
    root = tmp_path / "empty"
    root.mkdir()
    test = load_split(root, subset="test", videos=videos, annotations=splits)
    assert [r.path for r in test.records] == [videos / "brush_hair" / "brush_hair_2.avi",
                                              videos / "wave" / "wave_2.avi"]
    ucf = make_ucf(tmp_path / "ucf")
    (ucf / "UCF-101").rename(tmp_path / "ucf-videos")
    assert len(load_split(ucf, subset="train", videos=tmp_path / "ucf-videos")) == 6
    # The folder layout reads its class folders from `videos`.
    touch(tmp_path / "mine" / "jump" / "a.mp4")
    assert load_split(root, format="folder", videos=tmp_path / "mine").classes == ["jump"]


def test_unresolved_video_names_the_folders_searched(tmp_path: Path) -> None:
    root = make_hmdb(tmp_path / "hmdb")
    (root / "hmdb51_org").rename(root / "unpacked_here")
    with pytest.raises(DataError) as err:
        load_split(root)
    message = str(err.value)
    assert "brush_hair_test_split1.txt:1: video brush_hair/brush_hair_0.avi not found: no folder brush_hair/" in message
    assert f"in {root} (give the video folder with `videos`)" in message and "\n" not in message
    (root / "unpacked_here").rename(root / "videos")
    (root / "videos" / "wave" / "wave_1.avi").unlink()
    with pytest.raises(DataError, match=r"video wave/wave_1\.avi not found in .*videos/wave$"):
        load_split(root)


def test_explicit_folders_that_do_not_fit(tmp_path: Path) -> None:
    root = make_hmdb(tmp_path / "hmdb")
    with pytest.raises(DataError, match="video folder .*nowhere is not a folder"):
        load_split(root, videos=tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"no annotation files in .*hmdb51_org: expected UCF101's classInd.txt"):
        load_split(root, annotations=root / "hmdb51_org")  # the video folder given as the annotations
    with pytest.raises(DataError, match=r"brush_hair_0\.avi not found: no folder brush_hair/ in .*testTrain"):
        load_split(root, videos=root / "testTrainMulti_7030_splits")


def test_train_and_test_must_not_overlap(tmp_path: Path) -> None:
    from aarm.data.annotations import check_held_out

    root = make_hmdb(tmp_path / "hmdb")
    check_held_out(load_split(root, subset="train"), load_split(root, subset="test"), root)
    # --data pointed at the video folder itself: a folder layout whose train and test are the same videos.
    videos = root / "hmdb51_org"
    train, test = load_split(videos, subset="train"), load_split(videos, subset="test")
    with pytest.raises(DataError) as err:
        check_held_out(train, test, videos)
    message = str(err.value)
    assert message.startswith(f"{videos}: train and test share 10 of 10 test videos")
    assert "a folder of class folders has no split" in message and "pass `allow_overlap`" in message
    assert "\n" not in message

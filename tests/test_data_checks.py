"""Bad data is reported (file + reason), skipped or repaired, never fatal unless nothing is usable."""
import os

import ppyolo_slim  # noqa: F401  (native import order)
import cv2
import numpy as np
import pytest

from ppyolo_slim.data import DataError, load_data
from ppyolo_slim.data import checks

NAMES = ["a", "b", "c", "d"]
GOOD = "0 0.5 0.5 0.25 0.25\n1 0.25 0.25 0.1 0.2\n"


def make_set(root, labels, images=None, ext=".jpg"):
    """A YOLO set with train = the given label texts (None: no label file), val = 1 good image."""
    root = str(root)
    for split, labs in (("train", labels), ("val", [GOOD])):
        os.makedirs(os.path.join(root, "images", split), exist_ok=True)
        os.makedirs(os.path.join(root, "labels", split), exist_ok=True)
        for i, text in enumerate(labs):
            img = np.full((48, 64, 3), 40 * i % 255, np.uint8)
            cv2.imwrite(os.path.join(root, "images", split, f"im{i}{ext}"), img)
            if text is not None:
                with open(os.path.join(root, "labels", split, f"im{i}.txt"), "w") as f:
                    f.write(text)
    y = os.path.join(root, "data.yaml")
    with open(y, "w") as f:
        f.write(f"path: {root}\ntrain: images/train\nval: images/val\nnames: {NAMES}\n")
    return y


def img_path(root, i, ext=".jpg", split="train"):
    return os.path.join(str(root), "images", split, f"im{i}{ext}")


def lab_path(root, i, split="train"):
    return os.path.join(str(root), "labels", split, f"im{i}.txt")


def load_and_capture(y, capsys):
    from ppyolo_slim.data import formats
    formats._SAID.clear()
    spec = load_data(y)
    err = capsys.readouterr().err
    assert err.count(f"data {y}:") == 1, "exactly one summary"
    return spec, err


def only_issue(spec, err, file, *words):
    """The problem is in the printed summary and in the report data, naming file and reason."""
    hits = [i for i in spec.report.issues if i.file == file]
    assert hits, f"no issue for {file}: {spec.report.issues}"
    reason = " | ".join(i.reason for i in hits)
    for w in words:
        assert w in reason, (w, reason)
        assert w in err
    assert os.path.basename(file) in err
    return hits


def record_of(spec, i):
    ps = {os.path.basename(r.path): r for r in spec.train}
    return ps.get(f"im{i}.jpg")


# ----------------------------------------------------------------------------- images

def test_unreadable_image_skipped(tmp_path, capsys):
    y = make_set(tmp_path, [GOOD, GOOD])
    with open(img_path(tmp_path, 1), "wb") as f:
        f.write(b"this is not an image at all" * 10)
    spec, err = load_and_capture(y, capsys)
    only_issue(spec, err, img_path(tmp_path, 1), "not a readable image", "image skipped")
    assert record_of(spec, 1) is None and record_of(spec, 0) is not None
    assert spec.report.splits["train"]["used"] == 1 and spec.report.splits["train"]["found"] == 2


def test_truncated_jpeg_skipped(tmp_path, capsys):
    y = make_set(tmp_path, [GOOD, GOOD])
    p = img_path(tmp_path, 1)
    data = open(p, "rb").read()
    with open(p, "wb") as f:
        f.write(data[: len(data) * 2 // 3])
    spec, err = load_and_capture(y, capsys)
    only_issue(spec, err, p, "truncated JPEG", "image skipped")
    assert record_of(spec, 1) is None


def test_jpeg_cut_near_its_end_skipped_but_trailer_accepted(tmp_path, capsys):
    y = make_set(tmp_path, [GOOD, GOOD, GOOD])
    p1, p2 = img_path(tmp_path, 1), img_path(tmp_path, 2)
    data = open(p1, "rb").read()
    with open(p1, "wb") as f:
        f.write(data[:-12])                 # only the last bytes missing
    with open(p2, "ab") as f:
        f.write(b"CAMERA-TRAILER" * 20)     # data after the end-of-image marker: still fine
    spec, err = load_and_capture(y, capsys)
    only_issue(spec, err, p1, "truncated JPEG")
    assert [i.file for i in spec.report.issues] == [p1]
    assert record_of(spec, 2) is not None


def test_truncated_png_skipped(tmp_path, capsys):
    y = make_set(tmp_path, [GOOD, GOOD], ext=".png")
    p = img_path(tmp_path, 1, ".png")
    data = open(p, "rb").read()
    with open(p, "wb") as f:
        f.write(data[:-20])     # loses the IEND chunk
    spec, err = load_and_capture(y, capsys)
    only_issue(spec, err, p, "truncated PNG", "image skipped")
    assert len(spec.train) == 1


def test_exif_rotated_image_size_is_what_cv2_reads(tmp_path):
    from PIL import Image
    p = str(tmp_path / "rot.jpg")
    im = Image.fromarray(np.zeros((20, 50, 3), np.uint8))
    exif = im.getexif()
    exif[0x0112] = 6       # rotate 90 on display
    im.save(p, exif=exif)
    h, w = cv2.imread(p).shape[:2]
    assert (w, h) == (20, 50)
    assert checks.inspect_image(p) == (w, h)


def test_empty_image_file_skipped(tmp_path, capsys):
    y = make_set(tmp_path, [GOOD, GOOD])
    open(img_path(tmp_path, 0), "wb").close()
    spec, err = load_and_capture(y, capsys)
    only_issue(spec, err, img_path(tmp_path, 0), "empty file", "image skipped")


# ----------------------------------------------------------------------------- label lines

@pytest.mark.parametrize("line, words", [
    ("0 0.5 0.5 0.2", ["line 2", "expected 5 values", "got 4"]),
    ("0 0.5 0.5 0.2 0.2 0.9", ["line 2", "expected 5 values", "got 6"]),
    ("0 0.5 abc 0.2 0.2", ["line 2", "'abc' is not a number"]),
    ("0 0.5 nan 0.2 0.2", ["line 2", "NaN or infinite"]),
    ("4 0.5 0.5 0.2 0.2", ["line 2", "class id 4 outside 0..3", "nc=4"]),
    ("-1 0.5 0.5 0.2 0.2", ["line 2", "class id -1 outside 0..3"]),
    ("1.5 0.5 0.5 0.2 0.2", ["line 2", "class id 1.5 is not an integer"]),
    ("0 1.6 0.5 0.2 0.2", ["line 2", "outside the image", "dropped"]),
    ("0 0.5 0.5 0 0.2", ["line 2", "zero-area box"]),
    ("0 0.5 0.5 -0.1 0.2", ["line 2", "zero-area box"]),
])
def test_bad_label_line_dropped(tmp_path, capsys, line, words):
    y = make_set(tmp_path, ["1 0.3 0.3 0.2 0.2\n" + line + "\n", GOOD])
    spec, err = load_and_capture(y, capsys)
    only_issue(spec, err, lab_path(tmp_path, 0), *words)
    r = record_of(spec, 0)
    assert r is not None and r.classes.tolist() == [1], "image kept with its good line only"
    np.testing.assert_allclose(r.boxes[0], [0.2 * 64, 0.2 * 48, 0.4 * 64, 0.4 * 48], atol=1e-3)


def test_box_slightly_outside_clipped(tmp_path, capsys):
    y = make_set(tmp_path, ["2 0.95 0.5 0.12 0.2\n", GOOD])   # x2 = 1.01
    spec, err = load_and_capture(y, capsys)
    only_issue(spec, err, lab_path(tmp_path, 0), "line 1", "slightly outside", "clipped")
    r = record_of(spec, 0)
    np.testing.assert_allclose(r.boxes[0], [0.89 * 64, 0.4 * 48, 64.0, 0.6 * 48], atol=1e-3)


def test_rounding_at_the_border_is_not_a_problem(tmp_path, capsys):
    y = make_set(tmp_path, ["2 0.9500005 0.5 0.100002 0.2\n", GOOD])   # x2 = 1.000002
    spec, err = load_and_capture(y, capsys)
    assert spec.report.issues == [] and "no problems found" in err
    assert record_of(spec, 0).boxes[0, 2] == pytest.approx(64.0)


def test_duplicate_box_dropped(tmp_path, capsys):
    y = make_set(tmp_path, ["0 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n", GOOD])
    spec, err = load_and_capture(y, capsys)
    only_issue(spec, err, lab_path(tmp_path, 0), "line 3", "duplicate of line 1", "dropped")
    assert sorted(record_of(spec, 0).classes.tolist()) == [0, 1]   # same box, other class: kept


def test_polygon_line_becomes_its_box(tmp_path, capsys):
    y = make_set(tmp_path, ["3 0.1 0.2 0.5 0.2 0.3 0.6\n", GOOD])
    spec, err = load_and_capture(y, capsys)
    assert spec.report.issues == []
    np.testing.assert_allclose(record_of(spec, 0).boxes[0], [0.1 * 64, 0.2 * 48, 0.5 * 64, 0.6 * 48],
                               atol=1e-3)


# ----------------------------------------------------------------------------- label files

def test_empty_label_file_kept_as_background(tmp_path, capsys):
    y = make_set(tmp_path, ["", GOOD])
    spec, err = load_and_capture(y, capsys)
    assert spec.report.issues == [] and "1 without boxes;" in err and "no problems found" in err   # a negative
    r = record_of(spec, 0)
    assert r is not None and len(r.boxes) == 0 and r.boxes.shape == (0, 4)
    assert spec.report.splits["train"]["background"] == 1


def test_missing_label_file_kept_as_background(tmp_path, capsys):
    y = make_set(tmp_path, [None, GOOD])
    spec, err = load_and_capture(y, capsys)
    only_issue(spec, err, img_path(tmp_path, 0), "no label file", "im0.txt", "background")
    assert len(record_of(spec, 0).boxes) == 0


def test_undecodable_label_file_skips_image(tmp_path, capsys):
    y = make_set(tmp_path, [GOOD, GOOD])
    with open(lab_path(tmp_path, 1), "wb") as f:
        f.write(b"\xff\xfe\x00garbage\x81")
    spec, err = load_and_capture(y, capsys)
    only_issue(spec, err, lab_path(tmp_path, 1), "unreadable label file", "skipped")
    assert record_of(spec, 1) is None


# ----------------------------------------------------------------------------- whole set

def test_nothing_usable_is_an_error(tmp_path, capsys):
    y = make_set(tmp_path, [GOOD, GOOD])
    for i in range(2):
        with open(img_path(tmp_path, i), "wb") as f:
            f.write(b"junk")
    with pytest.raises(DataError) as e:
        load_data(y)
    msg = str(e.value)
    assert y in msg and "nothing usable" in msg and "'train'" in msg and "im0.jpg" in msg


def test_no_usable_box_is_an_error(tmp_path):
    y = make_set(tmp_path, ["", "7 0.5 0.5 0.1 0.1\n"])
    with pytest.raises(DataError, match="nothing usable in the 'train' split.*no usable box"):
        load_data(y)


def test_scan_is_cached_and_invalidated(tmp_path, capsys, monkeypatch):
    y = make_set(tmp_path, ["0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n", GOOD])
    first, err1 = load_and_capture(y, capsys)
    cache = os.path.join(str(tmp_path), "labels", "train.ppyolo-cache.json")
    assert os.path.isfile(cache)

    def boom(path):
        raise AssertionError("cache not used")
    monkeypatch.setattr(checks, "inspect_image", boom)
    second, err2 = load_and_capture(y, capsys)
    assert err1 == err2, "the cached result is reported again, the same way"
    assert [(r.path, r.boxes.tolist()) for r in first.train] == \
           [(r.path, r.boxes.tolist()) for r in second.train]
    monkeypatch.undo()

    with open(lab_path(tmp_path, 0), "w") as f:    # an edit makes the cache stale
        f.write("0 0.5 0.5 0.2 0.2 extra\n")
    os.utime(lab_path(tmp_path, 0), ns=(1, 1))
    third, err3 = load_and_capture(y, capsys)
    only_issue(third, err3, lab_path(tmp_path, 0), "expected 5 values")


def test_summary_is_capped_but_report_is_complete(tmp_path, capsys):
    lines = "".join(f"0 0.5 0.5 0.2 0.{i + 1}\n" for i in range(5)) + "x\n" * 60
    y = make_set(tmp_path, [lines, GOOD])
    spec, err = load_and_capture(y, capsys)
    assert len(spec.report.issues) == 60
    assert "and 20 more" in err


# ----------------------------------------------------------------------------- COCO

def _coco(tmp_path, anns, images=None, cats=None):
    import json
    d = tmp_path / "coco"
    (d / "images").mkdir(parents=True, exist_ok=True)
    (d / "annotations").mkdir(exist_ok=True)
    images = images or [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
                        {"id": 2, "file_name": "b.jpg", "width": 64, "height": 48}]
    for im in images:
        cv2.imwrite(str(d / "images" / im["file_name"]), np.zeros((48, 64, 3), np.uint8))
    cats = cats or [{"id": 3, "name": "x"}, {"id": 9, "name": "y"}]
    good = [{"id": 100, "image_id": 1, "category_id": 3, "bbox": [1, 2, 10, 10], "iscrowd": 0},
            {"id": 101, "image_id": 2, "category_id": 9, "bbox": [5, 5, 10, 10], "iscrowd": 0}]
    js = d / "annotations" / "instances_val.json"
    js.write_text(json.dumps({"images": images, "annotations": good + anns, "categories": cats}))
    return str(js), str(d / "images")


@pytest.mark.parametrize("ann, words", [
    ({"category_id": 5, "bbox": [1, 1, 5, 5]}, ["annotation 7", "category_id 5 is not in 'categories'"]),
    ({"category_id": 3, "bbox": [1, 1, 5]}, ["annotation 7", "bbox must be 4 numbers"]),
    ({"category_id": 3, "bbox": [1, "q", 5, 5]}, ["bbox must be 4 numbers"]),
    ({"category_id": 3, "bbox": [1, 1, 0, 5]}, ["zero-area box"]),
    ({"category_id": 3, "bbox": [100, 1, 5, 5]}, ["outside the image", "dropped"]),
    ({"category_id": 3, "bbox": [1, 2, 10, 10]}, ["duplicate of annotation 100"]),
])
def test_coco_bad_annotation_dropped(tmp_path, capsys, ann, words):
    js, imgs = _coco(tmp_path, [dict(ann, id=7, image_id=1, iscrowd=0)])
    spec, err = load_and_capture(js, capsys)
    only_issue(spec, err, os.path.join(imgs, "a.jpg"), *words)
    a = [r for r in spec.val if r.image_id == 1][0]
    assert a.classes.tolist() == [0]


def test_coco_missing_image_and_size_mismatch(tmp_path, capsys):
    images = [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
              {"id": 2, "file_name": "b.jpg", "width": 64, "height": 48},
              {"id": 3, "file_name": "c.jpg", "width": 64, "height": 48},
              {"id": 4, "file_name": "d.jpg", "width": 64, "height": 48}]
    js, imgs = _coco(tmp_path, [], images=images)
    os.remove(os.path.join(imgs, "c.jpg"))
    cv2.imwrite(os.path.join(imgs, "d.jpg"), np.zeros((10, 10, 3), np.uint8))
    spec, err = load_and_capture(js, capsys)
    only_issue(spec, err, os.path.join(imgs, "c.jpg"), "cannot read the file", "image skipped")
    only_issue(spec, err, os.path.join(imgs, "d.jpg"), "size 10x10 differs from 64x48")
    assert sorted(r.image_id for r in spec.val) == [1, 2]


def test_coco_crowd_and_orphans_reported(tmp_path, capsys):
    js, imgs = _coco(tmp_path, [
        {"id": 7, "image_id": 1, "category_id": 3, "bbox": [1, 1, 5, 5], "iscrowd": 1},
        {"id": 8, "image_id": 42, "category_id": 3, "bbox": [1, 1, 5, 5], "iscrowd": 0}])
    spec, err = load_and_capture(js, capsys)
    only_issue(spec, err, js, "annotation 8", "image_id 42 is not in 'images'")
    assert "1 crowd annotation(s) (iscrowd=1) ignored" in err


def test_the_same_summary_is_said_once_per_process(tmp_path, capsys):
    """The pipeline loads its data in every stage: one summary, unless the data changed."""
    y = make_set(tmp_path, [GOOD, GOOD])
    spec, err = load_and_capture(y, capsys)
    load_data(y)
    assert capsys.readouterr().err == ""
    with open(lab_path(tmp_path, 0), "w") as f:
        f.write("0 0.5 0.5 0 0.1\n")     # now a problem: a new summary is said
    load_data(y)
    assert "zero-area box" in capsys.readouterr().err

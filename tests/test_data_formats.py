"""Each data format gives the same Records; names come from the data; bad specs are clear errors."""
import json
import os

import ppyolo_slim  # noqa: F401  (native import order)
import cv2
import numpy as np
import pytest

from ppyolo_slim.data import DataError, DataSpec, Record, load_data
from ppyolo_slim.data import shapes as shapes_mod

# (w, h, [(cls, x1, y1, x2, y2) in pixels])
IMAGES = {
    "train/a.jpg": (64, 48, [(0, 4, 6, 20, 30), (2, 30, 10, 60, 40)]),
    "train/sub/b.png": (40, 80, [(1, 0, 0, 40, 80)]),
    "val/c.jpg": (50, 50, [(2, 10, 10, 20, 25)]),
}


def write_yolo(root, names_yaml="[cat, dog, bird]", extra=""):
    for rel, (w, h, boxes) in IMAGES.items():
        ip = os.path.join(root, "images", rel)
        lp = os.path.join(root, "labels", os.path.splitext(rel)[0] + ".txt")
        os.makedirs(os.path.dirname(ip), exist_ok=True)
        os.makedirs(os.path.dirname(lp), exist_ok=True)
        cv2.imwrite(ip, np.full((h, w, 3), 90, np.uint8))
        with open(lp, "w") as f:
            for c, x1, y1, x2, y2 in boxes:
                f.write(f"{c} {(x1 + x2) / 2 / w} {(y1 + y2) / 2 / h} {(x2 - x1) / w} {(y2 - y1) / h}\n")
    y = os.path.join(root, "data.yaml")
    with open(y, "w") as f:
        f.write(f"path: .\ntrain: images/train\nval: images/val\nnames: {names_yaml}\n{extra}")
    return y


def check_records(records, rels, root):
    assert sorted(os.path.relpath(r.path, os.path.join(root, "images")) for r in records) == sorted(rels)
    for r in records:
        w, h, boxes = IMAGES[os.path.relpath(r.path, os.path.join(root, "images"))]
        assert isinstance(r, Record) and (r.width, r.height) == (w, h)
        assert r.boxes.dtype == np.float32 and r.classes.dtype == np.int64
        order = np.lexsort(r.boxes.T[::-1])
        want = np.array([b[1:] for b in boxes], np.float32)
        np.testing.assert_allclose(r.boxes[order], want[np.lexsort(want.T[::-1])], atol=1e-3)
        assert sorted(r.classes.tolist()) == sorted(b[0] for b in boxes)


def test_ultralytics_yaml_dirs(tmp_path):
    root = str(tmp_path)
    spec = load_data(write_yolo(root), verbose=False)
    assert isinstance(spec, DataSpec) and spec.names == ["cat", "dog", "bird"] and spec.nc == 3
    check_records(spec.train, ["train/a.jpg", "train/sub/b.png"], root)
    check_records(spec.val, ["val/c.jpg"], root)
    assert len({r.image_id for r in spec.train}) == 2


def test_ultralytics_names_dict_txt_lists_and_relative_path(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    write_yolo(str(root))
    (root / "train.txt").write_text("./images/train/a.jpg\n./images/train/sub/b.png\n")
    (root / "val.txt").write_text(str(root / "images/val/c.jpg") + "\n")
    y = tmp_path / "cfg" / "my.yaml"
    y.parent.mkdir()
    y.write_text("path: ../ds\ntrain: train.txt\nval: [val.txt]\nnames: {0: cat, 2: bird, 1: dog}\nnc: 3\n")
    spec = load_data(str(y), verbose=False)
    assert spec.names == ["cat", "dog", "bird"]
    check_records(spec.train, ["train/a.jpg", "train/sub/b.png"], str(root))
    check_records(spec.val, ["val/c.jpg"], str(root))


@pytest.mark.parametrize("yaml_text, words", [
    ("path: .\ntrain: images/train\nnames: [a, b, c]\n", "no 'val' entry"),
    ("path: .\ntrain: images/train\nval: images/val\nnames: [a, b, c]\nnc: 4\n", "nc=4 but 3 names"),
    ("path: .\ntrain: images/train\nval: images/val\n", "'names' must be a list"),
    ("path: .\ntrain: images/train\nval: images/val\nnames: {0: a, 2: c}\n", "class ids 0..1"),
    ("path: nowhere\ntrain: images/train\nval: images/val\nnames: [a]\n", "path 'nowhere' not found"),
    ("path: .\ntrain: images/missing\nval: images/val\nnames: [a, b, c]\n", "train 'images/missing' not found"),
    ("- just\n- a list\n", "must be a mapping"),
])
def test_ultralytics_yaml_errors(tmp_path, yaml_text, words):
    write_yolo(str(tmp_path))
    y = tmp_path / "bad.yaml"
    y.write_text(yaml_text)
    with pytest.raises(DataError, match=words) as e:
        load_data(str(y), verbose=False)
    assert str(y) in str(e.value)


def test_unknown_data_argument(tmp_path):
    with pytest.raises(DataError, match="not found: expected an ultralytics data YAML"):
        load_data(str(tmp_path / "nope.yaml"))
    with pytest.raises(DataError, match="is a folder"):
        load_data(str(tmp_path))


# ----------------------------------------------------------------------------- COCO

CATS = [{"id": 7, "name": "cat"}, {"id": 3, "name": "bird"}, {"id": 12, "name": "dog"}]


def write_coco(root, split, rels, json_name=None, cats=CATS):
    """COCO files for the same images: contiguous index i <-> i-th category by id."""
    ids = sorted(c["id"] for c in cats)
    names = {c["id"]: c["name"] for c in cats}
    by_name = {"cat": 0, "dog": 1, "bird": 2}   # classes of IMAGES, as in the YOLO files
    cat_of = {by_name[names[i]]: i for i in ids}
    images, anns = [], []
    for k, rel in enumerate(rels):
        w, h, boxes = IMAGES[rel]
        images.append({"id": 100 + k, "file_name": os.path.basename(rel), "width": w, "height": h})
        src = os.path.join(root, "images", rel)
        dst = os.path.join(root, "coco", split, os.path.basename(rel))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with open(src, "rb") as f, open(dst, "wb") as g:
            g.write(f.read())
        for c, x1, y1, x2, y2 in boxes:
            anns.append({"id": len(anns) + 1, "image_id": 100 + k, "category_id": cat_of[c],
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    js = os.path.join(root, "coco", "annotations", json_name or f"instances_{split}.json")
    os.makedirs(os.path.dirname(js), exist_ok=True)
    with open(js, "w") as f:
        json.dump({"images": images, "annotations": anns, "categories": cats}, f)
    return js


def test_coco_json_alone_matches_pycocotools(tmp_path):
    from pycocotools.coco import COCO
    root = str(tmp_path)
    write_yolo(root)
    js = write_coco(root, "val", ["train/a.jpg", "train/sub/b.png", "val/c.jpg"])
    spec = load_data(js, verbose=False)
    # names sorted by category id (3 bird, 7 cat, 12 dog), ids kept for the way back
    assert spec.names == ["bird", "cat", "dog"] and spec.category_ids == [3, 7, 12]
    assert spec.train is spec.val or [r.path for r in spec.train] == [r.path for r in spec.val]
    coco = COCO(js)
    assert sorted(r.image_id for r in spec.val) == sorted(coco.getImgIds())
    for r in spec.val:
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[r.image_id]))
        want = sorted((spec.category_ids.index(a["category_id"]), a["bbox"][0], a["bbox"][1],
                       a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]) for a in anns)
        got = sorted((int(c),) + tuple(float(v) for v in b) for c, b in zip(r.classes, r.boxes))
        np.testing.assert_allclose(np.array(got), np.array(want), atol=1e-4)
        info = coco.loadImgs([r.image_id])[0]
        assert (r.width, r.height) == (info["width"], info["height"])
        assert os.path.basename(r.path) == info["file_name"]


def test_coco_yaml_spec_same_boxes_as_yolo(tmp_path):
    root = str(tmp_path)
    yolo = load_data(write_yolo(root), verbose=False)
    write_coco(root, "train", ["train/a.jpg", "train/sub/b.png"])
    write_coco(root, "val", ["val/c.jpg"])
    y = tmp_path / "coco.yaml"
    y.write_text("format: coco\npath: coco\n"
                 "train: {images: train, annotations: annotations/instances_train.json}\n"
                 "val: annotations/instances_val.json\n")
    coco = load_data(str(y), verbose=False)
    remap = [coco.names.index(n) for n in yolo.names]     # YOLO index -> COCO index
    for a_split, b_split in ((yolo.train, coco.train), (yolo.val, coco.val)):
        a = {os.path.basename(r.path): r for r in a_split}
        b = {os.path.basename(r.path): r for r in b_split}
        assert sorted(a) == sorted(b)
        for k in a:
            ka = sorted(zip([remap[c] for c in a[k].classes], a[k].boxes.round(3).tolist()))
            kb = sorted(zip(b[k].classes.tolist(), b[k].boxes.round(3).tolist()))
            assert ka == kb


def test_coco_split_category_mismatch_is_an_error(tmp_path):
    root = str(tmp_path)
    write_yolo(root)
    write_coco(root, "train", ["train/a.jpg"])
    write_coco(root, "val", ["val/c.jpg"],
               cats=[{"id": 7, "name": "cat"}, {"id": 3, "name": "bird"}, {"id": 13, "name": "dog"}])
    y = tmp_path / "coco.yaml"
    y.write_text("path: coco/annotations\ntrain: instances_train.json\nval: instances_val.json\n")
    with pytest.raises(DataError, match="categories of .*instances_.*differ"):
        load_data(str(y), verbose=False)


def test_coco_bad_json_is_an_error(tmp_path):
    p = tmp_path / "instances_x.json"
    p.write_text("{not json")
    with pytest.raises(DataError, match="not a readable COCO json"):
        load_data(str(p))
    p.write_text(json.dumps({"images": []}))
    with pytest.raises(DataError, match="needs the lists 'images', 'annotations' and 'categories'"):
        load_data(str(p))


def test_coco_images_not_found_is_an_error(tmp_path):
    root = str(tmp_path)
    write_yolo(root)
    js = write_coco(root, "val", ["val/c.jpg"])
    os.remove(os.path.join(root, "coco", "val", "c.jpg"))
    with pytest.raises(DataError, match="cannot find the images of .*c.jpg"):
        load_data(js)


# ----------------------------------------------------------------------------- the embedded set

def test_shapes_generated_on_first_use(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PPYOLO_SLIM_SHAPES_DIR", str(tmp_path / "shapes"))
    monkeypatch.setitem(shapes_mod.DEFAULTS, "n_train", 6)
    monkeypatch.setitem(shapes_mod.DEFAULTS, "n_val", 3)
    monkeypatch.setitem(shapes_mod.DEFAULTS, "img_size", 64)
    spec = load_data("shapes")
    out = capsys.readouterr()
    assert "shapes: generated 6 train / 3 val images" in out.out
    assert spec.names == shapes_mod.NAMES and len(spec.train) == 6 and len(spec.val) == 3
    assert spec.report.issues == []
    marker = tmp_path / "shapes" / shapes_mod.MARKER
    mtime = marker.stat().st_mtime_ns
    load_data("shapes")                          # second use: no regeneration
    assert "generated" not in capsys.readouterr().out and marker.stat().st_mtime_ns == mtime

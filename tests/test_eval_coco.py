"""coco_evaluate against pycocotools' COCOeval run directly on the same data."""
import contextlib
import io
import json
from dataclasses import dataclass

import numpy as np
import pytest

import ppyolo_slim  # noqa: F401  import order (pycocotools before paddle)
from ppyolo_slim.engine.evaluate import EvaluationError, coco_evaluate, format_table


@dataclass
class Rec:   # the data contract's Record fields; coco_evaluate only reads these
    path: str
    image_id: int
    width: int
    height: int
    boxes: np.ndarray
    classes: np.ndarray


NAMES = ["circle", "square", "never_seen"]


def make_records(rng, n=8):
    recs = []
    for i in range(n):
        w, h = int(rng.integers(60, 120)), int(rng.integers(60, 120))
        k = 0 if i == 3 else 14 if i == 0 else int(rng.integers(1, 5))   # 3: no objects; 0: > 10
        x1 = rng.uniform(0, w - 25, k)
        y1 = rng.uniform(0, h - 25, k)
        bw, bh = rng.uniform(6, 24, k), rng.uniform(6, 24, k)
        boxes = np.stack([x1, y1, x1 + bw, y1 + bh], 1).astype(np.float32).reshape(-1, 4)
        recs.append(Rec(f"img{i}.png", 100 + 7 * i, w, h, boxes, rng.integers(0, 2, k).astype(np.int64)))
    return recs


def noisy_detections(rng, recs):
    dets = {}
    for r in recs:
        rows = []
        for b, c in zip(r.boxes, r.classes):
            if rng.uniform() < 0.15:                           # missed object
                continue
            jit = rng.normal(0, 2.0, 4)
            cls = c if rng.uniform() > 0.1 else 1 - c          # sometimes the wrong class
            rows.append([*(b + jit), rng.uniform(0.3, 1.0), cls])
        for _ in range(int(rng.integers(0, 3))):               # false positives
            x, y = rng.uniform(0, r.width - 10), rng.uniform(0, r.height - 10)
            rows.append([x, y, x + 10, y + 10, rng.uniform(0, 0.6), int(rng.integers(0, 3))])
        if r.image_id == 100 + 7 * 5:                          # image 5: no detections at all
            rows = []
        dets[r.image_id] = np.array(rows, np.float32).reshape(-1, 6)
    return dets


def cocoeval_directly(recs, dets, names, tmp_path, cat_ids=None):
    """The reference: a COCO json file on disk, results as loadRes dicts, COCOeval.summarize."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    gt = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)]}
    for r in recs:
        gt["images"].append({"id": r.image_id, "width": r.width, "height": r.height})
        for b, c in zip(r.boxes.tolist(), r.classes.tolist()):
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": r.image_id,
                                      "category_id": c + 1, "iscrowd": 0,
                                      "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                                      "area": (b[2] - b[0]) * (b[3] - b[1])})
    p = tmp_path / "gt.json"
    p.write_text(json.dumps(gt))
    res = [{"image_id": iid, "category_id": int(d[5]) + 1, "score": float(d[4]),
            "bbox": [float(d[0]), float(d[1]), float(d[2] - d[0]), float(d[3] - d[1])]}
           for iid, ds in dets.items() for d in ds]
    with contextlib.redirect_stdout(io.StringIO()):
        cg = COCO(str(p))
        cd = cg.loadRes(res)
        ev = COCOeval(cg, cd, "bbox")
        if cat_ids is not None:
            ev.params.catIds = cat_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


@pytest.mark.parametrize("seed", [0, 1])
def test_numbers_equal_cocoeval(seed, tmp_path):
    rng = np.random.default_rng(seed)
    recs = make_records(rng)
    dets = noisy_detections(rng, recs)
    m = coco_evaluate(recs, dets, NAMES)
    ref = cocoeval_directly(recs, dets, NAMES, tmp_path)
    assert 0.05 < ref[0] < 0.95                      # a non-trivial case
    assert m["map50_95"] == pytest.approx(ref[0], abs=1e-12)
    assert m["map50"] == pytest.approx(ref[1], abs=1e-12)
    assert m["coco_stats"]["AP75"] == pytest.approx(ref[2], abs=1e-12)
    for k, name in enumerate(NAMES[:2]):             # per class = COCOeval restricted to that class
        ref_k = cocoeval_directly(recs, dets, NAMES, tmp_path, cat_ids=[k + 1])
        assert m["per_class"][name] == pytest.approx(ref_k[0], abs=1e-12)
        assert m["per_class_ap50"][name] == pytest.approx(ref_k[1], abs=1e-12)
    assert m["per_class"]["never_seen"] is None      # no instances: undefined, not 0
    assert m["num_instances"] == sum(len(r.classes) for r in recs)
    assert m["instances"]["circle"] == sum(int((r.classes == 0).sum()) for r in recs)
    assert m["num_detections"] == sum(len(d) for d in dets.values())


def test_perfect_predictions_score_one():
    rng = np.random.default_rng(5)
    recs = make_records(rng)
    dets = {r.image_id: np.concatenate([r.boxes, np.full((len(r.boxes), 1), 0.9), r.classes[:, None]], 1)
            for r in recs}
    m = coco_evaluate(recs, dets, NAMES)
    assert m["map50_95"] == pytest.approx(1.0) and m["map50"] == pytest.approx(1.0)
    assert m["per_class"]["circle"] == pytest.approx(1.0) and m["per_class"]["square"] == pytest.approx(1.0)


def test_shifted_boxes_hand_computed():
    # 20x20 boxes shifted 4.5 px right: IoU = 15.5*20 / (2*400 - 15.5*20) = 0.6327, so the
    # detections match at IoU 0.50, 0.55, 0.60 and miss at 0.65..0.95: AP50 = 1, AP50-95 = 3/10
    recs = [Rec(f"{i}.png", i + 1, 100, 80, np.array([[10, 10, 30, 30], [50, 40, 70, 60]], np.float32),
                np.array([0, 1])) for i in range(3)]
    dets = {r.image_id: np.array([[14.5, 10, 34.5, 30, 0.8, 0], [54.5, 40, 74.5, 60, 0.7, 1]], np.float32)
            for r in recs}
    m = coco_evaluate(recs, dets, ["a", "b"])
    assert m["map50"] == pytest.approx(1.0)
    assert m["map50_95"] == pytest.approx(0.3)
    assert m["per_class"] == {"a": pytest.approx(0.3), "b": pytest.approx(0.3)}


def test_wrong_class_scores_zero_for_that_class():
    recs = [Rec("0.png", 1, 64, 64, np.array([[10, 10, 30, 30]], np.float32), np.array([0]))]
    m = coco_evaluate(recs, {1: np.array([[10, 10, 30, 30, 0.9, 1]], np.float32)}, ["a", "b"])
    assert m["map50_95"] == 0.0 and m["per_class"] == {"a": 0.0, "b": None}


def test_no_detections_gives_zero_not_a_crash():
    rng = np.random.default_rng(2)
    recs = make_records(rng)
    for dets in ({}, {r.image_id: np.zeros((0, 6), np.float32) for r in recs}):
        m = coco_evaluate(recs, dets, NAMES)
        assert m["map50_95"] == 0.0 and m["map50"] == 0.0 and m["num_detections"] == 0
        assert m["per_class"] == {"circle": 0.0, "square": 0.0, "never_seen": None}
        assert any("no detections" in n for n in m["notes"])


def test_no_ground_truth_at_all():
    recs = [Rec("0.png", 1, 64, 64, np.zeros((0, 4), np.float32), np.zeros(0, np.int64))]
    m = coco_evaluate(recs, {1: np.array([[1, 1, 9, 9, 0.9, 0]], np.float32)}, ["a"])
    assert m["map50_95"] == 0.0 and m["per_class"] == {"a": None}
    assert any("no ground-truth" in n for n in m["notes"])


def test_bad_inputs_are_named():
    recs = [Rec("a.png", 1, 64, 64, np.array([[1, 1, 9, 9]], np.float32), np.array([0]))]
    with pytest.raises(EvaluationError, match="image_id 2"):
        coco_evaluate(recs, {2: np.array([[1, 1, 9, 9, 0.9, 0]], np.float32)}, ["a"])
    with pytest.raises(EvaluationError, match="class 3"):
        coco_evaluate(recs, {1: np.array([[1, 1, 9, 9, 0.9, 3]], np.float32)}, ["a"])
    with pytest.raises(EvaluationError, match="b.png: image_id 1"):
        coco_evaluate(recs + [Rec("b.png", 1, 64, 64, np.zeros((0, 4)), np.zeros(0, np.int64))], {}, ["a"])
    with pytest.raises(EvaluationError, match="a.png: class id 1"):
        coco_evaluate([Rec("a.png", 1, 64, 64, np.array([[1, 1, 9, 9]]), np.array([1]))], {}, ["a"])


def test_table_lists_every_class():
    rng = np.random.default_rng(0)
    recs = make_records(rng)
    m = coco_evaluate(recs, noisy_detections(rng, recs), NAMES)
    t = format_table(m).splitlines()
    assert t[0].split() == ["Class", "Images", "Instances", "AP50", "AP50-95"]
    assert t[1].split() == ["all", str(len(recs)), str(m["num_instances"]), f"{m['map50']:.3f}",
                            f"{m['map50_95']:.3f}"]
    row = {line.split()[0]: line.split() for line in t[2:5]}
    assert row["circle"][2:] == [str(m["instances"]["circle"]), f"{m['per_class_ap50']['circle']:.3f}",
                                 f"{m['per_class']['circle']:.3f}"]
    assert row["never_seen"][2:] == ["0", "-", "-"]
    json.dumps(m, allow_nan=False)   # the report is plain JSON


def test_more_than_ten_detections_per_image_and_class():
    # COCO counts up to 100 detections per image and class; per-class AP must use that column too
    boxes = np.array([[x, y, x + 8, y + 8] for x in range(0, 100, 20) for y in range(0, 60, 20)], np.float32)
    recs = [Rec("0.png", 1, 100, 60, boxes, np.zeros(len(boxes), np.int64))]
    dets = {1: np.concatenate([boxes, np.linspace(0.9, 0.5, len(boxes))[:, None],
                               np.zeros((len(boxes), 1))], 1)}
    m = coco_evaluate(recs, dets, ["a"])
    assert len(boxes) == 15
    assert m["map50_95"] == pytest.approx(1.0) and m["per_class"]["a"] == pytest.approx(1.0)
    m10 = coco_evaluate(recs, dets, ["a"], max_dets=10)   # only the 10 best count: recall 2/3
    assert m10["per_class"]["a"] == pytest.approx(m10["map50_95"]) and m10["map50_95"] < 0.7

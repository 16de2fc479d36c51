"""Every augmentation moves the boxes with the pixels: solid rectangles of known colours are
drawn for each box, transformed, and each transformed box must frame its colour's pixels."""
import os

import ppyolo_slim  # noqa: F401  (native import order)
import cv2
import numpy as np
import pytest

from ppyolo_slim.data import DetectionDataset, Record, letterbox
from ppyolo_slim.data import augment as A

# Pure colours: any blend of one with the black background or the grey padding stays far
# (> TOL in some channel) from every other colour, so a colour's pixels are its own box.
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255),
           (255, 255, 255)]
TOL = 100
PX = 2.0     # allowed disagreement between a box and its pixels (interpolated edges)
PX_TURNED = 3.0   # rotated/sheared: the sharp corner tip covers less than half a pixel


def draw(h, w, boxes, classes):
    img = np.zeros((h, w, 3), np.uint8)
    for (x1, y1, x2, y2), c in zip(boxes, classes):
        img[int(y1):int(y2), int(x1):int(x2)] = COLOURS[c]
    return img


def pixel_box(img, c):
    m = (np.abs(img.astype(int) - COLOURS[c]) <= TOL).all(2)
    ys, xs = np.nonzero(m)
    if len(xs) == 0:
        return None, 0
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float), len(xs)


def assert_boxes_match_pixels(img, boxes, classes, min_boxes=1, px=PX, turned=False):
    """Each box frames its colour's pixels. ``turned``: a rotated box cut by the image border
    is the box of its clipped corners, which can only be larger than the visible part (box
    labels carry no shape), so there the pixels must lie inside the box instead."""
    assert len(boxes) >= min_boxes, "the test must check something"
    assert len(set(np.asarray(classes).tolist())) == len(classes), "one box per colour"
    h, w = img.shape[:2]
    for b, c in zip(np.asarray(boxes, float), classes):
        pb, n = pixel_box(img, int(c))
        assert pb is not None, f"box {b} of colour {c} has no pixels"
        at_border = b[0] <= 0.01 or b[1] <= 0.01 or b[2] >= w - 0.01 or b[3] >= h - 0.01
        if turned and at_border:
            assert (pb[:2] >= b[:2] - px).all() and (pb[2:] <= b[2:] + px).all(), (c, b, pb)
        else:
            np.testing.assert_allclose(b, pb, atol=px, err_msg=f"colour {c}")


def scene(rng, h, w, n, first_class=0):
    """n non-touching rectangles (at least 12 px) with distinct colours."""
    boxes = []
    for _ in range(400):
        if len(boxes) == n:
            break
        bw, bh = rng.integers(12, max(13, w // 3)), rng.integers(12, max(13, h // 3))
        x1, y1 = rng.integers(0, w - bw), rng.integers(0, h - bh)
        b = np.array([x1, y1, x1 + bw, y1 + bh], float)
        if all(b[0] > o[2] + 3 or o[0] > b[2] + 3 or b[1] > o[3] + 3 or o[1] > b[3] + 3 for o in boxes):
            boxes.append(b)
    assert len(boxes) == n
    classes = np.arange(first_class, first_class + n)
    return draw(h, w, boxes, classes), np.array(boxes), classes


# ----------------------------------------------------------------------------- single transforms

@pytest.mark.parametrize("hw, size, scaleup", [((120, 200), 160, True), ((200, 90), 128, True),
                                               ((101, 200), 160, True), ((200, 51), 64, True),
                                               ((60, 50), 128, False), ((64, 64), 96, True)])
def test_letterbox(hw, size, scaleup):
    rng = np.random.default_rng(1)
    img, boxes, classes = scene(rng, *hw, n=4)
    out, r, (pw, ph) = letterbox(img, size, scaleup=scaleup)
    assert out.shape == (size, size, 3) and out.dtype == np.uint8
    h, w = hw
    want_r = min(size / h, size / w) if scaleup else min(size / h, size / w, 1.0)
    assert r == pytest.approx(want_r)
    # the image lies in the middle, the padding is grey 114
    nh, nw = round(h * r), round(w * r)
    assert (pw, ph) == ((size - nw) // 2, (size - nh) // 2)
    pad_mask = np.ones((size, size), bool)
    pad_mask[int(ph):int(ph) + nh, int(pw):int(pw) + nw] = False
    assert (out[pad_mask] == 114).all()
    assert_boxes_match_pixels(out, boxes * r + [pw, ph, pw, ph], classes, min_boxes=4)


def test_letterbox_rectangular_target():
    img, boxes, classes = scene(np.random.default_rng(2), 100, 100, n=3)
    out, r, (pw, ph) = letterbox(img, (64, 128))
    assert out.shape == (64, 128, 3) and r == pytest.approx(0.64) and (pw, ph) == (32.0, 0.0)
    assert_boxes_match_pixels(out, boxes * r + [pw, ph, pw, ph], classes, 3)


def test_flips():
    img, boxes, classes = scene(np.random.default_rng(3), 90, 130, n=5)
    out, b = A.flip_lr(img, boxes)
    assert np.array_equal(out, img[:, ::-1])
    assert_boxes_match_pixels(out, b, classes, 5)
    out, b = A.flip_ud(img, boxes)
    assert np.array_equal(out, img[::-1])
    assert_boxes_match_pixels(out, b, classes, 5)


@pytest.mark.parametrize("seed", range(6))
def test_random_affine(seed):
    rng = np.random.default_rng(seed)
    img, boxes, classes = scene(rng, 160, 160, n=5)
    out, b, c = A.random_affine(img, boxes, classes, rng, degrees=30, translate=0.2, scale=0.4,
                                shear=8)
    assert out.shape == img.shape
    assert_boxes_match_pixels(out, b, c, min_boxes=1, px=PX_TURNED, turned=True)
    for k in set(classes) - set(c.tolist()):     # dropped boxes left (almost) nothing visible
        pb, n = pixel_box(out, k)
        orig = np.prod(boxes[k][2:] - boxes[k][:2])
        assert pb is None or n < 0.15 * orig * 1.4 ** 2 or min(pb[2:] - pb[:2]) <= 2 + PX


def test_random_affine_identity_is_exact():
    rng = np.random.default_rng(0)
    img, boxes, classes = scene(rng, 50, 70, n=3)
    out, b, c = A.random_affine(img, boxes, classes, rng, 0, 0, 0, 0)
    assert np.array_equal(out, img) and np.allclose(b, boxes) and list(c) == list(classes)


def test_box_candidates():
    before = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 100, 1]], float)
    after = np.array([[0, 0, 8, 8], [0, 0, 2, 8], [0, 0, 3, 3], [0, 0, 100, 3]], float)
    # kept; too thin (2 px); 9% of the area left; aspect ratio ok but only 3 px high -> kept
    assert A.box_candidates(before, after).tolist() == [True, False, False, True]
    assert A.box_candidates(before[:1], np.array([[0, 0, 300, 2.5]])).tolist() == [False]  # ar > 100


def test_hsv_keeps_geometry_and_changes_colour():
    img, boxes, classes = scene(np.random.default_rng(4), 64, 64, n=2)
    img[img.sum(2) == 0] = (60, 120, 90)
    assert np.array_equal(A.augment_hsv(img, np.random.default_rng(0), 0, 0, 0), img)
    out = A.augment_hsv(img, np.random.default_rng(0), 0.5, 0.7, 0.4)
    assert out.shape == img.shape and not np.array_equal(out, img)
    # value gain only: hue and saturation stay, brightness scales by one factor
    out = A.augment_hsv(img, np.random.default_rng(5), 0, 0, 0.4)
    g = np.random.default_rng(5).uniform(-1, 1, 3)[2] * 0.4 + 1
    hsv_in = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(float)
    hsv_out = cv2.cvtColor(out, cv2.COLOR_RGB2HSV).astype(float)
    np.testing.assert_allclose(hsv_out[..., 2], np.clip(hsv_in[..., 2] * g, 0, 255), atol=2)


@pytest.mark.parametrize("seed", range(8))
def test_mosaic_then_crop(seed):
    rng = np.random.default_rng(seed)
    S = 128
    tiles = []
    for k, (h, w) in enumerate([(128, 96), (128, 100), (128, 128), (100, 128)]):
        img, boxes, classes = scene(rng, h, w, n=[2, 2, 2, 1][k], first_class=[0, 2, 4, 6][k])
        tiles.append((img, boxes, classes))
    canvas, b, c = A.mosaic(tiles, S, rng)
    assert canvas.shape == (2 * S, 2 * S, 3)
    assert_boxes_match_pixels(canvas, b, c, min_boxes=1)
    out, b2, c2 = A.random_affine(canvas, b, c, rng, 0, 0.1, 0.5, 0, out_size=(S, S))
    assert out.shape == (S, S, 3)
    if len(b2):
        assert_boxes_match_pixels(out, b2, c2)


# ----------------------------------------------------------------------------- the dataset

def make_records(tmp_path, n, rng, size_range=(60, 140)):
    recs = []
    for i in range(n):
        h, w = rng.integers(*size_range, 2)
        k = int(rng.integers(1, 3))
        img, boxes, classes = scene(rng, int(h), int(w), n=k, first_class=0)
        classes = rng.permutation(len(COLOURS))[:k]       # colours unique within an image
        img = draw(int(h), int(w), boxes, classes)
        p = os.path.join(str(tmp_path), f"{i}.png")
        cv2.imwrite(p, cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        recs.append(Record(p, i, int(w), int(h), boxes, classes))
    return recs


def labels_to_xyxy(labels, S):
    cls, cx, cy, w, h = labels.T.astype(float)
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1) * S, cls.astype(int)


def sample_image(img_chw):
    return np.round(img_chw.transpose(1, 2, 0) * 255).astype(np.uint8)


def test_dataset_plain_letterbox(tmp_path):
    recs = make_records(tmp_path, 4, np.random.default_rng(0))
    S = 96
    ds = DetectionDataset(recs, S, len(COLOURS))
    for i, r in enumerate(recs):
        img, labels, meta = ds[i]
        assert img.shape == (3, S, S) and img.dtype == np.float32 and 0 <= img.min() <= img.max() <= 1
        assert labels.dtype == np.float32 and labels.shape == (len(r.boxes), 5)
        assert meta["image_id"] == r.image_id and meta["path"] == r.path
        assert meta["orig_shape"] == (r.height, r.width)
        b, c = labels_to_xyxy(labels, S)
        assert_boxes_match_pixels(sample_image(img), b, c, len(r.boxes))
        # meta maps the boxes back to the original image (as the evaluator will)
        back = (b - [*meta["pad"], *meta["pad"]]) / meta["ratio"]
        np.testing.assert_allclose(back, r.boxes, atol=PX / meta["ratio"])


AUG = {"mosaic": 0.5, "hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0, "degrees": 15.0, "translate": 0.1,
       "scale": 0.4, "shear": 4.0, "fliplr": 0.5, "flipud": 0.5}


def test_dataset_augmented_boxes_follow_pixels(tmp_path):
    recs = make_records(tmp_path, 8, np.random.default_rng(1))
    S = 128
    ds = DetectionDataset(recs, S, len(COLOURS), augment=AUG, seed=3)
    checked, mosaics, flips = 0, 0, 0
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            img, labels, meta = ds[i]
            assert img.shape == (3, S, S)
            b, c = labels_to_xyxy(labels, S)
            assert (b >= -1e-4).all() and (b <= S + 1e-4).all(), "clipped to the image"
            mosaics += "mosaic" in meta
            flips += meta.get("fliplr", False) + meta.get("flipud", False)
            # a colour used by two of a mosaic's images cannot be told apart by its pixels
            sources = [recs[j] for j in meta.get("mosaic", [meta["image_id"]])]
            used = np.concatenate([r.classes for r in sources]).tolist()
            ok = np.array([used.count(k) == 1 for k in c.tolist()], bool)
            if ok.any():
                assert_boxes_match_pixels(sample_image(img), b[ok], c[ok], px=PX_TURNED, turned=True)
                checked += int(ok.sum())
    assert checked > 20 and mosaics > 3 and flips > 3


def test_dataset_is_deterministic_per_seed_and_epoch(tmp_path):
    recs = make_records(tmp_path, 6, np.random.default_rng(2))
    aug = dict(AUG, hsv_h=0.015, hsv_s=0.7, hsv_v=0.4)
    a = DetectionDataset(recs, 96, len(COLOURS), augment=aug, seed=1)
    b = DetectionDataset(recs, 96, len(COLOURS), augment=aug, seed=1)
    for i in (0, 3, 5):
        x, y = a[i], b[i]
        assert np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1])
    b.set_epoch(1)
    assert any(not np.array_equal(a[i][0], b[i][0]) for i in range(6)), "epochs differ"
    c = DetectionDataset(recs, 96, len(COLOURS), augment=aug, seed=2)
    assert any(not np.array_equal(a[i][0], c[i][0]) for i in range(6)), "seeds differ"


def test_dataset_rejects_bad_input(tmp_path):
    recs = make_records(tmp_path, 1, np.random.default_rng(3))
    with pytest.raises(ValueError, match="unknown augment key"):
        DetectionDataset(recs, 64, len(COLOURS), augment={"mixup": 0.5})
    with pytest.raises(ValueError, match="class id .* nc=1"):
        DetectionDataset([Record(recs[0].path, 0, 10, 10, [[0, 0, 5, 5]], [3])], 64, 1)
    os.remove(recs[0].path)
    with pytest.raises(ValueError, match=r"0\.png: cannot read this image"):
        DetectionDataset(recs, 64, len(COLOURS))[0]

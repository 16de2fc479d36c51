"""NMS against a plain per-class greedy reference and Paddle's own NMS; box mapping by hand."""
import numpy as np
import pytest

from ppyolo_slim.engine.postprocess import (box_iou, clip_boxes, nms, non_max_suppression,
                                            scale_boxes, xywh2xyxy)


def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def reference_nms(pred, conf, iou_thres, max_det, agnostic=False, multi_label=False):
    """Row by row, class by class: the definition, without the max_wh offset trick."""
    out = []
    for x in pred:
        cands = []
        for r in x.astype(np.float64):
            if r[4] <= conf:
                continue
            cx, cy, w, h = r[:4]
            box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
            s = r[5:] * r[4]
            cls = [c for c in range(len(s)) if s[c] > conf] if multi_label else \
                ([int(np.argmax(s))] if s.max() > conf else [])
            cands += [(box, s[c], c) for c in cls]
        cands.sort(key=lambda t: -t[1])
        kept = []
        for box, s, c in cands:
            if all(not (agnostic or c == kc) or _iou(box, kb) <= iou_thres for kb, _, kc in kept):
                kept.append((box, s, c))
        out.append(np.array([list(b) + [s, c] for b, s, c in kept[:max_det]]).reshape(-1, 6))
    return out


def random_pred(rng, b=2, n=200, nc=3, size=64):
    p = np.zeros((b, n, 5 + nc), np.float32)
    p[..., :2] = rng.uniform(0, size, (b, n, 2))
    p[..., 2:4] = rng.uniform(4, 30, (b, n, 2))
    p[..., 4] = rng.uniform(0, 1, (b, n))
    p[..., 5:] = rng.uniform(0, 1, (b, n, nc))
    return p


@pytest.mark.parametrize("agnostic,multi_label,max_det", [
    (False, False, 300), (True, False, 300), (False, True, 300), (False, True, 7), (True, True, 20)])
def test_nms_matches_reference(agnostic, multi_label, max_det):
    rng = np.random.default_rng(int(agnostic) * 2 + int(multi_label) + max_det)
    pred = random_pred(rng)
    got = non_max_suppression(pred, 0.2, 0.45, max_det=max_det, agnostic=agnostic, multi_label=multi_label)
    ref = reference_nms(pred, 0.2, 0.45, max_det, agnostic, multi_label)
    for g, r in zip(got, ref):
        assert g.shape == r.shape and len(g) > 3
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-4)


def test_nms_matches_paddle_per_class_nms():
    import paddle
    from paddle.vision.ops import nms as paddle_nms
    rng = np.random.default_rng(1)
    boxes = xywh2xyxy(np.concatenate([rng.uniform(0, 64, (300, 2)), rng.uniform(4, 30, (300, 2))], 1))
    boxes = boxes.astype(np.float32)
    scores = rng.uniform(0, 1, 300).astype(np.float32)
    cls = rng.integers(0, 4, 300)
    want = paddle_nms(paddle.to_tensor(boxes), 0.5, paddle.to_tensor(scores),
                      paddle.to_tensor(cls), categories=[0, 1, 2, 3]).numpy()
    got = nms(boxes + cls[:, None] * 7680.0, scores, 0.5)
    assert sorted(want.tolist()) == sorted(got.tolist())
    # and kept in score order
    assert np.all(np.diff(scores[got]) <= 0)


def test_hand_made_cases():
    nc = 2
    rows = [
        # cx cy w h obj c0 c1
        [20, 20, 10, 10, 0.9, 0.9, 0.1],      # A: score .81 class 0
        [21, 20, 10, 10, 0.8, 0.9, 0.2],      # B: IoU(A)=0.818, class 0 -> suppressed by A
        [21, 21, 10, 10, 0.8, 0.1, 0.9],      # C: class 1, overlaps A, kept (per-class NMS)
        [50, 50, 8, 8, 0.5, 0.4, 0.45],       # D: obj*cls = .2/.225 < 0.25 -> dropped
        [50, 50, 8, 8, 0.2, 1.0, 1.0],        # E: objectness 0.2 < 0.25 -> dropped early
    ]
    pred = np.array([rows], np.float32)
    assert pred.shape[2] == 5 + nc
    (d,) = non_max_suppression(pred, 0.25, 0.45)
    np.testing.assert_allclose(d, [[15, 15, 25, 25, 0.81, 0], [16, 16, 26, 26, 0.72, 1]], atol=1e-6)
    (d,) = non_max_suppression(pred, 0.25, 0.45, agnostic=True)      # C now overlaps A: gone
    np.testing.assert_allclose(d, [[15, 15, 25, 25, 0.81, 0]], atol=1e-6)
    (d,) = non_max_suppression(pred, 0.15, 0.45, multi_label=True)   # D as class 0 and 1
    # B as class 1 (.16) overlaps C: suppressed; D passes as both classes
    np.testing.assert_allclose(d[:, 4:], [[0.81, 0], [0.72, 1], [0.225, 1], [0.2, 0]], atol=1e-6)
    (d,) = non_max_suppression(pred, 0.25, 0.45, max_det=1)
    assert d.shape == (1, 6) and d[0, 4] == pytest.approx(0.81)
    (d,) = non_max_suppression(pred, 0.25, 0.45, classes=[1])
    assert d.shape == (1, 6) and d[0, 5] == 1
    (d,) = non_max_suppression(pred, 0.95, 0.45)
    assert d.shape == (0, 6) and d.dtype == np.float32
    out = non_max_suppression(np.zeros((3, 0, 7), np.float32))
    assert len(out) == 3 and all(o.shape == (0, 6) for o in out)


def test_bad_prediction_shape_is_a_clear_error():
    with pytest.raises(ValueError, match=r"\[B, N, 5\+nc\]"):
        non_max_suppression(np.zeros((10, 7), np.float32))


def test_box_iou_hand_computed():
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[0, 0, 10, 6], [5, 5, 15, 15], [20, 20, 30, 30]], np.float32)
    np.testing.assert_allclose(box_iou(a, b), [[0.6, 25 / 175, 0]], rtol=1e-6)


def test_scale_boxes_hand_computed():
    # a 200x100 (w x h) image letterboxed to 64: ratio 0.32, resized 64x32, 16 px pad top and bottom
    boxes = np.array([[0, 16, 64, 48], [32, 24, 48, 40], [-5, 10, 70, 50]], np.float32)
    got = scale_boxes(boxes, 0.32, (0, 16), (100, 200))
    np.testing.assert_allclose(got, [[0, 0, 200, 100], [100, 25, 150, 75], [0, 0, 200, 100]], atol=1e-4)
    assert boxes[0, 1] == 16          # input untouched


def test_scale_boxes_inverts_the_letterbox_transform():
    rng = np.random.default_rng(3)
    h, w = 75, 130
    ratio = 96 / 130
    pad = (0.0, (96 - round(h * ratio)) / 2)
    x1 = rng.uniform(0, w - 20, 20)
    y1 = rng.uniform(0, h - 20, 20)
    orig = np.stack([x1, y1, x1 + rng.uniform(1, 20, 20), y1 + rng.uniform(1, 20, 20)], 1).astype(np.float32)
    lb = orig * ratio + np.array([pad[0], pad[1], pad[0], pad[1]], np.float32)
    np.testing.assert_allclose(scale_boxes(lb, ratio, pad, (h, w)), orig, atol=1e-3)


def test_clip_boxes():
    b = np.array([[-1, -2, 300, 50]], np.float32)
    np.testing.assert_array_equal(clip_boxes(b, (40, 100)), [[0, 0, 100, 40]])

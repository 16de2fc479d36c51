"""The YOLOv5 loss against hand computations and a plain loop-by-loop NumPy reference."""
import math

import numpy as np
import pytest

import ppyolo_slim  # noqa: F401  owns native import order, before paddle
import paddle

from ppyolo_slim.config import DEFAULTS
from ppyolo_slim.engine.box_ops import bbox_ciou
from ppyolo_slim.engine.loss import ComputeLoss, LossInputError, build_targets, scaled_gains
from ppyolo_slim.model import ModelMeta, build_model

ANCHORS = np.array([[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119],
                    [116, 90, 156, 198, 373, 326]], np.float32).reshape(3, 3, 2)
STRIDES = [8.0, 16.0, 32.0]
NC, IMG, B = 3, 64, 2
SHAPES = [(IMG // 8, IMG // 8), (IMG // 16, IMG // 16), (IMG // 32, IMG // 32)]


def hyp(**kw):
    h = dict(DEFAULTS["loss"])
    h.update(kw)
    return h


def random_preds(seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return [paddle.to_tensor((rng.standard_normal((B, 3, ny, nx, 5 + NC)) * scale).astype("float32"),
                             stop_gradient=False) for ny, nx in SHAPES]


# ---------------------------------------------------------------- an independent reference

def ciou_np(b1, b2, eps=1e-7, alpha=None):
    """(CIoU, alpha) from the paper's definition, float64, boxes (cx, cy, w, h).
    ``alpha`` given: use it instead of the one of these boxes (for the gradient check)."""
    b1, b2 = np.asarray(b1, np.float64), np.asarray(b2, np.float64)
    a1 = np.concatenate([b1[..., :2] - b1[..., 2:] / 2, b1[..., :2] + b1[..., 2:] / 2], -1)
    a2 = np.concatenate([b2[..., :2] - b2[..., 2:] / 2, b2[..., :2] + b2[..., 2:] / 2], -1)
    lt, rb = np.maximum(a1[..., :2], a2[..., :2]), np.minimum(a1[..., 2:], a2[..., 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), -1)
    union = np.prod(b1[..., 2:], -1) + np.prod(b2[..., 2:], -1) - inter + eps
    iou = inter / union
    enc = np.maximum(a1[..., 2:], a2[..., 2:]) - np.minimum(a1[..., :2], a2[..., :2])
    c2 = (enc ** 2).sum(-1) + eps
    rho2 = ((b1[..., :2] - b2[..., :2]) ** 2).sum(-1)
    v = 4 / math.pi ** 2 * (np.arctan(b2[..., 2] / b2[..., 3]) - np.arctan(b1[..., 2] / b1[..., 3])) ** 2
    if alpha is None:
        alpha = v / (v - iou + 1 + eps)
    return iou - rho2 / c2 - alpha * v, alpha


def bce_np(x, y, pw=1.0):
    x = x.astype(np.float64)
    logsig, log1msig = -np.logaddexp(0, -x), -np.logaddexp(0, x)
    return float(np.mean(-(pw * y * logsig + (1 - y) * log1msig)))


def reference_loss(preds, targets, h, nc=NC, img=IMG):
    """ultralytics ComputeLoss written as plain loops, one target / anchor / cell at a time."""
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    box_g, obj_g, cls_g = h["box"], h["obj"] * (img / 640) ** 2, h["cls"] * nc / 80   # nl = 3
    cp, cn = 1 - 0.5 * h["label_smoothing"], 0.5 * h["label_smoothing"]
    lbox = lobj = lcls = 0.0
    for i, p in enumerate(preds):
        p = p.numpy().astype(np.float64)
        _, na, ny, nx, _ = p.shape
        anc = ANCHORS[i] / STRIDES[i]
        tobj = np.zeros(p.shape[:4])
        rows = []
        for o, (ox, oy) in enumerate([(0, 0), (1, 0), (0, 1), (-1, 0), (0, -1)]):
            for a in range(na):
                for t in targets:
                    gx, gy, gw, gh = t[2] * nx, t[3] * ny, t[4] * nx, t[5] * ny
                    ratio = max(gw / anc[a, 0], anc[a, 0] / gw, gh / anc[a, 1], anc[a, 1] / gh)
                    if not ratio < h["anchor_t"]:
                        continue
                    use = {0: True, 1: gx % 1 < 0.5 and gx > 1, 2: gy % 1 < 0.5 and gy > 1,
                           3: (nx - gx) % 1 < 0.5 and nx - gx > 1,
                           4: (ny - gy) % 1 < 0.5 and ny - gy > 1}[o]
                    if use:
                        gi = min(max(int(math.floor(gx - 0.5 * ox)), 0), nx - 1)
                        gj = min(max(int(math.floor(gy - 0.5 * oy)), 0), ny - 1)
                        rows.append((int(t[0]), a, gj, gi, int(t[1]), [gx - gi, gy - gj, gw, gh]))
        if rows:
            ious, cls_terms = [], []
            for b, a, gj, gi, c, tb in rows:
                ps = p[b, a, gj, gi]
                pxy = sig(ps[:2]) * 2 - 0.5
                pwh = (sig(ps[2:4]) * 2) ** 2 * anc[a]
                iou, _ = ciou_np(np.r_[pxy, pwh], np.array(tb))
                ious.append(iou)
                tobj[b, a, gj, gi] = max(iou, 0.0)           # rows in order: the last one wins
                tc = np.full(nc, cn)
                tc[c] = cp
                cls_terms.append((ps[5:], tc))
            lbox += np.mean(1 - np.array(ious))
            lcls += bce_np(np.stack([x for x, _ in cls_terms]), np.stack([y for _, y in cls_terms]),
                           h["cls_pw"])
        lobj += bce_np(p[..., 4], tobj, h["obj_pw"]) * h["balance"][i]
    items = np.array([lbox * box_g, lobj * obj_g, lcls * cls_g])
    return items.sum() * preds[0].shape[0], items


# ---------------------------------------------------------------- CIoU

def test_ciou_of_identical_boxes_is_one():
    b = paddle.to_tensor([[3.0, 4.0, 2.0, 5.0], [0.5, 0.5, 0.3, 0.1]])
    np.testing.assert_allclose(bbox_ciou(b, b).numpy(), [1.0, 1.0], atol=1e-5)


def test_ciou_known_values_and_numpy_formula():
    # same centre, 2x2 around 1x1: IoU 1/4, no distance or aspect term
    # side by side 2x2 boxes 3 apart: IoU 0, rho^2 9, enclosing 5x2 -> -9/29
    b1 = np.array([[0, 0, 2, 2], [0, 0, 2, 2]], np.float32)
    b2 = np.array([[0, 0, 1, 1], [3, 0, 2, 2]], np.float32)
    got = bbox_ciou(paddle.to_tensor(b1), paddle.to_tensor(b2)).numpy()
    np.testing.assert_allclose(got, [0.25, -9 / 29], atol=1e-6)
    # random overlapping, nested and distant pairs with differing aspect ratios
    rng = np.random.default_rng(1)
    b1 = np.c_[rng.uniform(0, 10, (64, 2)), rng.uniform(0.2, 6, (64, 2))].astype(np.float32)
    b2 = np.c_[b1[:, :2] + rng.normal(0, 2, (64, 2)), rng.uniform(0.2, 6, (64, 2))].astype(np.float32)
    want, _ = ciou_np(b1, b2)
    got = bbox_ciou(paddle.to_tensor(b1), paddle.to_tensor(b2)).numpy()
    np.testing.assert_allclose(got, want, atol=2e-6)
    assert want.min() < 0 < want.max()          # the set covers both signs


def test_ciou_gradient_treats_alpha_as_constant():
    # ultralytics computes alpha under no_grad: the gradient is that of IoU - rho^2/c^2 - alpha0*v
    rng = np.random.default_rng(2)
    b1 = np.c_[rng.uniform(0, 4, (5, 2)), rng.uniform(0.5, 3, (5, 2))]
    b2 = np.c_[b1[:, :2] + rng.normal(0, 0.7, (5, 2)), rng.uniform(0.5, 3, (5, 2))]
    x = paddle.to_tensor(b1, dtype="float64", stop_gradient=False)
    bbox_ciou(x, paddle.to_tensor(b2, dtype="float64")).sum().backward()
    alpha0 = ciou_np(b1, b2)[1]
    assert alpha0.max() > 0.05          # the aspect term is in play

    def frozen(bb):
        return ciou_np(bb, b2, alpha=alpha0)[0].sum()

    num = np.zeros_like(b1)
    for idx in np.ndindex(*b1.shape):
        d = np.zeros_like(b1)
        d[idx] = 1e-6
        num[idx] = (frozen(b1 + d) - frozen(b1 - d)) / 2e-6
    np.testing.assert_allclose(x.grad.numpy(), num, atol=1e-6)


# ---------------------------------------------------------------- matching

def test_build_targets_cells_with_two_neighbours():
    cl = ComputeLoss(ANCHORS, STRIDES, NC, hyp(), IMG)
    # on the 8x8 stride-8 grid: centre (2.4, 4.8), size 2x2 cells (16 px): every P3 anchor
    # (1.25x1.625, 2x3.75, 4.125x2.875 cells) is within 4x. x frac 0.4 < 0.5 -> left
    # neighbour; y frac 0.8 -> the cell below. A second target at x=0.3 cells has no left cell.
    t = np.array([[1, 2, 2.4 / 8, 4.8 / 8, 0.25, 0.25],
                  [0, 1, 0.3 / 8, 2.2 / 8, 0.25, 0.25]], np.float32)
    m = build_targets(t, cl.anchors_grid, SHAPES, 4.0)[0]
    got = {(int(b), int(a), int(j), int(i)) for b, a, j, i in zip(m.b, m.a, m.gj, m.gi)}
    want = ({(1, a, 4, 2) for a in range(3)} | {(1, a, 4, 1) for a in range(3)}
            | {(1, a, 5, 2) for a in range(3)}
            | {(0, a, 2, 0) for a in range(3)} | {(0, a, 1, 0) for a in range(3)})
    assert got == want and len(m.b) == len(want)
    # offsets inside the matched cells, wh in grid units, the class carried along
    rows = {(int(b), int(a), int(j), int(i)): (tb, c) for b, a, j, i, tb, c
            in zip(m.b, m.a, m.gj, m.gi, m.tbox, m.tcls)}
    np.testing.assert_allclose(rows[(1, 0, 4, 2)][0], [0.4, 0.8, 2, 2], atol=1e-5)
    np.testing.assert_allclose(rows[(1, 1, 4, 1)][0], [1.4, 0.8, 2, 2], atol=1e-5)
    np.testing.assert_allclose(rows[(1, 2, 5, 2)][0], [0.4, -0.2, 2, 2], atol=1e-5)
    np.testing.assert_allclose(rows[(0, 0, 1, 0)][0], [0.3, 1.2, 2, 2], atol=1e-5)
    assert rows[(1, 2, 5, 2)][1] == 2 and rows[(0, 0, 1, 0)][1] == 1
    np.testing.assert_allclose(m.anchors[m.a == 1], np.tile([[2.0, 3.75]], ((m.a == 1).sum(), 1)))


def test_build_targets_rejects_anchors_beyond_anchor_t():
    grid = np.array([[[1.0, 1.0], [2.0, 2.0], [8.0, 8.0]]], np.float32)     # one level, 8x8
    # 3.9 cells wide: ratios 3.9, 1.95, 2.05 -> all kept
    # 4.0 cells (exact in float32): exactly 4 to anchor 0 -> rejected (strict <), others kept
    # 0.3 cells: 3.33 to anchor 0, 6.7 to anchor 1, 26.7 to anchor 2 -> only anchor 0
    # centre 4.24 cells: fractions 0.24 -> the left and upper cells join
    t = np.array([[0, 0, 0.53, 0.53, 3.9 / 8, 3.9 / 8], [0, 0, 0.53, 0.53, 0.5, 0.5],
                  [0, 0, 0.53, 0.53, 0.3 / 8, 0.3 / 8]], np.float32)
    for k, anchors_kept in enumerate([{0, 1, 2}, {1, 2}, {0}]):
        m = build_targets(t[k:k + 1], grid, [(8, 8)], anchor_t=4.0)[0]
        assert set(m.a.tolist()) == anchors_kept, k
        cells = {(int(j), int(i)) for j, i in zip(m.gj, m.gi)}
        assert cells == {(4, 4), (4, 3), (3, 4)} and len(m.a) == 3 * len(anchors_kept)
    m = build_targets(t[:1], grid, [(8, 8)], anchor_t=3.0)[0]
    assert set(m.a.tolist()) == {1, 2}
    empty = build_targets(np.zeros((0, 6), np.float32), grid, [(8, 8)])[0]
    assert empty.b.shape == (0,) and empty.tbox.shape == (0, 4)


# ---------------------------------------------------------------- the loss

def test_gains_scale_like_ultralytics_train():
    assert scaled_gains(hyp(), 80, 3, 640) == pytest.approx((0.05, 1.0, 0.5))
    assert scaled_gains(hyp(), 3, 3, 320) == pytest.approx((0.05, 0.25, 0.5 * 3 / 80))
    assert scaled_gains(hyp(), 80, 4, 640) == pytest.approx((0.0375, 0.75, 0.375))


def test_empty_targets_give_only_objectness_loss():
    preds = random_preds(3)
    cl = ComputeLoss(ANCHORS, STRIDES, NC, hyp(), IMG)
    loss, items = cl(preds, paddle.zeros([0, 6]))
    assert items[0] == 0.0 and items[2] == 0.0 and items[1] > 0
    # objectness alone: BCE of every obj logit against 0, balanced and gained
    want = sum(bce_np(p.numpy()[..., 4], 0.0) * w for p, w in zip(preds, [4.0, 1.0, 0.4]))
    want *= (IMG / 640) ** 2
    np.testing.assert_allclose(items[1], want, rtol=1e-5)
    np.testing.assert_allclose(float(loss), want * B, rtol=1e-5)
    loss.backward()
    for p in preds:
        g = p.grad.numpy()
        assert np.abs(g[..., 4]).min() > 0
        assert not np.any(g[..., :4]) and not np.any(g[..., 5:])
    # a numpy array of targets works too
    _, items2 = cl(random_preds(3), np.zeros((0, 6), np.float32))
    np.testing.assert_allclose(items2, items, rtol=1e-6)


def _logit(p):
    return np.log(p / (1 - p))


def test_prediction_equal_to_target_has_zero_box_loss():
    cl = ComputeLoss(ANCHORS, STRIDES, NC, hyp(), IMG)
    t = np.array([[0, 1, 0.32, 0.55, 0.3, 0.4], [1, 2, 0.7, 0.2, 0.6, 0.5]], np.float32)
    matches = build_targets(t, cl.anchors_grid, SHAPES, 4.0)
    preds = random_preds(4)
    arrs = [p.numpy() for p in preds]
    for arr, m in zip(arrs, matches):
        # decode inverted: sigmoid*2-0.5 = xy offset, (sigmoid*2)^2*anchor = wh
        arr[m.b, m.a, m.gj, m.gi, 0:2] = _logit((m.tbox[:, :2] + 0.5) / 2)
        arr[m.b, m.a, m.gj, m.gi, 2:4] = _logit(np.sqrt(m.tbox[:, 2:] / m.anchors) / 2)
    assert sum(len(m.b) for m in matches) > 10
    loss, items = cl([paddle.to_tensor(a) for a in arrs], paddle.to_tensor(t))
    assert items[0] < 1e-5 and items[1] > 0 and items[2] > 0
    _, items_random = cl(preds, paddle.to_tensor(t))
    assert items_random[0] > 100 * max(items[0], 1e-7)


@pytest.mark.parametrize("extra", [{}, {"label_smoothing": 0.1, "cls_pw": 1.5, "obj_pw": 0.7}])
def test_loss_matches_loop_reference(extra):
    h = hyp(**extra)
    rng = np.random.default_rng(5)
    n = 9
    wh = rng.uniform(0.04, 0.9, (n, 2))
    xy = rng.uniform(wh / 2, 1 - wh / 2)
    t = np.c_[rng.integers(0, B, n), rng.integers(0, NC, n), xy, wh].astype(np.float32)
    t[-1] = t[-2]
    t[-1, 2] += 0.3 / 8    # shares cells with its neighbour: the write order into tobj matters
    preds = random_preds(6, scale=0.7)
    loss, items = ComputeLoss(ANCHORS, STRIDES, NC, h, IMG)(preds, paddle.to_tensor(t))
    want_loss, want_items = reference_loss(preds, t, h)
    assert want_items.min() > 0
    np.testing.assert_allclose(items, want_items, rtol=2e-5)
    np.testing.assert_allclose(float(loss), want_loss, rtol=2e-5)


def test_single_class_has_no_class_loss():
    preds = [paddle.to_tensor(p.numpy()[..., :6]) for p in random_preds(7)]
    t = paddle.to_tensor([[0, 0, 0.5, 0.5, 0.3, 0.3]])
    _, items = ComputeLoss(ANCHORS, STRIDES, 1, hyp(), IMG)(preds, t)
    assert items[0] > 0 and items[1] > 0 and items[2] == 0


def test_bad_inputs_name_what_was_expected():
    cl = ComputeLoss(ANCHORS, STRIDES, NC, hyp(), IMG)
    preds = random_preds(8)
    with pytest.raises(LossInputError, match=r"\[M, 6\]"):
        cl(preds, paddle.zeros([2, 5]))
    with pytest.raises(LossInputError, match="classes must be integers in \\[0, 2\\]"):
        cl(preds, paddle.to_tensor([[0, 3, 0.5, 0.5, 0.1, 0.1]]))
    with pytest.raises(LossInputError, match="image indices"):
        cl(preds, paddle.to_tensor([[2, 0, 0.5, 0.5, 0.1, 0.1]]))
    with pytest.raises(LossInputError, match="3 prediction maps"):
        cl(preds[:2], paddle.zeros([0, 6]))
    with pytest.raises(LossInputError, match="nc=3"):
        cl([p[..., :7] for p in preds], paddle.zeros([0, 6]))
    with pytest.raises(LossInputError, match="balance"):
        ComputeLoss(ANCHORS, STRIDES, NC, hyp(balance=[4.0, 1.0]), IMG)


def test_gradient_reaches_every_parameter():
    paddle.seed(0)
    model = build_model(ModelMeta(nc=NC, names=["a", "b", "c"]))
    model.train()
    det = model.detect
    cl = ComputeLoss(det.anchors, det.stride, NC, hyp(), IMG)
    x = paddle.to_tensor(np.random.default_rng(9).random((B, 3, IMG, IMG), dtype=np.float32))
    # small, medium and large boxes so that all three levels get matches
    t = paddle.to_tensor(np.array([[0, 0, 0.3, 0.3, 0.15, 0.2], [0, 1, 0.6, 0.5, 0.5, 0.6],
                                   [1, 2, 0.5, 0.5, 0.95, 0.9], [1, 1, 0.7, 0.3, 0.3, 0.25]],
                                  np.float32))
    loss, items = cl(model(x), t)
    assert np.all(items > 0)
    loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if not p.stop_gradient]
    assert len(trainable) > 100
    dead = [n for n, p in trainable if p.grad is None or not np.any(p.grad.numpy())]
    assert not dead, f"parameters without gradient: {dead}"
    for k, m in enumerate(det.m):
        # every level's outputs: box, obj and class rows of the bias all move
        g = np.abs(m.bias.grad.numpy().reshape(3, 5 + NC)).sum(0)
        assert np.all(g > 0), (k, g)

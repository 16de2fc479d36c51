"""The YOLOv5 loss (ultralytics v6/v7 ComputeLoss), in Paddle.

Box: 1 - CIoU over matched cells. Objectness: BCE on every cell, the target being the
detached IoU of the matched prediction (gr = 1), weighted per level by ``balance``.
Class: BCE with label smoothing on matched cells (only when nc > 1). Matching: a target
goes to every anchor whose width and height ratios are within ``anchor_t``, at its own
cell and the two nearest neighbouring cells (offset 0.5), so up to 3 x 3 matches a level.

Target matching carries no gradient, so it runs in NumPy on the (small) target array;
the predictions are touched only through one gather per level.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np
import paddle
import paddle.nn.functional as F

from .box_ops import bbox_ciou

# the five candidate cells, as steps subtracted from the centre: own, left, up, right, down
_OFFSETS = np.array([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], dtype=np.float32)


class LossInputError(ValueError):
    """Predictions or targets of the wrong shape or content."""


@dataclass
class LevelTargets:
    """Matches on one level; all arrays have one row per match."""
    b: np.ndarray        # image index in the batch (int64)
    a: np.ndarray        # anchor index (int64)
    gj: np.ndarray       # cell row (int64)
    gi: np.ndarray       # cell column (int64)
    tbox: np.ndarray     # [n, 4] float32: xy offset within the cell (-0.5..1.5), wh in grid units
    anchors: np.ndarray  # [n, 2] float32: the matched anchor, grid units
    tcls: np.ndarray     # class index (int64)


def scaled_gains(hyp: Dict, nc: int, nl: int, img_size: int) -> Tuple[float, float, float]:
    """(box, obj, cls) gains scaled as ultralytics train.py does for nc, layers and image size."""
    box = float(hyp["box"]) * 3 / nl
    cls = float(hyp["cls"]) * nc / 80 * 3 / nl
    obj = float(hyp["obj"]) * (img_size / 640) ** 2 * 3 / nl
    return box, obj, cls


def build_targets(targets: np.ndarray, anchors_grid: np.ndarray, shapes: Sequence[Tuple[int, int]],
                  anchor_t: float = 4.0, g: float = 0.5) -> List[LevelTargets]:
    """Match targets ``[M, 6]`` (image, class, cx, cy, w, h; normalised) to anchors and cells.

    ``anchors_grid``: ``[nl, na, 2]`` anchors in grid units of each level; ``shapes``:
    (ny, nx) per level. The order of matches follows ultralytics (offset-major, then
    anchor-major, then target), which decides who writes last into a shared objectness cell.
    """
    nl, na = anchors_grid.shape[:2]
    t0 = np.asarray(targets, dtype=np.float32).reshape(-1, 6)
    off = _OFFSETS * g
    out = []
    for i in range(nl):
        ny, nx = shapes[i]
        gain = np.array([nx, ny], dtype=np.float32)
        gxy_all, gwh_all = t0[:, 2:4] * gain, t0[:, 4:6] * gain
        # anchor filter: both side ratios within anchor_t ([na, M], anchor-major like ultralytics)
        r = gwh_all[None] / anchors_grid[i][:, None]
        with np.errstate(divide="ignore"):
            keep = np.maximum(r, 1 / r).max(2) < anchor_t
        a, ti = np.nonzero(keep)
        gxy, gwh = gxy_all[ti], gwh_all[ti]
        # neighbouring cells: the nearer one in x and in y, when it exists inside the grid
        gxi = gain - gxy
        jk = (gxy % 1 < g) & (gxy > 1)
        lm = (gxi % 1 < g) & (gxi > 1)
        sel = np.stack([np.ones(len(ti), bool), jk[:, 0], jk[:, 1], lm[:, 0], lm[:, 1]])
        o, k = np.nonzero(sel)                      # offset-major, like t.repeat((5,1,1))[j]
        a, ti, gxy, gwh = a[k], ti[k], gxy[k], gwh[k]
        gij = np.floor(gxy - off[o]).astype(np.int64)
        gij[:, 0] = gij[:, 0].clip(0, nx - 1)
        gij[:, 1] = gij[:, 1].clip(0, ny - 1)
        out.append(LevelTargets(
            b=t0[ti, 0].astype(np.int64), a=a.astype(np.int64), gj=gij[:, 1], gi=gij[:, 0],
            tbox=np.concatenate([gxy - gij.astype(np.float32), gwh], 1).astype(np.float32),
            anchors=anchors_grid[i][a].astype(np.float32).reshape(-1, 2),
            tcls=t0[ti, 1].astype(np.int64)))
    return out


class ComputeLoss:
    """``loss, items = ComputeLoss(anchors, strides, nc, cfg.loss, img_size)(preds, targets)``.

    ``anchors``: ``[nl, na, 2]`` in input pixels (``model.detect.anchors``); ``strides``:
    per level (``model.detect.stride``). ``preds``: the train-mode outputs, one
    ``[B, na, ny, nx, 5+nc]`` raw map per level. ``targets``: ``[M, 6]`` float32
    (image index, class, cx, cy, w, h normalised), as ``collate`` gives; a tensor or array.
    Returns the total loss times the batch size (as ultralytics) and
    ``np.array([box, obj, cls])``, the gained per-image components.
    """

    def __init__(self, anchors, strides: Sequence[float], nc: int, hyp: Dict, img_size: int):
        anchors = anchors.numpy() if isinstance(anchors, paddle.Tensor) else np.asarray(anchors)
        self.nl = len(strides)
        anchors = np.asarray(anchors, dtype=np.float32).reshape(self.nl, -1, 2)
        self.na = anchors.shape[1]
        self.strides = np.asarray(strides, dtype=np.float32)
        self.anchors_grid = anchors / self.strides[:, None, None]   # grid units of each level
        self.nc, self.no = int(nc), int(nc) + 5
        self.anchor_t = float(hyp.get("anchor_t", 4.0))
        self.balance = [float(b) for b in hyp.get("balance", [4.0, 1.0, 0.4])]
        if len(self.balance) != self.nl:
            raise LossInputError(f"loss.balance has {len(self.balance)} entries, "
                                 f"the model has {self.nl} detection levels")
        eps = float(hyp.get("label_smoothing", 0.0))
        self.cp, self.cn = 1.0 - 0.5 * eps, 0.5 * eps
        self.gain_box, self.gain_obj, self.gain_cls = scaled_gains(hyp, self.nc, self.nl, img_size)
        self.cls_pw, self.obj_pw = float(hyp.get("cls_pw", 1.0)), float(hyp.get("obj_pw", 1.0))

    @staticmethod
    def _bce(logits, labels, pw: float):
        """Mean BCE with logits; ``pw`` weighs the positive term (torch's pos_weight)."""
        if pw == 1.0:
            return F.binary_cross_entropy_with_logits(logits, labels, reduction="mean")
        # Paddle 2.6's pos_weight is wrong for negative logits (it scales the stable form's
        # log term only), so the weighted form is written out: (1-y)x + (1+(pw-1)y)softplus(-x)
        return ((1 - labels) * logits + (1 + (pw - 1) * labels) * F.softplus(-logits)).mean()

    def _check(self, preds, targets: np.ndarray) -> int:
        if len(preds) != self.nl:
            raise LossInputError(f"expected {self.nl} prediction maps (one per level), "
                                 f"got {len(preds)}")
        bs = preds[0].shape[0]
        for i, p in enumerate(preds):
            if len(p.shape) != 5 or p.shape[1] != self.na or p.shape[4] != self.no or p.shape[0] != bs:
                raise LossInputError(f"prediction level {i} has shape {list(p.shape)}, expected "
                                     f"[{bs}, {self.na}, ny, nx, {self.no}] "
                                     f"(train-mode output, nc={self.nc})")
        if targets.ndim != 2 or targets.shape[1] != 6:
            raise LossInputError(f"targets have shape {list(targets.shape)}, expected [M, 6] = "
                                 f"(image index, class, cx, cy, w, h)")
        if len(targets):
            if not np.all(np.isfinite(targets)):
                raise LossInputError("targets hold NaN or inf values")
            b, c = targets[:, 0], targets[:, 1]
            if b.min() < 0 or b.max() >= bs or np.any(b % 1):
                raise LossInputError(f"target image indices must be integers in [0, {bs - 1}], "
                                     f"got range [{b.min()}, {b.max()}]")
            if c.min() < 0 or c.max() >= self.nc or np.any(c % 1):
                raise LossInputError(f"target classes must be integers in [0, {self.nc - 1}], "
                                     f"got range [{c.min()}, {c.max()}]")
        return bs

    def __call__(self, preds: List[paddle.Tensor], targets) -> Tuple[paddle.Tensor, np.ndarray]:
        t = targets.numpy() if isinstance(targets, paddle.Tensor) else np.asarray(targets)
        t = np.array(t, dtype=np.float32)          # a copy: sizes are clamped below
        if t.size == 0:
            t = t.reshape(0, 6)
        bs = self._check(preds, t)
        # zero sizes would make atan(w/h) NaN; such boxes match no anchor anyway
        t[:, 4:6] = np.maximum(t[:, 4:6], 1e-9)
        matches = build_targets(t, self.anchors_grid, [p.shape[2:4] for p in preds], self.anchor_t)

        # the loss runs in float32 even when the network ran in float16 (AMP)
        preds = [p if p.dtype == paddle.float32 else p.astype("float32") for p in preds]
        dtype = paddle.float32
        lbox = paddle.zeros([], dtype)
        lcls = paddle.zeros([], dtype)
        lobj = paddle.zeros([], dtype)
        for i, (p, m) in enumerate(zip(preds, matches)):
            _, na, ny, nx, no = p.shape
            flat = p.reshape([-1, no])
            tobj = paddle.zeros([flat.shape[0]], dtype)
            n = len(m.b)
            if n:
                idx = paddle.to_tensor(((m.b * na + m.a) * ny + m.gj) * nx + m.gi)
                ps = paddle.gather(flat, idx)                       # [n, no]
                pxywh = F.sigmoid(ps[:, :4]) * 2
                pxy = pxywh[:, :2] - 0.5
                pwh = pxywh[:, 2:4] ** 2 * paddle.to_tensor(m.anchors)
                iou = bbox_ciou(paddle.concat([pxy, pwh], 1), paddle.to_tensor(m.tbox))
                lbox = lbox + (1.0 - iou).mean()
                # objectness target: the IoU, detached and >= 0; the last match of a cell wins
                tobj = paddle.scatter(tobj, idx, iou.detach().clip(min=0), overwrite=True)
                if self.nc > 1:
                    tc = np.full((n, self.nc), self.cn, np.float32)
                    tc[np.arange(n), m.tcls] = self.cp
                    lcls = lcls + self._bce(ps[:, 5:], paddle.to_tensor(tc, dtype), self.cls_pw)
            lobj = lobj + self._bce(flat[:, 4], tobj, self.obj_pw) * self.balance[i]

        lbox, lobj, lcls = lbox * self.gain_box, lobj * self.gain_obj, lcls * self.gain_cls
        items = paddle.stack([lbox, lobj, lcls]).detach().numpy()
        return (lbox + lobj + lcls) * bs, items

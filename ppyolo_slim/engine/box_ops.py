"""Box overlap measures on Paddle tensors, as the YOLOv5 loss uses them."""
from __future__ import annotations

import math

import paddle


def bbox_ciou(box1: paddle.Tensor, box2: paddle.Tensor, eps: float = 1e-7) -> paddle.Tensor:
    """Complete IoU (Zheng et al., AAAI 2020) of paired boxes ``[n, 4]`` (cx, cy, w, h) -> ``[n]``.

    CIoU = IoU - rho^2/c^2 - alpha*v, with rho the centre distance, c the diagonal of the
    smallest enclosing box, v the aspect-ratio term and alpha = v / (1 - IoU + v). As in
    ultralytics (utils/metrics.py bbox_iou, xywh branch), alpha is a constant for the
    gradient and ``eps`` guards the union and the enclosing diagonal.
    """
    x1, y1, w1, h1 = box1[:, 0], box1[:, 1], box1[:, 2], box1[:, 3]
    x2, y2, w2, h2 = box2[:, 0], box2[:, 1], box2[:, 2], box2[:, 3]
    b1x1, b1x2, b1y1, b1y2 = x1 - w1 / 2, x1 + w1 / 2, y1 - h1 / 2, y1 + h1 / 2
    b2x1, b2x2, b2y1, b2y2 = x2 - w2 / 2, x2 + w2 / 2, y2 - h2 / 2, y2 + h2 / 2

    iw = (paddle.minimum(b1x2, b2x2) - paddle.maximum(b1x1, b2x1)).clip(min=0)
    ih = (paddle.minimum(b1y2, b2y2) - paddle.maximum(b1y1, b2y1)).clip(min=0)
    inter = iw * ih
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union

    cw = paddle.maximum(b1x2, b2x2) - paddle.minimum(b1x1, b2x1)
    ch = paddle.maximum(b1y2, b2y2) - paddle.minimum(b1y1, b2y1)
    c2 = cw ** 2 + ch ** 2 + eps
    rho2 = ((x2 - x1) ** 2 + (y2 - y1) ** 2)          # centre distance squared
    v = (4 / math.pi ** 2) * (paddle.atan(w2 / h2) - paddle.atan(w1 / h1)) ** 2
    alpha = (v / (v - iou + (1 + eps))).detach()      # a weight, not a path for the gradient
    return iou - (rho2 / c2 + v * alpha)

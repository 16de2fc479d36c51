"""Boxes out of a YOLOv5 head: NMS and the way back from the letterboxed input.

NumPy only, so the ONNX Runtime and Paddle Inference paths need no paddle dygraph.
Semantics follow ultralytics ``non_max_suppression`` (v6/v7): confidence =
objectness x class probability, optional multi-label, per-class NMS by offsetting
each class's boxes by ``cls * max_wh`` so boxes of different classes never overlap.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

MAX_NMS = 30000   # boxes kept (by score) before NMS, as ultralytics


def xywh2xyxy(x: np.ndarray) -> np.ndarray:
    """[n,4] (cx, cy, w, h) -> (x1, y1, x2, y2)."""
    y = np.empty_like(x)
    y[:, 0] = x[:, 0] - x[:, 2] / 2
    y[:, 1] = x[:, 1] - x[:, 3] / 2
    y[:, 2] = x[:, 0] + x[:, 2] / 2
    y[:, 3] = x[:, 1] + x[:, 3] / 2
    return y


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix [len(a), len(b)] of xyxy boxes (continuous areas, no +1)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None, :] - inter + 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_thres: float,
        max_keep: Optional[int] = None) -> np.ndarray:
    """Greedy NMS: indices of kept boxes, highest score first; a box is dropped when its
    IoU with a kept one is > iou_thres. Stops after ``max_keep`` keeps, which gives the
    same first ``max_keep`` as running to the end (greedy keeps are decided in order)."""
    idx = np.argsort(-scores, kind="stable")
    # float64: with the class offsets coordinates reach nc * max_wh, too big for float32 detail
    b = boxes[idx].astype(np.float64)
    x1, y1, x2, y2 = (np.ascontiguousarray(b[:, k]) for k in range(4))
    area = (x2 - x1) * (y2 - y1)
    keep = []
    while idx.size:
        keep.append(idx[0])
        if max_keep is not None and len(keep) >= max_keep:
            break
        w = np.minimum(x2[0], x2[1:]) - np.maximum(x1[0], x1[1:])
        h = np.minimum(y2[0], y2[1:]) - np.maximum(y1[0], y1[1:])
        inter = np.maximum(w, 0.0) * np.maximum(h, 0.0)
        left = inter <= iou_thres * (area[0] + area[1:] - inter)   # IoU <= thres, no division
        idx, x1, y1, x2, y2, area = (a[1:][left] for a in (idx, x1, y1, x2, y2, area))
    return np.asarray(keep, dtype=np.int64)


def non_max_suppression(pred: np.ndarray, conf_thres: float = 0.25, iou_thres: float = 0.45,
                        max_det: int = 300, agnostic: bool = False, multi_label: bool = False,
                        classes: Optional[Sequence[int]] = None,
                        max_wh: float = 7680.0) -> List[np.ndarray]:
    """Per image of ``pred`` [B, N, 5+nc] (cx, cy, w, h, obj, cls...): an array [n, 6] of
    (x1, y1, x2, y2, score, cls), in the same pixels as the input, best first.

    multi_label: one row per (box, class) whose score passes conf_thres (as ultralytics
    val.py uses); otherwise the best class only. classes: keep only these class ids.
    max_wh must exceed the input size: it is the offset that separates the classes."""
    if not 0 <= conf_thres <= 1 or not 0 <= iou_thres <= 1:
        raise ValueError(f"conf_thres and iou_thres must be in [0, 1], got {conf_thres}, {iou_thres}")
    pred = np.asarray(pred)
    if pred.ndim != 3 or pred.shape[2] < 6:
        raise ValueError(f"predictions must be [B, N, 5+nc] with nc >= 1, got shape {list(pred.shape)}")
    nc = pred.shape[2] - 5
    multi_label = multi_label and nc > 1
    out = []
    for x in pred:
        x = x[x[:, 4] > conf_thres].astype(np.float32)
        if not len(x):
            out.append(np.zeros((0, 6), np.float32))
            continue
        scores = x[:, 5:] * x[:, 4:5]
        if multi_label:
            i, j = np.nonzero(scores > conf_thres)
            conf = scores[i, j]
        else:
            j = scores.argmax(1)
            conf = scores[np.arange(len(j)), j]
            i = np.nonzero(conf > conf_thres)[0]
            j, conf = j[i], conf[i]
        if classes is not None:
            m = np.isin(j, np.asarray(classes))
            i, j, conf = i[m], j[m], conf[m]
        if not len(conf):
            out.append(np.zeros((0, 6), np.float32))
            continue
        if len(conf) > MAX_NMS:   # select first: a full sort of ~N*nc candidates is the slow part
            part = np.argpartition(-conf, MAX_NMS - 1)[:MAX_NMS]
            top = part[np.argsort(-conf[part], kind="stable")]
        else:
            top = np.argsort(-conf, kind="stable")
        i, j, conf = i[top], j[top], conf[top]
        d = np.concatenate([xywh2xyxy(x[i, :4]), conf[:, None], j[:, None].astype(np.float32)], 1)
        # per-class NMS in one pass: classes moved max_wh apart never overlap (float64: exact)
        offset = d[:, 5:6].astype(np.float64) * (0.0 if agnostic else max_wh)
        keep = nms(d[:, :4] + offset, d[:, 4], iou_thres, max_keep=max_det)
        out.append(d[keep].astype(np.float32))
    return out


def clip_boxes(boxes: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """Clip xyxy boxes in place to an image of shape (h, w)."""
    h, w = shape[:2]
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    return boxes


def scale_boxes(boxes: np.ndarray, ratio: float, pad: Tuple[float, float],
                orig_shape: Tuple[int, int]) -> np.ndarray:
    """xyxy boxes in the letterboxed input -> original image pixels (a new array):
    remove the left/top padding, divide by the resize ratio, clip to orig_shape (h, w)."""
    b = np.array(boxes, dtype=np.float32, copy=True).reshape(-1, 4)
    padw, padh = pad
    b[:, [0, 2]] -= padw
    b[:, [1, 3]] -= padh
    b /= ratio
    return clip_boxes(b, orig_shape)

"""Image + box transforms as YOLOv5 users know them: letterbox, mosaic, random affine, HSV, flips.

Images are HxWx3 uint8 RGB. Boxes are [n, 4] float xyxy in the pixels of the image they
go with; every transform returns the boxes of its output image. Randomness comes only
from the ``np.random.Generator`` passed in, so a seeded caller gets the same sample back.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

PAD_VALUE = 114


def letterbox(img: np.ndarray, new_size: Union[int, Sequence[int]], color=(PAD_VALUE,) * 3,
              scaleup: bool = True) -> Tuple[np.ndarray, float, Tuple[float, float]]:
    """Resize keeping the aspect ratio, pad to ``new_size`` (int, or (h, w)).

    Returns (img, ratio, (padw, padh)): a point p of the input lands at p * ratio + pad.
    """
    th, tw = (new_size, new_size) if isinstance(new_size, (int, np.integer)) else tuple(new_size)
    h0, w0 = img.shape[:2]
    r = min(th / h0, tw / w0)
    if not scaleup:     # only shrink (better val mAP on small images, as ultralytics)
        r = min(r, 1.0)
    nw, nh = max(1, int(round(w0 * r))), max(1, int(round(h0 * r)))   # extreme aspect: never 0 px
    if (nw, nh) != (w0, h0):
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR)
    left, top = (tw - nw) // 2, (th - nh) // 2
    img = cv2.copyMakeBorder(img, top, th - nh - top, left, tw - nw - left, cv2.BORDER_CONSTANT,
                             value=tuple(int(c) for c in color))
    return img, r, (float(left), float(top))


def resize_long_side(img: np.ndarray, size: int) -> Tuple[np.ndarray, float]:
    """Scale so the longer side is ``size`` (the first step of mosaic and of training
    letterbox). Bilinear: several times faster than INTER_AREA, and training adds noise anyway."""
    h0, w0 = img.shape[:2]
    r = size / max(h0, w0)
    if r != 1:
        img = cv2.resize(img, (max(1, int(round(w0 * r))), max(1, int(round(h0 * r)))),
                         interpolation=cv2.INTER_LINEAR)
    return img, r


def box_candidates(before: np.ndarray, after: np.ndarray, wh_thr: float = 2.0,
                   ar_thr: float = 100.0, area_thr: float = 0.1, eps: float = 1e-16) -> np.ndarray:
    """Which transformed boxes are still worth learning: at least ``wh_thr`` px wide and high,
    ``area_thr`` of their (scaled) area left, aspect ratio below ``ar_thr``."""
    w1, h1 = before[:, 2] - before[:, 0], before[:, 3] - before[:, 1]
    w2, h2 = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
    ar = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + eps) > area_thr) & (ar < ar_thr)


def affine_matrix(rng: np.random.Generator, in_hw: Tuple[int, int], out_hw: Tuple[int, int],
                  degrees: float, translate: float, scale: float, shear: float) -> Tuple[np.ndarray, float]:
    """A 3x3 matrix: centre the input, rotate+scale, shear, then place at a random spot of the
    output around its centre. Returns (M, s) with s the scale factor drawn."""
    h, w = in_hw
    oh, ow = out_hw
    centre = np.eye(3)
    centre[0, 2], centre[1, 2] = -w / 2, -h / 2
    a = rng.uniform(-degrees, degrees)
    s = rng.uniform(1 - scale, 1 + scale)
    rot = np.eye(3)
    rot[:2] = cv2.getRotationMatrix2D((0, 0), a, s)
    sh = np.eye(3)
    sh[0, 1] = math.tan(math.radians(rng.uniform(-shear, shear)))
    sh[1, 0] = math.tan(math.radians(rng.uniform(-shear, shear)))
    move = np.eye(3)
    move[0, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * ow
    move[1, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * oh
    return move @ sh @ rot @ centre, s


def transform_boxes(boxes: np.ndarray, M: np.ndarray, out_hw: Tuple[int, int]) -> np.ndarray:
    """The box around each box's 4 transformed corners, clipped to the output."""
    n = len(boxes)
    if n == 0:
        return boxes.reshape(0, 4).astype(np.float64)
    x1, y1, x2, y2 = boxes.T
    corners = np.stack([np.stack([x1, y1], 1), np.stack([x2, y1], 1),
                        np.stack([x2, y2], 1), np.stack([x1, y2], 1)], 1)   # [n, 4, 2]
    pts = corners.reshape(-1, 2) @ M[:2, :2].T + M[:2, 2]
    pts = pts.reshape(n, 4, 2)
    out = np.concatenate([pts.min(1), pts.max(1)], 1)
    oh, ow = out_hw
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, ow)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, oh)
    return out


def random_affine(img: np.ndarray, boxes: np.ndarray, classes: np.ndarray, rng: np.random.Generator,
                  degrees: float = 0.0, translate: float = 0.1, scale: float = 0.5, shear: float = 0.0,
                  out_size: Optional[Tuple[int, int]] = None):
    """Rotate/scale/shear/translate ``img`` into an ``out_size`` (h, w) canvas (default: its
    own size). Boxes follow; boxes cut to slivers are dropped (``box_candidates``)."""
    h, w = img.shape[:2]
    oh, ow = out_size or (h, w)
    M, s = affine_matrix(rng, (h, w), (oh, ow), degrees, translate, scale, shear)
    if (oh, ow) != (h, w) or not np.allclose(M, np.eye(3)):
        img = cv2.warpAffine(img, M[:2], dsize=(ow, oh), borderValue=(PAD_VALUE,) * 3)
    new = transform_boxes(np.asarray(boxes, np.float64), M, (oh, ow))
    keep = box_candidates(np.asarray(boxes, np.float64) * s, new)
    return img, new[keep], np.asarray(classes)[keep]


def augment_hsv(img: np.ndarray, rng: np.random.Generator, hgain: float = 0.5, sgain: float = 0.5,
                vgain: float = 0.5) -> np.ndarray:
    """Random hue / saturation / value gains (each 1 +- gain), through lookup tables."""
    if not (hgain or sgain or vgain):
        return img
    r = rng.uniform(-1, 1, 3) * [hgain, sgain, vgain] + 1
    hue, sat, val = cv2.split(cv2.cvtColor(img, cv2.COLOR_RGB2HSV))
    x = np.arange(256, dtype=np.float64)
    lut_h = ((x * r[0]) % 180).astype(np.uint8)        # OpenCV hue is 0..179
    lut_s = np.clip(x * r[1], 0, 255).astype(np.uint8)
    lut_v = np.clip(x * r[2], 0, 255).astype(np.uint8)
    hsv = cv2.merge((cv2.LUT(hue, lut_h), cv2.LUT(sat, lut_s), cv2.LUT(val, lut_v)))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def flip_lr(img: np.ndarray, boxes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    w = img.shape[1]
    b = np.asarray(boxes, np.float64).copy()
    b[:, [0, 2]] = w - b[:, [2, 0]]
    return np.ascontiguousarray(img[:, ::-1]), b


def flip_ud(img: np.ndarray, boxes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    h = img.shape[0]
    b = np.asarray(boxes, np.float64).copy()
    b[:, [1, 3]] = h - b[:, [3, 1]]
    return np.ascontiguousarray(img[::-1]), b


def mosaic(tiles: List[Tuple[np.ndarray, np.ndarray, np.ndarray]], size: int,
           rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Four (img, boxes, classes) with the longer side already ``size`` -> one 2S x 2S canvas.

    The four images meet at a random centre in the middle half of the canvas (top-left,
    top-right, bottom-left, bottom-right), each cut at the canvas edge. The caller then
    crops the canvas back to S with ``random_affine(out_size=(S, S))``.
    """
    s = size
    xc, yc = (int(rng.uniform(s / 2, 3 * s / 2)) for _ in range(2))
    canvas = np.full((2 * s, 2 * s, 3), PAD_VALUE, np.uint8)
    all_boxes, all_cls = [], []
    for k, (img, boxes, classes) in enumerate(tiles):
        h, w = img.shape[:2]
        if k == 0:      # top-left: its bottom-right corner at the centre
            xa1, ya1, xa2, ya2 = max(xc - w, 0), max(yc - h, 0), xc, yc
            xb1, yb1 = w - (xa2 - xa1), h - (ya2 - ya1)
        elif k == 1:    # top-right
            xa1, ya1, xa2, ya2 = xc, max(yc - h, 0), min(xc + w, 2 * s), yc
            xb1, yb1 = 0, h - (ya2 - ya1)
        elif k == 2:    # bottom-left
            xa1, ya1, xa2, ya2 = max(xc - w, 0), yc, xc, min(yc + h, 2 * s)
            xb1, yb1 = w - (xa2 - xa1), 0
        else:           # bottom-right
            xa1, ya1, xa2, ya2 = xc, yc, min(xc + w, 2 * s), min(yc + h, 2 * s)
            xb1, yb1 = 0, 0
        canvas[ya1:ya2, xa1:xa2] = img[yb1:yb1 + (ya2 - ya1), xb1:xb1 + (xa2 - xa1)]
        b = np.asarray(boxes, np.float64).reshape(-1, 4) + [xa1 - xb1, ya1 - yb1] * 2
        # keep only what is inside this tile's window (the rest of the image was cut off)
        b[:, [0, 2]] = b[:, [0, 2]].clip(xa1, xa2)
        b[:, [1, 3]] = b[:, [1, 3]].clip(ya1, ya2)
        all_boxes.append(b)
        all_cls.append(np.asarray(classes).reshape(-1))
    boxes = np.concatenate(all_boxes, 0)
    classes = np.concatenate(all_cls, 0)
    ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return canvas, boxes[ok], classes[ok]

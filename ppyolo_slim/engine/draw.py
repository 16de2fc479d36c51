"""Boxes, class names and scores drawn on an image (OpenCV).

Each class has its colour from a fixed palette (ultralytics' 20), and every box and label is
outlined in a dark or light edge, whichever contrasts with that colour: one of the two stands
out on any background (a blue box on a blue pattern shows its white edge). Labels are placed
best score first, each in the first free spot (above the box, inside it, below it, then
stacked further up or down), so none hides another.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

Rect = Tuple[int, int, int, int]   # x1, y1, x2, y2 (inclusive pixel corners)

# ultralytics' plotting palette (utils/plots.py Colors), RGB
PALETTE = tuple(tuple(int(h[i:i + 2], 16) for i in (0, 2, 4)) for h in (
    "FF3838", "FF9D97", "FF701F", "FFB21D", "CFD231", "48F90A", "92CC17", "3DDB86", "1A9334", "00D4BB",
    "2C99A8", "00C2FF", "344593", "6473FF", "0018EC", "8438FF", "520085", "CB38FF", "FF95C8", "FF37C7"))
DARK, LIGHT = (20, 20, 20), (255, 255, 255)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def class_color(c: int) -> Tuple[int, int, int]:
    """The class's RGB colour: stable, and neighbouring ids far apart in hue."""
    return PALETTE[int(c) % len(PALETTE)]


def luminance(rgb: Sequence[int]) -> float:
    r, g, b = (float(v) for v in rgb[:3])
    return 0.299 * r + 0.587 * g + 0.114 * b


def edge_color(rgb: Sequence[int]) -> Tuple[int, int, int]:
    """Dark next to a light colour, light next to a dark one."""
    return DARK if luminance(rgb) > 140 else LIGHT


def class_name(names: Sequence[str], c: int) -> str:
    return names[c] if 0 <= c < len(names) else f"class{c}"


def _overlaps(a: Rect, b: Rect) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def place_label(box: Rect, size: Tuple[int, int], taken: Sequence[Rect], img_wh: Tuple[int, int]) -> Rect:
    """Where a label of ``size`` (w, h) goes for ``box``: above it, inside its top, below it,
    then stacked upwards and downwards, the first spot inside the image that overlaps no label
    in ``taken`` (the nearest to the box if all do)."""
    (x1, y1, x2, y2), (w, h), (W, H) = box, size, img_wh
    x = min(max(x1, 0), max(W - w, 0))
    tops = [y1 - h, y1 + 1, y2 + 1]
    tops += [t for k in range(1, 1 + max(1, H // max(h, 1))) for t in (y1 - h - k * (h + 1), y2 + 1 + k * (h + 1))]
    spots = []
    for t in tops:
        for dx in (0, x2 - x1 - w, w + 1, -(w + 1)):      # left edge, right edge, shifted beside
            xx = min(max(x + dx, 0), max(W - w, 0))
            spots.append((xx, t, xx + w - 1, t + h - 1))
    inside = [r for r in spots if r[1] >= 0 and r[3] < H]
    for r in inside:
        if not any(_overlaps(r, o) for o in taken):
            return r
    return inside[0] if inside else (x, max(0, min(y1, H - h)), x + w - 1, max(0, min(y1, H - h)) + h - 1)


def _sizes(h: int, w: int, line_width: Optional[int]) -> Tuple[int, float, int]:
    lw = line_width or max(round((h + w) / 2 * 0.003), 1)
    return lw, max(lw / 3, 0.35), max(lw - 1, 1)


def layout_labels(img_hw: Tuple[int, int], dets: np.ndarray, names: Sequence[str],
                  line_width: Optional[int] = None, show_score: bool = True) -> list:
    """(rect, text, colour, text height) of each detection's label, best score first."""
    h, w = img_hw
    _, font_scale, thick = _sizes(h, w, line_width)
    dets = np.asarray(dets, dtype=np.float32).reshape(-1, 6)
    taken: List[Rect] = []
    labels = []
    for i in np.argsort(-dets[:, 4], kind="stable"):
        c = int(dets[i, 5])
        text = f"{class_name(names, c)} {dets[i, 4]:.2f}" if show_score else class_name(names, c)
        (tw, th), base = cv2.getTextSize(text, FONT, font_scale, thick)
        box = tuple(int(round(v)) for v in dets[i, :4])
        r = place_label(box, (tw + 4, th + base + 4), taken, (w, h))
        taken.append(r)
        labels.append((r, text, class_color(c), th))
    return labels


def draw_detections(img: np.ndarray, dets: np.ndarray, names: Sequence[str],
                    line_width: Optional[int] = None, show_score: bool = True) -> np.ndarray:
    """A copy of ``img`` (H,W,3 uint8, RGB) with each row of ``dets`` [n,6] (x1,y1,x2,y2,score,cls,
    in this image's pixels) drawn as a box and a "name score" label in the class's colour."""
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"draw_detections needs an HxWx3 uint8 image, got {img.dtype} {img.shape}")
    out = np.ascontiguousarray(img.copy())
    h, w = out.shape[:2]
    lw, font_scale, thick = _sizes(h, w, line_width)
    dets = np.asarray(dets, dtype=np.float32).reshape(-1, 6)
    # boxes: lowest score first, so the best end up on top; each with its contrasting edge
    for d in dets[np.argsort(dets[:, 4], kind="stable")]:
        x1, y1, x2, y2 = (int(round(v)) for v in d[:4])
        color = class_color(int(d[5]))
        cv2.rectangle(out, (x1, y1), (x2, y2), edge_color(color), lw + 2, cv2.LINE_8)   # axis-aligned: no blur
        cv2.rectangle(out, (x1, y1), (x2, y2), color, lw, cv2.LINE_8)
    # labels over every box; the best drawn last, on top
    for r, text, color, th in reversed(layout_labels((h, w), dets, names, line_width, show_score)):
        cv2.rectangle(out, (r[0], r[1]), (r[2], r[3]), color, -1)
        cv2.rectangle(out, (r[0], r[1]), (r[2], r[3]), edge_color(color), 1)
        cv2.putText(out, text, (r[0] + 2, r[1] + 2 + th), FONT, font_scale, edge_color(color), thick,
                    cv2.LINE_AA)
    return out

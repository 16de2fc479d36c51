"""Boxes, class names and scores drawn on an image (OpenCV)."""
from __future__ import annotations

import colorsys
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np


def class_color(c: int) -> Tuple[int, int, int]:
    """A stable, saturated RGB colour per class id (hues spread by the golden ratio)."""
    h = (int(c) * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def class_name(names: Sequence[str], c: int) -> str:
    return names[c] if 0 <= c < len(names) else f"class{c}"


def draw_detections(img: np.ndarray, dets: np.ndarray, names: Sequence[str],
                    line_width: Optional[int] = None, show_score: bool = True) -> np.ndarray:
    """A copy of ``img`` (H,W,3 uint8, RGB) with each row of ``dets`` [n,6] (x1,y1,x2,y2,score,cls,
    in this image's pixels) drawn as a box and a "name score" label in the class's colour."""
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"draw_detections needs an HxWx3 uint8 image, got {img.dtype} {img.shape}")
    out = np.ascontiguousarray(img.copy())
    h, w = out.shape[:2]
    lw = line_width or max(round((h + w) / 2 * 0.003), 1)
    font_scale = max(lw / 3, 0.35)
    thick = max(lw - 1, 1)
    dets = np.asarray(dets, dtype=np.float32).reshape(-1, 6)
    # lowest score first, so the best boxes end up on top
    for x1, y1, x2, y2, score, c in dets[np.argsort(dets[:, 4], kind="stable")]:
        c = int(c)
        color = class_color(c)
        p1, p2 = (int(round(x1)), int(round(y1))), (int(round(x2)), int(round(y2)))
        cv2.rectangle(out, p1, p2, color, lw, cv2.LINE_AA)
        label = f"{class_name(names, c)} {score:.2f}" if show_score else class_name(names, c)
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thick)
        above = p1[1] - th - base - 2 >= 0      # label above the box if it fits, else inside
        ty = p1[1] - base - 1 if above else p1[1] + th + 1
        bg1 = (p1[0], ty - th - 1)
        bg2 = (p1[0] + tw + 1, ty + base)
        cv2.rectangle(out, bg1, bg2, color, -1, cv2.LINE_AA)
        # dark or light text, whichever reads on this colour
        text = (0, 0, 0) if sum(color) > 382 else (255, 255, 255)
        cv2.putText(out, label, (p1[0], ty), cv2.FONT_HERSHEY_SIMPLEX, font_scale, text, thick, cv2.LINE_AA)
    return out

"""The embedded default data set: coloured shapes on textured backgrounds, made from a seed.

It lets the whole pipeline run on a fresh machine with no download. Five classes
(circle, square, triangle, star, cross) of varied size, colour, rotation and aspect,
1-8 per image, overlapping (each object stays at least ~half visible), cut by the image
border, on gradient / cloudy noise / stripe / checker backgrounds with clutter lines and
sensor noise. Written in the ultralytics layout (images/{train,val}, labels/{train,val},
data.yaml). Every image draws from its own generator seeded by (seed, split, index), so
the same seed gives byte-identical labels (and images, with the same OpenCV build).

The set is built in a temporary folder and renamed into place, with a marker file
written last: a half-written set is never mistaken for a complete one.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from typing import Dict, Optional, Tuple

import cv2
import numpy as np
import yaml

from .records import DataError

NAMES = ["circle", "square", "triangle", "star", "cross"]
GENERATOR_VERSION = 1
MARKER = ".generated.json"
DEFAULTS = {"n_train": 400, "n_val": 100, "img_size": 320, "seed": 0}
_ASPECTS = [(1.0, 1.0), (1.0, 1.0), (1.25, 1.0), (1.0, 1.25), (1.25, 0.75), (0.75, 1.0)]  # (w, h) x S


def default_shapes_dir() -> str:
    """$PPYOLO_SLIM_SHAPES_DIR, else dataset/shapes in a source checkout, else ~/.cache."""
    env = os.environ.get("PPYOLO_SLIM_SHAPES_DIR")
    if env:
        return os.path.abspath(os.path.expanduser(env))
    from ..config import REPO_ROOT
    repo_dataset = os.path.join(REPO_ROOT, "dataset")
    if os.path.isdir(repo_dataset) and os.access(repo_dataset, os.W_OK):
        return os.path.join(repo_dataset, "shapes")
    return os.path.join(os.path.expanduser("~"), ".cache", "ppyolo_slim", "shapes")


def _params(n_train: int, n_val: int, img_size: int, seed: int) -> Dict[str, int]:
    return {"version": GENERATOR_VERSION, "n_train": int(n_train), "n_val": int(n_val),
            "img_size": int(img_size), "seed": int(seed)}


def read_marker(out_dir: str) -> Optional[dict]:
    try:
        with open(os.path.join(out_dir, MARKER), "r", encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def ensure_shapes(out_dir: Optional[str] = None, n_train: Optional[int] = None,
                  n_val: Optional[int] = None, img_size: Optional[int] = None,
                  seed: Optional[int] = None, verbose: bool = True) -> str:
    """The data YAML of the generated set, generating it first if it is missing or stale.
    Unset arguments come from ``DEFAULTS`` (read at call time)."""
    out_dir = os.path.abspath(out_dir or default_shapes_dir())
    n_train = DEFAULTS["n_train"] if n_train is None else n_train
    n_val = DEFAULTS["n_val"] if n_val is None else n_val
    img_size = DEFAULTS["img_size"] if img_size is None else img_size
    seed = DEFAULTS["seed"] if seed is None else seed
    want = _params(n_train, n_val, img_size, seed)
    marker = read_marker(out_dir)
    if marker is not None and marker.get("params") == want:
        return os.path.join(out_dir, "data.yaml")
    return generate_shapes(out_dir, n_train, n_val, img_size, seed, verbose=verbose)


def generate_shapes(out_dir: str, n_train: int = DEFAULTS["n_train"], n_val: int = DEFAULTS["n_val"],
                    img_size: int = DEFAULTS["img_size"], seed: int = DEFAULTS["seed"],
                    verbose: bool = True, force: bool = False) -> str:
    """(Re)generate the set into ``out_dir``; returns its data YAML path.

    An identical complete set already there (made meanwhile by another process) is kept,
    unless ``force``."""
    if n_train < 1 or n_val < 1 or img_size < 32:
        raise ValueError(f"shapes: need n_train >= 1, n_val >= 1, img_size >= 32; got "
                         f"{n_train}, {n_val}, {img_size}")
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir) and read_marker(out_dir) is None and os.listdir(out_dir):
        raise DataError(f"{out_dir} exists but was not made by the shapes generator "
                        f"(no {MARKER}); remove it or choose another folder")
    params = _params(n_train, n_val, img_size, seed)
    t0 = time.time()
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=os.path.basename(out_dir) + ".tmp-", dir=parent)
    try:
        os.chmod(tmp, 0o755)     # mkdtemp makes it private; the data set is not
        counts = {}
        for split_idx, (split, n) in enumerate((("train", n_train), ("val", n_val))):
            os.makedirs(os.path.join(tmp, "images", split))
            os.makedirs(os.path.join(tmp, "labels", split))
            boxes = 0
            for i in range(n):
                rng = np.random.default_rng([seed, split_idx, i])
                img, labels = render_image(rng, img_size)
                name = f"{i:06d}"
                ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                                       [cv2.IMWRITE_JPEG_QUALITY, 90])
                if not ok:
                    raise RuntimeError(f"shapes: OpenCV could not encode image {split}/{name}")
                with open(os.path.join(tmp, "images", split, name + ".jpg"), "wb") as f:
                    f.write(buf.tobytes())
                with open(os.path.join(tmp, "labels", split, name + ".txt"), "w") as f:
                    f.write(format_labels(labels))
                boxes += len(labels)
            counts[split] = {"images": n, "boxes": boxes}
        data_yaml = {"path": out_dir, "train": "images/train", "val": "images/val", "names": list(NAMES)}
        with open(os.path.join(tmp, "data.yaml"), "w") as f:
            f.write(f"# generated by ppyolo_slim.data.shapes (seed {seed}); "
                    f"regenerate: python dataset/make_shapes.py --force\n")
            yaml.safe_dump(data_yaml, f, sort_keys=False)
        seconds = round(time.time() - t0, 2)
        with open(os.path.join(tmp, MARKER), "w") as f:   # written last: the set is complete
            json.dump({"params": params, "counts": counts, "names": NAMES, "seconds": seconds}, f)
        _install(tmp, out_dir, None if force else params)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if verbose:
        c = counts
        print(f"shapes: generated {c['train']['images']} train / {c['val']['images']} val images "
              f"({c['train']['boxes']} / {c['val']['boxes']} boxes, {len(NAMES)} classes) in "
              f"{seconds:.1f} s -> {out_dir}", flush=True)
    return os.path.join(out_dir, "data.yaml")


def _install(tmp: str, out_dir: str, keep_if: Optional[dict]) -> None:
    """Rename the finished set into place; another process may have done it meanwhile."""
    if os.path.exists(out_dir):
        m = read_marker(out_dir)
        if keep_if is not None and m is not None and m.get("params") == keep_if:
            shutil.rmtree(tmp, ignore_errors=True)
            return
        stale = tempfile.mkdtemp(prefix=os.path.basename(out_dir) + ".stale-",
                                 dir=os.path.dirname(out_dir))
        os.rename(out_dir, os.path.join(stale, "old"))
        os.rename(tmp, out_dir)
        shutil.rmtree(stale, ignore_errors=True)
    else:
        os.rename(tmp, out_dir)


def format_labels(labels: np.ndarray) -> str:
    """[n, 5] (cls, x1, y1, x2, y2) normalised -> YOLO text lines."""
    lines = []
    for c, x1, y1, x2, y2 in labels:
        lines.append(f"{int(c)} {(x1 + x2) / 2:.6f} {(y1 + y2) / 2:.6f} {x2 - x1:.6f} {y2 - y1:.6f}")
    return "\n".join(lines) + ("\n" if lines else "")


# ----------------------------------------------------------------------------- drawing

def _unit_shape(cls: int) -> np.ndarray:
    """Outline points of a class, radius ~1 around the origin."""
    if cls == 0:     # circle
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        return np.stack([np.cos(t), np.sin(t)], 1)
    if cls == 1:     # square
        return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64) * 0.75
    if cls == 2:     # triangle
        t = np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        return np.stack([np.cos(t), -np.sin(t)], 1)
    if cls == 3:     # five-pointed star
        t = -np.pi / 2 + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
        return np.stack([r * np.cos(t), r * np.sin(t)], 1)
    a, b = 0.3, 1.0  # cross (plus sign)
    return np.array([[-a, -b], [a, -b], [a, -a], [b, -a], [b, a], [a, a], [a, b], [-a, b],
                     [-a, a], [-b, a], [-b, -a], [-a, -a]], np.float64)


def _shape_points(rng: np.random.Generator, cls: int, radius: float, cx: float, cy: float) -> np.ndarray:
    p = _unit_shape(cls)
    if cls != 1:   # squares stay square; the others may be a little squashed
        p = p * np.array([rng.uniform(0.8, 1.2), rng.uniform(0.8, 1.2)])
    max_turn = 25 if cls in (1, 4) else 180
    a = math.radians(rng.uniform(-max_turn, max_turn))
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return p @ rot.T * radius + np.array([cx, cy])


# Images are built as float32 planes [3, h, w]: per-channel colours then broadcast over
# long rows, which is several times faster in NumPy than [h, w, 3] with a length-3 last axis.

def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    kind = rng.integers(4)
    c1 = rng.uniform(0, 255, 3).astype(np.float32)[:, None, None]
    c2 = rng.uniform(0, 255, 3).astype(np.float32)[:, None, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    yy = np.arange(h, dtype=np.float32)[:, None]
    if kind == 0:      # linear gradient
        a = rng.uniform(0, 2 * np.pi)
        t = xx * math.cos(a) + yy * math.sin(a)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
        img = c1 + (c2 - c1) * t[None]
    elif kind == 1:    # cloudy noise: a coarse random grid, smoothly upsampled
        g = int(rng.integers(3, 10))
        grid = rng.uniform(0, 255, (g, g, 3)).astype(np.float32)
        img = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC).transpose(2, 0, 1)
    else:              # stripes (2) or checker (3), muted and turned
        period = rng.uniform(8, 40)
        a = rng.uniform(0, np.pi)
        u = np.floor((xx * math.cos(a) + yy * math.sin(a)) / period)
        m = u % 2 if kind == 2 else (u + np.floor((yy * math.cos(a) - xx * math.sin(a)) / period)) % 2
        img = c1 + (c2 - c1) * 0.4 * m[None]
    img = np.ascontiguousarray(img, dtype=np.float32)
    for _ in range(int(rng.integers(0, 4))):       # clutter lines: edges that are not objects
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p2 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        col = rng.uniform(0, 255, 3).astype(np.float32)
        thick = int(rng.integers(1, 4))
        x0, y0 = max(min(p1[0], p2[0]) - 3, 0), max(min(p1[1], p2[1]) - 3, 0)
        x1, y1 = min(max(p1[0], p2[0]) + 4, w), min(max(p1[1], p2[1]) + 4, h)
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.line(mask, (p1[0] - x0, p1[1] - y0), (p2[0] - x0, p2[1] - y0), 255, thick, cv2.LINE_AA)
        _blend(img[:, y0:y1, x0:x1], mask, col)
    return img


def _blend(planes: np.ndarray, mask: np.ndarray, colour) -> None:
    """planes [3,h,w] float32 <- colour where mask (uint8 0..255 coverage), in place."""
    a = mask.astype(np.float32) * np.float32(1 / 255)
    colour = np.asarray(colour, np.float32)
    if colour.ndim == 1:
        colour = colour[:, None, None]
    planes += (colour - planes) * a[None]


_NOISE: Dict[int, np.ndarray] = {}


def _noise_bank(n: int) -> np.ndarray:
    """A fixed [3, n, n] unit-normal field; images take crops (cheaper than fresh noise)."""
    if n not in _NOISE:
        _NOISE[n] = np.random.default_rng(12345).standard_normal((3, n, n), dtype=np.float32)
    return _NOISE[n]


def _colour_far_from(rng: np.random.Generator, ref: np.ndarray) -> np.ndarray:
    best, best_d = None, -1.0
    for _ in range(8):
        hsv = np.array([[[rng.uniform(0, 180), rng.uniform(90, 255), rng.uniform(70, 255)]]], np.uint8)
        c = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)
        d = float(np.linalg.norm(c - ref))
        if d > 100:
            return c
        if d > best_d:
            best, best_d = c, d
    return best


def render_image(rng: np.random.Generator, size: int) -> Tuple[np.ndarray, np.ndarray]:
    """One RGB image [h, w, 3] uint8 and its labels [n, 5] (cls, x1, y1, x2, y2) normalised."""
    aw, ah = _ASPECTS[int(rng.integers(len(_ASPECTS)))]
    w, h = int(round(size * aw)), int(round(size * ah))
    img = _background(rng, h, w)
    owner = np.full((h, w), -1, np.int32)   # which object each pixel shows (for occlusion limits)
    full_area: list = []
    hidden = np.zeros(0, np.int64)          # pixels of each object covered by later ones
    labels: list = []
    n = int(rng.integers(1, 9))
    r_lo, r_hi = max(0.04 * size, 5.0), 0.22 * size
    for _ in range(n):
        for _attempt in range(20):
            cls = int(rng.integers(len(NAMES)))
            radius = math.exp(rng.uniform(math.log(r_lo), math.log(r_hi)))
            pts = _shape_points(rng, cls, radius, rng.uniform(0, w), rng.uniform(0, h))
            x1, y1 = pts.min(0)
            x2, y2 = pts.max(0)
            cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
            if cx2 <= cx1 or cy2 <= cy1 or (cx2 - cx1) * (cy2 - cy1) < 0.6 * (x2 - x1) * (y2 - y1):
                continue     # mostly outside the image
            # work in the object's window only
            ox0, oy0 = int(cx1), int(cy1)
            ox1, oy1 = min(int(math.ceil(cx2)) + 1, w), min(int(math.ceil(cy2)) + 1, h)
            poly = [np.round((pts - (ox0, oy0)) * 16).astype(np.int32)]
            mask = np.zeros((oy1 - oy0, ox1 - ox0), np.uint8)
            cv2.fillPoly(mask, poly, 255, cv2.LINE_AA, shift=4)
            solid = mask > 127
            area = int(solid.sum())
            if area < 25:
                continue
            win_owner = owner[oy0:oy1, ox0:ox1]
            covered = np.bincount(win_owner[solid & (win_owner >= 0)], minlength=len(labels))
            full = np.asarray(full_area, np.int64)
            if np.any(full - hidden - covered < 0.5 * full):
                continue     # would hide more than half of an earlier object
            win = img[:, oy0:oy1, ox0:ox1]
            colour = _colour_far_from(rng, win.reshape(3, -1).mean(1))
            fill = colour[:, None, None]
            if rng.uniform() < 0.3:    # shaded fill: a soft brightness ramp across the object
                t = (np.arange(ox0, ox1, dtype=np.float32) - x1) / max(x2 - x1, 1.0)
                fill = np.clip(fill * (0.75 + 0.35 * np.clip(t, 0, 1))[None, None, :], 0, 255)
            _blend(win, mask, fill)
            if rng.uniform() < 0.3:    # a darker outline
                edge = np.zeros_like(mask)
                cv2.polylines(edge, poly, True, 255, 1, cv2.LINE_AA, shift=4)
                _blend(win, edge, colour * 0.45)
            hidden = np.append(hidden + covered, 0)
            win_owner[solid] = len(labels)
            full_area.append(area)
            labels.append((cls, cx1 / w, cy1 / h, cx2 / w, cy2 / h))
            break
    if rng.uniform() < 0.5:
        sigma = rng.uniform(0.3, 1.0)
        img = np.stack([cv2.GaussianBlur(p, (0, 0), sigma) for p in img])
    bank = _noise_bank(max(h, w) + 64)
    oy, ox = int(rng.integers(0, bank.shape[1] - h)), int(rng.integers(0, bank.shape[2] - w))
    img += bank[:, oy:oy + h, ox:ox + w] * np.float32(rng.uniform(1, 8))
    out = np.clip(img, 0, 255).astype(np.uint8).transpose(1, 2, 0)
    return np.ascontiguousarray(out), np.asarray(labels, np.float64).reshape(-1, 5)

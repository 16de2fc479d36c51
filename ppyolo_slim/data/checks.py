"""Check a whole data set once: keep what is usable, report every problem by file and reason.

Nothing here raises on a bad file: an unusable image is skipped, a bad label line is
dropped, a box sticking out a little is clipped, and each of these becomes an ``Issue``.
The result of a scan is cached in a JSON file keyed by the sizes and mtimes of all
files involved, so a second run costs a few ``stat`` calls (and, for COCO, parsing the
instances json, which lists the images the key covers).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from .records import DataReport, Issue, Record

IMG_EXTS = (".bmp", ".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp")   # what cv2.imread reads
CLIP_TOL = 0.02      # a box may stick out this share of the image and be clipped; more is an error
CHECK_VERSION = 1    # bump when the checks change, so old caches are not trusted
_EXIF_ORIENTATION = 0x0112


class BadImage(Exception):
    pass


# ----------------------------------------------------------------------------- images

def inspect_image(path: str) -> Tuple[int, int]:
    """(width, height) as cv2.imread will deliver it (EXIF rotation applied), or BadImage(reason)."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            f.seek(max(0, size - 64))
            tail = f.read()
    except (OSError, ValueError) as e:   # ValueError: a NUL byte in the name
        raise BadImage(f"cannot read the file ({getattr(e, 'strerror', None) or e})") from None
    if size == 0:
        raise BadImage("empty file (0 bytes)")
    # A JPEG must end with its end-of-image marker, unless a camera appended a trailer;
    # then only a full decode can tell. A PNG must end with its IEND chunk.
    no_eoi = head[:2] == b"\xff\xd8" and not tail.rstrip(b"\x00").endswith(b"\xff\xd9")
    if head == b"\x89PNG\r\n\x1a\n" and b"IEND" not in tail:
        raise BadImage("truncated PNG (no IEND chunk)")
    truncated = "truncated JPEG (no end-of-image marker)"
    try:
        with Image.open(path) as im:
            im.verify()            # walks the chunk structure (PNG CRCs, ...) without decoding
        with Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
            if no_eoi:
                im.load()          # raises on a truncated JPEG (PIL's LOAD_TRUNCATED_IMAGES is off)
    except Exception as e:  # PIL raises many types for bad files: all mean "not an image"
        raise BadImage(truncated if no_eoi else
                       f"not a readable image ({type(e).__name__}: {e})") from None
    if w < 2 or h < 2:
        raise BadImage(f"image too small ({w}x{h})")
    if orientation in (5, 6, 7, 8):   # rotated by 90 degrees: cv2 swaps width and height
        w, h = h, w
    return int(w), int(h)


# ----------------------------------------------------------------------------- boxes

def _validate_box(cls: int, x1: float, y1: float, x2: float, y2: float, bw: float, bh: float,
                  nc: Optional[int]) -> Tuple[Optional[Tuple[float, float, float, float]], str, bool]:
    """Check one box against a (bw x bh) image. Returns (box or None, problem, kept)."""
    if nc is not None and not (0 <= cls < nc):
        return None, f"class id {cls} outside 0..{nc - 1} (nc={nc}); dropped", False
    if not (x2 > x1 and y2 > y1):
        return None, f"zero-area box (width {x2 - x1:g}, height {y2 - y1:g}); dropped", False
    ex, ey = 1e-5 * bw, 1e-5 * bh     # rounding of written labels (6 decimals): not a problem
    if -ex <= x1 < 0:
        x1 = 0.0
    if -ey <= y1 < 0:
        y1 = 0.0
    if bw < x2 <= bw + ex:
        x2 = float(bw)
    if bh < y2 <= bh + ey:
        y2 = float(bh)
    tx, ty = CLIP_TOL * bw, CLIP_TOL * bh
    if x1 < -tx or y1 < -ty or x2 > bw + tx or y2 > bh + ty:
        return None, (f"box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) is outside the image "
                      f"(0..{bw:g}, 0..{bh:g}); dropped"), False
    if x1 < 0 or y1 < 0 or x2 > bw or y2 > bh:
        c = (min(max(x1, 0.0), bw), min(max(y1, 0.0), bh), min(max(x2, 0.0), bw), min(max(y2, 0.0), bh))
        if not (c[2] > c[0] and c[3] > c[1]):
            return None, "zero-area box after clipping to the image; dropped", False
        return c, f"box slightly outside the image (0..{bw:g}, 0..{bh:g}); clipped", True
    return (x1, y1, x2, y2), "", True


def _dedupe_key(cls: int, box: Sequence[float]) -> tuple:
    return (cls,) + tuple(round(v, 6) for v in box)


def parse_yolo_labels(text: str, nc: int) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """A YOLO label file's text -> (classes [n], boxes [n,4] normalised xyxy, problems).

    Lines are ``class cx cy w h`` (normalised); a line of ``class x1 y1 x2 y2 ...`` with
    three or more points is a polygon (ultralytics segment labels) and becomes its box.
    """
    classes: List[int] = []
    boxes: List[Tuple[float, ...]] = []
    problems: List[str] = []
    seen: Dict[tuple, int] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        s = raw.strip()
        if not s:
            continue
        f = s.split()
        shown = s if len(s) <= 60 else s[:57] + "..."
        polygon = len(f) >= 7 and len(f) % 2 == 1
        if len(f) != 5 and not polygon:
            problems.append(f"line {n}: expected 5 values (class cx cy w h), got {len(f)}: "
                            f"'{shown}'; dropped")
            continue
        try:
            v = [float(x) for x in f]
        except ValueError:
            bad = next(x for x in f if not _is_float(x))
            problems.append(f"line {n}: '{bad}' is not a number; dropped")
            continue
        if not all(math.isfinite(x) for x in v):
            problems.append(f"line {n}: NaN or infinite value: '{shown}'; dropped")
            continue
        if not v[0].is_integer():
            problems.append(f"line {n}: class id {f[0]} is not an integer; dropped")
            continue
        cls = int(v[0])
        if polygon:
            xs, ys = v[1::2], v[2::2]
            x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
        else:
            cx, cy, w, h = v[1:]
            if w <= 0 or h <= 0:
                problems.append(f"line {n}: zero-area box (w={w:g}, h={h:g}); dropped")
                continue
            x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        box, problem, kept = _validate_box(cls, x1, y1, x2, y2, 1.0, 1.0, nc)
        if problem:
            problems.append(f"line {n}: {problem}")
        if not kept:
            continue
        key = _dedupe_key(cls, box)
        if key in seen:
            problems.append(f"line {n}: duplicate of line {seen[key]}; dropped")
            continue
        seen[key] = n
        classes.append(cls)
        boxes.append(box)
    return (np.asarray(classes, np.int64), np.asarray(boxes, np.float64).reshape(-1, 4), problems)


def _is_float(x: str) -> bool:
    try:
        float(x)
        return True
    except ValueError:
        return False


# ----------------------------------------------------------------------------- cache

def _stat_key(paths: Sequence[Optional[str]]) -> List:
    out = []
    for p in paths:
        if p is None:
            out.append(None)
            continue
        try:
            st = os.stat(p)
            out.append([p, st.st_size, st.st_mtime_ns])
        except (OSError, ValueError):   # ValueError: a NUL byte in a file name from a json
            out.append([p, None])
    return out


def cache_key(*parts) -> str:
    blob = json.dumps([CHECK_VERSION, *parts], sort_keys=True).encode()
    return hashlib.sha1(blob).hexdigest()


def read_cache(path: Optional[str], key: str) -> Optional[dict]:
    if not path or not os.path.isfile(path):
        return None
    try:
        with open(path, "r", encoding="utf-8") as f:
            d = json.load(f)
        return d if isinstance(d, dict) and d.get("key") == key else None
    except (OSError, ValueError):
        return None     # unreadable cache: scan again


def write_cache(path: Optional[str], key: str, payload: dict, report: DataReport) -> None:
    if not path:
        return
    from ..utils.io import atomic_write_bytes
    try:
        atomic_write_bytes(path, json.dumps({"key": key, **payload}).encode())
    except OSError as e:
        report.notes.append(f"scan cache not written to {path} ({e.strerror or e}); "
                            f"the next run scans again")


def _records_to_json(records: List[Record]) -> list:
    return [[r.path, r.image_id, r.width, r.height,
             [[int(c)] + [float(v) for v in b] for c, b in zip(r.classes, r.boxes)]] for r in records]


def _records_from_json(rows: list) -> List[Record]:
    out = []
    for path, iid, w, h, lab in rows:
        a = np.asarray(lab, np.float64).reshape(-1, 5)
        out.append(Record(path, int(iid), int(w), int(h), a[:, 1:5], a[:, 0].astype(np.int64)))
    return out


def _finish(split: str, found: int, records: List[Record], issues: List[Issue],
            notes: List[str], source: str) -> DataReport:
    boxes = sum(len(r.boxes) for r in records)
    background = sum(1 for r in records if len(r.boxes) == 0)
    rep = DataReport(source=source, issues=issues, notes=notes)
    rep.splits[split] = {"found": found, "used": len(records), "boxes": boxes, "background": background}
    return rep


def _report_from_cache(d: dict, split: str, source: str) -> DataReport:
    rep = DataReport(source=source, issues=[Issue(*i) for i in d["issues"]], notes=list(d["notes"]))
    rep.splits[split] = d["stats"]
    return rep


# ----------------------------------------------------------------------------- YOLO layout

def label_path_for(image_path: str) -> str:
    """.../images/a/b.jpg -> .../labels/a/b.txt (the last 'images' folder, as ultralytics)."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    head = sb.join(image_path.rsplit(sa, 1)) if sa in image_path else image_path
    return os.path.splitext(head)[0] + ".txt"


def scan_yolo(split: str, image_files: List[str], nc: int, cache_path: Optional[str],
              source: str) -> Tuple[List[Record], DataReport]:
    label_files = [label_path_for(p) for p in image_files]
    key = cache_key(split, nc, _stat_key(image_files), _stat_key(label_files))
    cached = read_cache(cache_path, key)
    if cached is not None:
        return _records_from_json(cached["records"]), _report_from_cache(cached, split, source)

    records: List[Record] = []
    issues: List[Issue] = []
    for image_id, (img, lab) in enumerate(zip(image_files, label_files)):
        try:
            w, h = inspect_image(img)
        except BadImage as e:
            issues.append(Issue(img, f"{e}; image skipped"))
            continue
        if not os.path.isfile(lab):
            issues.append(Issue(img, f"no label file (expected {lab}); kept as background image"))
            records.append(Record(img, image_id, w, h, np.zeros((0, 4)), np.zeros(0)))
            continue
        try:
            with open(lab, "r", encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            issues.append(Issue(lab, f"unreadable label file ({type(e).__name__}: {e}); "
                                     f"image {os.path.basename(img)} skipped"))
            continue
        if not text.strip():   # a background image, as YOLO sets mean it: counted, not a problem
            records.append(Record(img, image_id, w, h, np.zeros((0, 4)), np.zeros(0)))
            continue
        cls, boxes, problems = parse_yolo_labels(text, nc)
        issues.extend(Issue(lab, p) for p in problems)
        records.append(Record(img, image_id, w, h, boxes * np.array([w, h, w, h]), cls))
    rep = _finish(split, len(image_files), records, issues, [], source)
    write_cache(cache_path, key, {"records": _records_to_json(records), "issues": issues,
                                  "notes": [], "stats": rep.splits[split]}, rep)
    return records, rep


# ----------------------------------------------------------------------------- COCO

def read_coco_json(json_path: str) -> dict:
    from .records import DataError
    try:
        with open(json_path, "r", encoding="utf-8") as f:
            d = json.load(f)
    except FileNotFoundError:
        raise DataError(f"{json_path}: COCO annotation file not found") from None
    except (OSError, ValueError, RecursionError) as e:   # RecursionError: absurdly deep nesting
        raise DataError(f"{json_path}: not a readable COCO json ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict) or not all(isinstance(d.get(k), list)
                                          for k in ("images", "annotations", "categories")):
        raise DataError(f"{json_path}: a COCO instances file needs the lists 'images', "
                        f"'annotations' and 'categories'")
    return d


def coco_categories(d: dict, json_path: str) -> Tuple[List[int], List[str]]:
    """Category ids sorted, and their names: class index i <-> category id ids[i]."""
    from .records import DataError
    cats = {}
    for c in d["categories"]:
        try:
            cats[int(c["id"])] = str(c["name"])
        except (KeyError, TypeError, ValueError, OverflowError):
            raise DataError(f"{json_path}: category {c!r} needs an integer 'id' and a 'name'") from None
    if not cats:
        raise DataError(f"{json_path}: no categories")
    ids = sorted(cats)
    return ids, [cats[i] for i in ids]


def scan_coco(split: str, json_path: str, image_dir: str, cache_path: Optional[str], source: str,
              coco: Optional[dict] = None) -> Tuple[List[Record], List[int], List[str], DataReport]:
    """``coco``: the json already parsed by ``read_coco_json`` (read here if not given)."""
    d = read_coco_json(json_path) if coco is None else coco
    cat_ids, names = coco_categories(d, json_path)
    images = [im for im in d["images"] if isinstance(im, dict)]
    paths = [os.path.join(image_dir, str(im.get("file_name", ""))) for im in images]
    key = cache_key(split, os.path.abspath(image_dir), _stat_key([json_path]), _stat_key(paths))
    cached = read_cache(cache_path, key)
    if cached is not None:
        return (_records_from_json(cached["records"]), cat_ids, names,
                _report_from_cache(cached, split, source))

    jname = os.path.basename(json_path)
    index = {cid: i for i, cid in enumerate(cat_ids)}
    issues: List[Issue] = []
    notes: List[str] = []
    by_image: Dict[int, list] = {}
    known_ids = set()
    for im in images:
        try:
            known_ids.add(int(im["id"]))
        except (KeyError, TypeError, ValueError, OverflowError):
            pass
    crowd = 0
    for a in d["annotations"]:
        aid = a.get("id", "?") if isinstance(a, dict) else "?"
        try:
            iid = int(a["image_id"])
        except (KeyError, TypeError, ValueError, OverflowError):
            issues.append(Issue(json_path, f"annotation {aid}: no integer image_id; dropped"))
            continue
        if iid not in known_ids:
            issues.append(Issue(json_path, f"annotation {aid}: image_id {iid} is not in 'images'; dropped"))
            continue
        if a.get("iscrowd", 0):
            crowd += 1      # crowd regions are not boxes to learn (as ultralytics' COCO converter)
            continue
        by_image.setdefault(iid, []).append(a)
    if crowd:
        notes.append(f"{jname}: {crowd} crowd annotation(s) (iscrowd=1) ignored")

    records: List[Record] = []
    seen_ids = set()
    for im, path in zip(images, paths):
        try:
            iid = int(im["id"])
            jw, jh = int(im["width"]), int(im["height"])
            str(im["file_name"])
        except (KeyError, TypeError, ValueError, OverflowError):
            issues.append(Issue(json_path, f"image entry {im.get('id', '?')} needs id, file_name, "
                                           f"width, height; skipped"))
            continue
        if iid in seen_ids:
            issues.append(Issue(json_path, f"image id {iid} appears twice; second entry skipped"))
            continue
        seen_ids.add(iid)
        try:
            w, h = inspect_image(path)
        except BadImage as e:
            issues.append(Issue(path, f"{e}; image skipped"))
            continue
        if (w, h) != (jw, jh):
            issues.append(Issue(path, f"size {w}x{h} differs from {jw}x{jh} in {jname}; image skipped"))
            continue
        cls_l, box_l, seen = [], [], {}
        for a in by_image.get(iid, []):
            where = f"annotation {a.get('id', '?')} ({jname})"
            try:
                bx = [float(v) for v in a["bbox"]]
                if len(bx) != 4:
                    raise ValueError
            except (KeyError, TypeError, ValueError, OverflowError):
                issues.append(Issue(path, f"{where}: bbox must be 4 numbers [x, y, w, h], got "
                                          f"{a.get('bbox')!r}; dropped"))
                continue
            if not all(math.isfinite(v) for v in bx):
                issues.append(Issue(path, f"{where}: NaN or infinite value in bbox; dropped"))
                continue
            try:
                cls = index[int(a["category_id"])]
            except (KeyError, TypeError, ValueError, OverflowError):
                issues.append(Issue(path, f"{where}: category_id {a.get('category_id')!r} is not in "
                                          f"'categories'; dropped"))
                continue
            x, y, bw, bh = bx
            box, problem, kept = _validate_box(cls, x, y, x + bw, y + bh, w, h, None)
            if problem:
                issues.append(Issue(path, f"{where}: {problem}"))
            if not kept:
                continue
            k = _dedupe_key(cls, box)
            if k in seen:
                issues.append(Issue(path, f"{where}: duplicate of annotation {seen[k]}; dropped"))
                continue
            seen[k] = a.get("id", "?")
            cls_l.append(cls)
            box_l.append(box)
        records.append(Record(path, iid, w, h, np.asarray(box_l).reshape(-1, 4), np.asarray(cls_l)))
    background = sum(1 for r in records if len(r.boxes) == 0)
    if background:
        notes.append(f"{jname}: {background} image(s) without annotations, used as background")
    rep = _finish(split, len(images), records, issues, notes, source)
    write_cache(cache_path, key, {"records": _records_to_json(records), "issues": issues,
                                  "notes": notes, "stats": rep.splits[split]}, rep)
    return records, cat_ids, names, rep

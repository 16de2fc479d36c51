"""Read the data set formats users have into one structure (``DataSpec`` of ``Record``).

* ultralytics data YAML: ``path``, ``train``, ``val``, ``names`` (list or {id: name}); each
  split is a folder of images, a ``.txt`` list of image paths, or a list of those; labels
  live beside the images: ``.../images/x.jpg`` -> ``.../labels/x.txt``.
* COCO: an ``instances_*.json`` (used for both splits), or a YAML spec::

      format: coco                       # optional when the splits name .json files
      path: /data/coco                   # optional root, relative to this file
      train: {images: train2017, annotations: annotations/instances_train2017.json}
      val: annotations/instances_val2017.json    # images looked up beside the json

* ``"shapes"``: the embedded generated set (ppyolo_slim/data/shapes.py), made on first use.
"""
from __future__ import annotations

import glob
import os
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

import yaml

from . import checks
from .records import DataError, DataReport, DataSpec, Record


def load_data(data: str, verbose: bool = True, cache: bool = True) -> DataSpec:
    """Load and check a data set; print one summary of what was found (``verbose``).

    Raises DataError when the data cannot be used at all (missing files, no usable image
    or box in a split); every lesser problem is in ``spec.report.issues`` instead.
    """
    if isinstance(data, os.PathLike):
        data = os.fspath(data)
    if not isinstance(data, str) or not data:
        raise DataError(f"data must be a path or 'shapes', got {data!r}")
    if data == "shapes":
        from .shapes import ensure_shapes
        data = ensure_shapes()
    if not os.path.exists(data):
        raise DataError(f"data '{data}' not found: expected an ultralytics data YAML, a COCO "
                        f"instances json (or a YAML spec of one), or 'shapes'")
    if os.path.isdir(data):
        raise DataError(f"data '{data}' is a folder: give its data YAML or COCO json instead")
    if data.lower().endswith(".json"):
        spec = _load_coco({"train": data, "val": data}, os.path.dirname(os.path.abspath(data)),
                          data, cache)
    else:
        d = _read_yaml(data)
        root_dir = os.path.dirname(os.path.abspath(data))
        if _is_coco_spec(d):
            spec = _load_coco(d, root_dir, data, cache)
        else:
            spec = _load_yolo(d, root_dir, data, cache)
    _require_usable(spec)
    text = spec.report.summary()
    if verbose and text not in _SAID:   # the pipeline's stages load the same set: say it once
        _SAID.add(text)
        print(text, file=sys.stderr, flush=True)
    return spec


_SAID: set = set()   # summaries printed by this process


def _require_usable(spec: DataSpec) -> None:
    for split, s in spec.report.splits.items():
        if s["used"] == 0 or s["boxes"] == 0:
            what = "image" if s["used"] == 0 else "box"
            raise DataError(f"{spec.source}: nothing usable in the '{split}' split: "
                            f"{s['found']} image(s) found, {s['used']} usable, {s['boxes']} usable "
                            f"boxes (no usable {what}).\n{spec.report.summary(max_lines=20)}")


def _read_yaml(path: str) -> Dict[str, Any]:
    try:
        with open(path, "r", encoding="utf-8") as f:
            d = yaml.safe_load(f)
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a readable YAML file ({e})") from None
    if not isinstance(d, dict):
        raise DataError(f"{path}: a data YAML must be a mapping with train, val and names")
    return d


def _is_coco_spec(d: Dict[str, Any]) -> bool:
    if str(d.get("format", "")).lower() == "coco":
        return True
    t = d.get("train")
    return isinstance(t, dict) or (isinstance(t, str) and t.lower().endswith(".json"))


def _root(d: Dict[str, Any], yaml_dir: str, source: str) -> str:
    """The data set root: ``path`` relative to the YAML's folder (or the working dir)."""
    p = d.get("path")
    if p in (None, ""):
        return yaml_dir
    p = os.path.expanduser(str(p))
    if os.path.isabs(p):
        return p
    for base in (yaml_dir, os.getcwd()):
        if os.path.isdir(os.path.join(base, p)):
            return os.path.normpath(os.path.join(base, p))
    raise DataError(f"{source}: path '{p}' not found relative to {yaml_dir} or {os.getcwd()}")


# ----------------------------------------------------------------------------- ultralytics

def _names(d: Dict[str, Any], source: str) -> List[str]:
    names = d.get("names")
    if isinstance(names, dict):
        try:
            keyed = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError):
            raise DataError(f"{source}: names keys must be class ids 0..nc-1") from None
        if sorted(keyed) != list(range(len(keyed))):
            raise DataError(f"{source}: names must have the class ids 0..{len(keyed) - 1}, "
                            f"got {sorted(keyed)}")
        names = [keyed[i] for i in range(len(keyed))]
    elif isinstance(names, list):
        names = [str(n) for n in names]
    else:
        raise DataError(f"{source}: 'names' must be a list of class names or a mapping "
                        f"{{id: name}}, got {names!r}")
    if not names:
        raise DataError(f"{source}: 'names' is empty")
    nc = d.get("nc")
    if nc is not None and nc != len(names):
        raise DataError(f"{source}: nc={nc} but {len(names)} names")
    return names


def _image_files(entry: Any, root: str, split: str, source: str) -> List[str]:
    entries = entry if isinstance(entry, list) else [entry]
    files: List[str] = []
    for e in entries:
        if not isinstance(e, str) or not e:
            raise DataError(f"{source}: '{split}' must be a folder, a .txt list, or a list of them; "
                            f"got {entry!r}")
        p = os.path.join(root, os.path.expanduser(e))
        if os.path.isdir(p):
            found = [f for f in glob.glob(os.path.join(p, "**", "*"), recursive=True)
                     if f.lower().endswith(checks.IMG_EXTS)]
            files.extend(found)
        elif os.path.isfile(p) and p.lower().endswith(".txt"):
            base = os.path.dirname(p)
            with open(p, "r", encoding="utf-8") as f:
                for line in f:
                    s = line.strip()
                    if s:   # ultralytics lists hold './images/x.jpg' relative to the list's folder
                        files.append(s if os.path.isabs(s) else os.path.normpath(os.path.join(base, s)))
        else:
            raise DataError(f"{source}: {split} '{e}' not found (looked for {p})")
    files = sorted({os.path.abspath(f) for f in files})
    if not files:
        raise DataError(f"{source}: no images ({', '.join(checks.IMG_EXTS)}) in {split} '{entry}'")
    return files


def _yolo_cache_path(image_files: List[str], split: str, taken: set) -> str:
    label_dir = os.path.dirname(checks.label_path_for(image_files[0]))
    path = label_dir.rstrip(os.sep) + ".ppyolo-cache.json"
    if path in taken:     # two splits sharing one labels folder get one cache each
        path = label_dir.rstrip(os.sep) + f".{split}.ppyolo-cache.json"
    taken.add(path)
    return path


def _load_yolo(d: Dict[str, Any], yaml_dir: str, source: str, cache: bool) -> DataSpec:
    names = _names(d, source)
    root = _root(d, yaml_dir, source)
    report = DataReport(source=source)
    out: Dict[str, List[Record]] = {}
    taken: set = set()
    for split in ("train", "val"):
        if d.get(split) in (None, ""):
            raise DataError(f"{source}: no '{split}' entry (ultralytics data YAML needs path, "
                            f"train, val, names)")
        files = _image_files(d[split], root, split, source)
        cache_path = _yolo_cache_path(files, split, taken) if cache else None
        out[split], rep = checks.scan_yolo(split, files, len(names), cache_path, source)
        report.extend(rep)
    return DataSpec(names=names, train=out["train"], val=out["val"], source=source, report=report)


# ----------------------------------------------------------------------------- COCO

def _coco_split(entry: Any, root: str, split: str, source: str,
                read: Callable[[str], dict]) -> Tuple[str, str]:
    """(json path, image folder) of one split of a COCO spec; ``read`` parses a json."""
    if isinstance(entry, dict):
        if "annotations" not in entry:
            raise DataError(f"{source}: {split} needs 'annotations' (an instances json)")
        js = os.path.join(root, str(entry["annotations"]))
        img_dir = os.path.join(root, str(entry["images"])) if entry.get("images") else None
    elif isinstance(entry, str) and entry:
        js, img_dir = os.path.join(root, entry), None
    else:
        raise DataError(f"{source}: COCO {split} must be a json path or "
                        f"{{images: DIR, annotations: JSON}}, got {entry!r}")
    if not os.path.isfile(js):
        raise DataError(f"{source}: {split} annotations '{js}' not found")
    if img_dir is None:
        img_dir = _find_coco_images(js, read(js), source)
    elif not os.path.isdir(img_dir):
        raise DataError(f"{source}: {split} image folder '{img_dir}' not found")
    return js, img_dir


def _find_coco_images(json_path: str, d: dict, source: str) -> str:
    """The folder the json's file_names are relative to, looked for where COCO puts it."""
    first = next((str(i.get("file_name")) for i in d["images"]
                  if isinstance(i, dict) and i.get("file_name")), None)
    jdir = os.path.dirname(os.path.abspath(json_path))
    stem = os.path.splitext(os.path.basename(json_path))[0]
    split_name = stem.split("_", 1)[1] if "_" in stem else stem     # instances_val2017 -> val2017
    up = os.path.dirname(jdir)
    candidates = [jdir, os.path.join(jdir, "images"), os.path.join(up, "images", split_name),
                  os.path.join(up, split_name), os.path.join(up, "images"), up,
                  os.path.join(jdir, split_name)]
    if first is None:
        return jdir
    for c in candidates:
        if os.path.isfile(os.path.join(c, first)):
            return c
    raise DataError(f"{source}: cannot find the images of {json_path} (first file_name '{first}'); "
                    f"looked in: {', '.join(candidates)}. Give the folder with a YAML spec: "
                    f"{{images: DIR, annotations: JSON}}")


def _load_coco(d: Dict[str, Any], yaml_dir: str, source: str, cache: bool) -> DataSpec:
    root = _root(d, yaml_dir, source) if "path" in d else yaml_dir
    report = DataReport(source=source)
    out: Dict[str, List[Record]] = {}
    first: Optional[Tuple[str, List[int], List[str]]] = None
    done: Dict[Tuple[str, str], List[Record]] = {}
    parsed: Dict[str, dict] = {}        # an instances json can be large: parse it once per split

    def read(js: str) -> dict:
        if js not in parsed:
            parsed[js] = checks.read_coco_json(js)
        return parsed[js]

    for split in ("train", "val"):
        if d.get(split) in (None, ""):
            raise DataError(f"{source}: no '{split}' entry in the COCO spec")
        js, img_dir = _coco_split(d[split], root, split, source, read)
        if (js, img_dir) in done:        # one json serving both splits: scan it once
            out[split] = done[(js, img_dir)]
            report.splits[split] = dict(report.splits[next(iter(report.splits))])
            continue
        cache_path = os.path.splitext(js)[0] + ".ppyolo-cache.json" if cache else None
        records, cat_ids, names, rep = checks.scan_coco(split, js, img_dir, cache_path, source, read(js))
        parsed.clear()                  # and hold one parsed json at a time, as before
        if first is None:
            first = (js, cat_ids, names)
        elif (cat_ids, names) != (first[1], first[2]):
            raise DataError(f"{source}: the categories of {js} differ from those of {first[0]}; "
                            f"train and val must share one class list")
        out[split] = done[(js, img_dir)] = records
        report.extend(rep)
    assert first is not None
    return DataSpec(names=first[2], train=out["train"], val=out["val"], source=source,
                    report=report, category_ids=first[1])

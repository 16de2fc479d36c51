"""Checkpoints: ``.pdparams`` with a metadata record, read without running code.

A ``.pdparams`` is a pickle (what ``paddle.save`` writes). Pickles can run code on
load, so we read them with an unpickler that admits only NumPy arrays and plain
containers. Files we write are ``paddle.load``-compatible: a dict of arrays, plus
one JSON string under ``META_KEY``.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from ..utils.io import atomic_write_bytes

META_KEY = "__ppyolo_slim_meta__"
PADDLE_NAME_MAP = "StructuredToParameterName@@"   # written by paddle.save; not a weight


class CheckpointError(ValueError):
    """A file that is not a readable checkpoint; the message names the file."""


class UnsafeCheckpointError(CheckpointError, pickle.UnpicklingError):
    """The file asks to import something other than arrays and plain containers. A
    CheckpointError too, so the tools that report those in one line report this one."""


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("collections", "OrderedDict"),
    # pickle protocol 2 (paddle.save(..., protocol=2), old fluid files) stores bytes through
    # _codecs.encode(str, "latin1"); numpy pickles arrays at protocol 5 through _frombuffer
    ("_codecs", "encode"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
}


class SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise UnsafeCheckpointError(
            f"refused to load {module}.{name}: a checkpoint may only hold arrays, numbers, "
            f"strings, lists and dicts")


def safe_load_pickle(path: str) -> Any:
    with open(path, "rb") as f:
        head = f.read(2)
    if head == b"PK":       # a zip: torch.save's format (ultralytics .pt), not paddle.save's pickle
        raise CheckpointError(
            f"{path}: a zip archive (a PyTorch / ultralytics .pt checkpoint?), not a Paddle .pdparams "
            f"pickle; convert it first: python tools/convert_weights.py --src {path} --dst OUT.pdparams")
    try:
        with open(path, "rb") as f:
            return SafeUnpickler(f).load()
    except UnsafeCheckpointError as e:
        raise UnsafeCheckpointError(f"{path}: {e}") from None
    except FileNotFoundError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, MemoryError, OverflowError, UnicodeDecodeError) as e:
        what = what_else_it_is(path)
        if what:
            raise CheckpointError(f"{path}: {what}") from None
        raise CheckpointError(f"{path}: not a readable .pdparams file "
                              f"({type(e).__name__}: {e}); truncated or not a checkpoint?") from None


_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"BM", b"GIF8", b"RIFF", b"II*\x00", b"MM\x00*")


def what_else_it_is(path: str) -> Optional[str]:
    """For a file that is not a .pdparams pickle: what it is and which flag takes it, when
    its name or first bytes tell (the files users mix up: exports, images)."""
    ext = os.path.splitext(path)[1].lower()
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return None
    folder = os.path.dirname(path) or "."
    if ext == ".onnx":
        return (f"an ONNX model, not .pdparams weights: run it with --onnx {path} (tools/infer.py, "
                f"tools/eval.py); to prune, export or train, give the .pdparams it was exported from")
    if ext in (".pdiparams", ".pdmodel"):
        return (f"part of a Paddle inference model (paddle.jit.save), not .pdparams weights: run it "
                f"with --model-dir {folder} (tools/infer.py, tools/eval.py); to prune, export or train, "
                f"give the .pdparams it was exported from")
    if ext in (".engine", ".plan", ".trt"):
        return f"a TensorRT engine, not .pdparams weights: run it with --engine {path}"
    if head.startswith(_IMAGE_MAGIC) or ext in (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"):
        return "an image, not a model: images go to --source (tools/infer.py)"
    return None


@dataclass
class ModelMeta:
    """What a checkpoint says about itself, beyond its shapes."""
    nc: int = 80
    names: List[str] = field(default_factory=list)
    depth_multiple: float = 0.33
    width_multiple: float = 0.25
    anchors: List[List[float]] = field(default_factory=lambda: [list(a) for a in _default_anchors()])
    img_size: int = 640
    made_by: Dict[str, Any] = field(default_factory=dict)   # stage, tool, time, source, ...
    version: int = 1

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelMeta":
        if not isinstance(d, Mapping):
            raise CheckpointError(f"metadata must be a mapping of fields, got {type(d).__name__}")
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        _check_meta_fields(known)
        m = cls(**known)
        if not m.names:
            m.names = [f"class{i}" for i in range(m.nc)]
        if len(m.names) != m.nc:
            raise CheckpointError(f"metadata has nc={m.nc} but {len(m.names)} class names")
        return m

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_meta_fields(d: Mapping[str, Any]) -> None:
    """Types and ranges of the metadata fields present, so a damaged record fails here
    with the field's name instead of deep inside the model builder."""
    def bad(k, want):
        raise CheckpointError(f"metadata field '{k}' must be {want}, got {d[k]!r:.80}")
    for k in ("nc", "img_size", "version"):
        if k in d and (not isinstance(d[k], int) or isinstance(d[k], bool) or d[k] < 1):
            bad(k, "a positive integer")
    if "nc" in d and d["nc"] > MAX_CLASSES:
        bad("nc", f"at most {MAX_CLASSES}")
    for k in ("depth_multiple", "width_multiple"):
        if k in d and not (_is_number(d[k]) and d[k] > 0):
            bad(k, "a positive number")
    if "names" in d and not (isinstance(d["names"], list) and all(isinstance(n, str) for n in d["names"])):
        bad("names", "a list of strings")
    if "made_by" in d and not isinstance(d["made_by"], dict):
        bad("made_by", "a mapping")
    if "anchors" in d:
        a = d["anchors"]
        if not (isinstance(a, list) and len(a) == 3 and all(isinstance(r, list) for r in a)
                and len(a[0]) >= 2 and all(len(r) == len(a[0]) and len(r) % 2 == 0
                                           and all(_is_number(x) and x > 0 for x in r) for r in a)):
            bad("anchors", "3 rows of positive w,h pairs (pixels), of equal length")


MAX_CLASSES = 100_000


def _default_anchors():
    from .spec import DEFAULT_ANCHORS
    return DEFAULT_ANCHORS


def to_numpy_state(state: Mapping[str, Any]) -> Dict[str, np.ndarray]:
    out = {}
    for k, v in state.items():
        if k in (META_KEY, PADDLE_NAME_MAP):
            continue
        out[k] = v.numpy() if hasattr(v, "numpy") else np.asarray(v)
    return out


def save_weights(path: str, state: Mapping[str, Any], meta: ModelMeta,
                 extra: Optional[Mapping[str, Any]] = None) -> None:
    """Save a state dict (tensors or arrays) with its metadata record, atomically."""
    obj: Dict[str, Any] = to_numpy_state(state)
    m = meta.to_dict()
    m["made_by"] = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), **m.get("made_by", {})}
    if extra:
        m.update(extra)
    obj[META_KEY] = json.dumps(m)
    atomic_write_bytes(path, pickle.dumps(obj, protocol=4))


def _training_state_error(path: str) -> CheckpointError:
    weights = os.path.splitext(path)[0] + ".pdparams"
    return CheckpointError(f"{path}: a training state (what --resume reads), not weights: use "
                           f"{weights} as --weights, or continue the run with "
                           f"python tools/train.py --resume {weights}")


def check_weights_file(path: str) -> None:
    """The error ``load_weights`` would give for a missing file or a file of another kind,
    from its name and first bytes only: tools call it before any slow work (a data scan)."""
    if os.path.isdir(path):
        raise FileNotFoundError(f"{path}: a folder, not a weights file: --weights takes a .pdparams "
                                f"file; an exported folder runs with --model-dir {path}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such weights file")
    if path.endswith(".state"):
        raise _training_state_error(path)
    with open(path, "rb") as f:
        is_pickle = f.read(1) == b"\x80"      # pickle protocol 2+, what paddle.save writes
    what = None if is_pickle else what_else_it_is(path)
    if what:
        raise CheckpointError(f"{path}: {what}")


def load_weights(path: str) -> Tuple[Dict[str, np.ndarray], Optional[Dict[str, Any]]]:
    """Arrays by parameter name, and the metadata dict (None for a plain paddle.save file)."""
    if os.path.isdir(path) or not os.path.isfile(path):
        check_weights_file(path)
    obj = safe_load_pickle(path)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict of arrays, got {type(obj).__name__}")
    if {"version", "model", "train"} <= set(obj) and META_KEY not in obj:
        raise _training_state_error(path)
    meta = None
    if META_KEY in obj:
        try:
            meta = json.loads(obj[META_KEY])
        except (TypeError, ValueError, RecursionError) as e:
            raise CheckpointError(f"{path}: unreadable metadata record ({e})") from None
        if not isinstance(meta, dict):
            raise CheckpointError(f"{path}: the metadata record is {type(meta).__name__}, "
                                  f"expected a JSON object")
    state = {}
    for k, v in obj.items():
        if k in (META_KEY, PADDLE_NAME_MAP):
            continue
        if not isinstance(k, str):
            raise CheckpointError(f"{path}: key {k!r:.80} is {type(k).__name__}, expected a parameter name")
        if not isinstance(v, np.ndarray):
            raise CheckpointError(f"{path}: entry {k!r:.80} is {type(v).__name__}, expected an array")
        if v.dtype.kind not in "fiub":      # object, string, complex arrays are no weights
            raise CheckpointError(f"{path}: entry {k!r:.80} has dtype {v.dtype}, expected real numbers")
        state[k] = v
    if not state:
        raise CheckpointError(f"{path}: holds no weights")
    return state, meta

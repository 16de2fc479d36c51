"""Checkpoints: ``.pdparams`` with a metadata record, read without running code.

A ``.pdparams`` is a pickle (what ``paddle.save`` writes). Pickles can run code on
load, so we read them with an unpickler that admits only NumPy arrays and plain
containers. Files we write are ``paddle.load``-compatible: a dict of arrays, plus
one JSON string under ``META_KEY``.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

META_KEY = "__ppyolo_slim_meta__"
PADDLE_NAME_MAP = "StructuredToParameterName@@"   # written by paddle.save; not a weight


class UnsafeCheckpointError(pickle.UnpicklingError):
    """The file asks to import something other than arrays and plain containers."""


class CheckpointError(ValueError):
    """A file that is not a readable checkpoint; the message names the file."""


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("collections", "OrderedDict"),
}


class SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise UnsafeCheckpointError(
            f"refused to load {module}.{name}: a checkpoint may only hold arrays, numbers, "
            f"strings, lists and dicts")


def safe_load_pickle(path: str) -> Any:
    try:
        with open(path, "rb") as f:
            return SafeUnpickler(f).load()
    except UnsafeCheckpointError as e:
        raise UnsafeCheckpointError(f"{path}: {e}") from None
    except FileNotFoundError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, MemoryError, OverflowError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not a readable .pdparams file "
                              f"({type(e).__name__}: {e}); truncated or not a checkpoint?") from None


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
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        m = cls(**known)
        if not m.names:
            m.names = [f"class{i}" for i in range(m.nc)]
        if len(m.names) != m.nc:
            raise CheckpointError(f"metadata has nc={m.nc} but {len(m.names)} class names")
        return m

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _default_anchors():
    from .spec import DEFAULT_ANCHORS
    return DEFAULT_ANCHORS


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``.
    A crash or a full disk leaves the previous file intact."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


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


def load_weights(path: str) -> Tuple[Dict[str, np.ndarray], Optional[Dict[str, Any]]]:
    """Arrays by parameter name, and the metadata dict (None for a plain paddle.save file)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such weights file")
    obj = safe_load_pickle(path)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict of arrays, got {type(obj).__name__}")
    meta = None
    if META_KEY in obj:
        try:
            meta = json.loads(obj[META_KEY])
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: unreadable metadata record ({e})") from None
    state = {}
    for k, v in obj.items():
        if k in (META_KEY, PADDLE_NAME_MAP):
            continue
        if not isinstance(k, str) or not isinstance(v, np.ndarray):
            raise CheckpointError(f"{path}: entry {k!r} is {type(v).__name__}, expected an array")
        state[k] = v
    if not state:
        raise CheckpointError(f"{path}: holds no weights")
    return state, meta

"""JSON reports: NumPy scalars and arrays become plain numbers and lists; written atomically."""
from __future__ import annotations

import json
from typing import Any, Callable

import numpy as np

from .model.weights import atomic_write_bytes


def json_default(o: Any):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def dumps(obj: Any, indent: int = 1, default: Callable[[Any], Any] = json_default) -> str:
    return json.dumps(obj, indent=indent, default=default) + "\n"


def write_json(path: str, obj: Any, indent: int = 1, default: Callable[[Any], Any] = json_default) -> None:
    atomic_write_bytes(path, dumps(obj, indent, default).encode())

"""Graph walks shared by the ONNX and the Paddle-program passes (slim/quant_onnx.py,
slim/quant_program.py): plain names and a successor function, no framework."""
from __future__ import annotations

from typing import Callable, Iterable, Set


def reachable(starts: Iterable[str], successors: Callable[[str], Iterable[str]]) -> Set[str]:
    """``starts`` and every name reached from them through ``successors``."""
    seen: Set[str] = set()
    todo = list(starts)
    while todo:
        t = todo.pop()
        if t not in seen:
            seen.add(t)
            todo.extend(successors(t))
    return seen

"""Training checkpoints that survive a kill at any moment.

Two files per checkpoint name, each written atomically (temporary file, fsync, rename):
``last.state`` first (raw model, EMA, optimizer, epoch, best fitness: all a resume needs),
then ``last.pdparams`` (the EMA weights with their metadata record: what users load).
A kill between the two leaves a complete ``last.state``; resume reads only that.
Both are pickles of arrays and plain containers, so the safe unpickler reads them.
"""
from __future__ import annotations

import os
import pickle
from contextlib import contextmanager
from typing import Any, Dict, Iterator

import numpy as np

from ..model.weights import CheckpointError, ModelMeta, safe_load_pickle, save_weights, to_numpy_state
from ..utils.io import atomic_write_bytes

STATE_VERSION = 1


class CheckpointWriteError(RuntimeError):
    """A checkpoint file could not be written (full disk, no permission); the message names
    the file. Its previous version, if any, is intact: every write goes to a temporary name."""


@contextmanager
def writing(path: str) -> Iterator[None]:
    """Turn an OSError while writing ``path`` into one clear CheckpointWriteError."""
    try:
        yield
    except OSError as e:
        folder = os.path.dirname(os.path.abspath(path))
        prev = state_path(os.path.join(folder, "last.pdparams"))
        if not os.path.isfile(prev):
            kept = "no earlier checkpoint exists in this folder"
        else:
            same = os.path.abspath(path) == os.path.abspath(prev)
            kept = ("its previous version is intact" if same else f"the previous checkpoint {prev} is intact")
            kept += "; free space and continue with --resume"
        raise CheckpointWriteError(f"cannot write {path}: {e.strerror or e}. Training stopped; "
                                   f"{kept}") from None


def _to_numpy_tree(obj):
    if hasattr(obj, "numpy") and callable(obj.numpy):
        return obj.numpy()
    if isinstance(obj, dict):
        return {k: _to_numpy_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_numpy_tree(v) for v in obj)
    return obj


def state_path(weights_path: str) -> str:
    return os.path.splitext(weights_path)[0] + ".state"


def save_checkpoint(weights_path: str, model, ema, optimizer, meta: ModelMeta,
                    train: Dict[str, Any]) -> None:
    """``train``: epoch (finished), best_fitness, ema_updates, config, ... (plain values)."""
    state = {
        "version": STATE_VERSION,
        "model": to_numpy_state(model.state_dict()),
        "ema": to_numpy_state(ema.state_dict()) if ema is not None else None,
        "optimizer": _to_numpy_tree(optimizer.state_dict()) if optimizer is not None else None,
        "meta": meta.to_dict(),
        "train": dict(train),
    }
    with writing(state_path(weights_path)):
        atomic_write_bytes(state_path(weights_path), pickle.dumps(state, protocol=4))
    weights = ema.state_dict() if ema is not None else model.state_dict()
    with writing(weights_path):
        save_weights(weights_path, weights, meta,
                     extra={"train": {k: train[k] for k in ("epoch", "best_fitness") if k in train}})


def load_checkpoint(weights_path: str) -> Dict[str, Any]:
    path = state_path(weights_path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no training state beside {weights_path}; only files written "
                              f"by tools/train.py (last.pdparams + last.state) can be resumed")
    state = safe_load_pickle(path)
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION or "model" not in state:
        raise CheckpointError(f"{path}: not a ppyolo-slim training state (version "
                              f"{state.get('version') if isinstance(state, dict) else '?'})")
    for k, v in state["model"].items():
        if isinstance(v, np.ndarray) and v.dtype.kind == "f" and not np.all(np.isfinite(v)):
            raise CheckpointError(f"{path}: {k} holds NaN or inf values")
    return state

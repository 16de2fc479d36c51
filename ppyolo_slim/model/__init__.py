"""The YOLOv5 model: one layer list (spec.py), channels from weights (channels.py)."""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from .channels import WeightShapeError, infer_nc, resolve
from .spec import DEFAULT_ANCHORS, SCALES, NetSpec, expand, expand_scale
from .weights import (CheckpointError, ModelMeta, UnsafeCheckpointError, load_weights,
                      save_weights)


def netspec_from_meta(meta: ModelMeta) -> NetSpec:
    return expand(meta.nc, meta.depth_multiple, meta.width_multiple, meta.anchors)


def build_model(meta: ModelMeta, state: Optional[Mapping[str, np.ndarray]] = None,
                source: str = "weights"):
    """A YOLOv5 Layer for ``meta``; with ``state``, shaped by and loaded from it."""
    from .yolo import YOLOv5
    shapes = {k: v.shape for k, v in state.items()} if state is not None else None
    model = YOLOv5(netspec_from_meta(meta), shapes)
    if state is not None:
        assign_state(model, state, source=source)
    return model


def assign_state(model, state: Mapping[str, Any], strict: bool = True,
                 source: str = "weights") -> Tuple[List[str], List[str]]:
    """Copy ``state`` into ``model``. Strict: every parameter present with its exact shape,
    nothing extra, else an error naming the first layer that differs and both shapes.
    Not strict: load what matches, return (loaded, skipped) names (fine-tuning to a new nc)."""
    own = model.state_dict()
    loaded, skipped = [], []
    new = {}
    for k, p in own.items():
        want = tuple(p.shape)
        if k not in state:
            if strict:
                raise WeightShapeError(f"{source}: {k} is missing (model expects shape {list(want)})")
            skipped.append(k)
            continue
        v = np.asarray(state[k])
        if tuple(v.shape) != want:
            if strict:
                raise WeightShapeError(f"{source}: {k} has shape {list(v.shape)}, "
                                       f"the model expects {list(want)}")
            skipped.append(k)
            continue
        if not np.all(np.isfinite(v)):
            raise CheckpointError(f"{source}: {k} holds NaN or inf values")
        new[k] = v.astype(np.float32) if v.dtype != np.float32 else v
        loaded.append(k)
    extra = [k for k in state if k not in own]
    if strict and extra:
        raise WeightShapeError(f"{source}: unexpected parameter {extra[0]} "
                               f"({len(extra)} unexpected in all); is this a checkpoint of this model?")
    # a skipped parameter keeps the model's own value (given explicitly: Paddle warns
    # "Skip loading for ..." for each one left out, a wall of warnings on a new head)
    model.set_state_dict({**{k: own[k] for k in skipped}, **new})
    return loaded, skipped


def read_weights(path: str) -> Tuple[Dict[str, np.ndarray], ModelMeta]:
    """Arrays and metadata of a .pdparams (a file without a record: nc from the head's shape);
    a bad record is a CheckpointError naming the file."""
    state, meta_d = load_weights(path)
    try:
        meta = ModelMeta.from_dict(meta_d or {"nc": infer_nc({k: v.shape for k, v in state.items()}) or 80})
    except (CheckpointError, TypeError) as e:
        raise CheckpointError(f"{path}: bad metadata record ({e})") from None
    return state, meta


def model_from_weights(path: str):
    """(model, meta) for a .pdparams; the model's widths come from the file's shapes."""
    state, meta = read_weights(path)
    try:
        model = build_model(meta, state, source=path)
    except WeightShapeError as e:
        msg = str(e)
        raise WeightShapeError(msg if msg.startswith(path) else f"{path}: {msg}") from None
    return model, meta


__all__ = ["WeightShapeError", "CheckpointError", "UnsafeCheckpointError", "ModelMeta", "NetSpec",
           "SCALES", "DEFAULT_ANCHORS", "expand", "expand_scale", "resolve", "build_model",
           "assign_state", "model_from_weights", "read_weights", "load_weights", "save_weights", "netspec_from_meta"]

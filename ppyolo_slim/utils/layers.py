"""Small facts about a paddle model that several components ask."""
from __future__ import annotations

from typing import Dict

import paddle
import paddle.nn as nn


def unwrap(model: nn.Layer) -> nn.Layer:
    """The YOLOv5 inside a paddle.DataParallel (or the model itself)."""
    while isinstance(model, paddle.DataParallel) or (
            not hasattr(model, "resolved") and hasattr(model, "_layers")):
        model = model._layers
    return model


def state_names(model: nn.Layer) -> Dict[str, str]:
    """paddle tensor name -> state-dict name, for parameters and buffers."""
    out = {}
    for k, v in model.state_dict().items():
        out.setdefault(v.name, k)
    return out

"""FLOPs of a model at an input size, counted with forward hooks on Conv2D.

Convention (ultralytics, via thop): FLOPs = 2 x multiply-accumulates of the convolutions,
BN folded into the conv (so BN, SiLU, pooling, resize and the box decode are not
counted). That is the "4.5 GFLOPs" ultralytics prints for a fused YOLOv5n at 640.
"""
from __future__ import annotations

from typing import Dict

import paddle
import paddle.nn as nn


def conv_macs(model: nn.Layer, img_size: int = 640, channels: int = 3) -> Dict[str, int]:
    """Multiply-accumulates of each Conv2D (bias adds included) for one image."""
    macs: Dict[str, int] = {}
    hooks = []
    for name, layer in model.named_sublayers():
        if isinstance(layer, nn.Conv2D):
            def hook(layer, inp, out, name=name):
                cin = layer.weight.shape[1]            # per group
                k = layer.weight.shape[2] * layer.weight.shape[3]
                n_out = int(out.shape[1] * out.shape[2] * out.shape[3])
                macs[name] = n_out * (cin * k + (1 if layer.bias is not None else 0))
            hooks.append(layer.register_forward_post_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with paddle.no_grad():
            model(paddle.zeros([1, channels, img_size, img_size]))
    finally:
        for h in hooks:
            h.remove()
        if was_training:
            model.train()
    return macs


def gflops(model: nn.Layer, img_size: int = 640) -> float:
    return 2 * sum(conv_macs(model, img_size).values()) / 1e9

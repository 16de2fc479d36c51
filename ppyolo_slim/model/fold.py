"""BatchNorm folded into the conv before it, and the way back to our block layout.

QAT folds first (``fold_batchnorm``): the exported INT8 conv then carries its bias, its
output scale is observed on the tensor that really feeds the SiLU, and paddle2onnx writes
integer convs (with an unfolded BN after a quantized conv it writes float ones). A folded
state (``X.conv.bias``, no ``X.bn.*``) maps back to a plain model with ``bias_as_batchnorm``:
an identity BN (gamma 1, mean 0, var + eps == 1) that carries the bias; the same map reads
ultralytics' fused checkpoints.
"""
from __future__ import annotations

from typing import Dict, Mapping, Tuple

import numpy as np

from .blocks import BN_EPS


def fold_batchnorm(model) -> int:
    """In place, for every Conv block (conv, bn, act): w' = w * g / sqrt(var + eps),
    b' = beta - mean * g / sqrt(var + eps) from BN's running statistics; BN becomes an
    identity. Returns how many blocks were folded."""
    import paddle.nn as nn
    from .blocks import Conv
    n = 0
    for layer in model.sublayers():
        if not isinstance(layer, Conv) or not isinstance(layer.bn, nn.BatchNorm2D):
            continue
        conv, bn = layer.conv, layer.bn
        g = bn.weight.numpy().astype(np.float64) / np.sqrt(bn._variance.numpy().astype(np.float64) + bn._epsilon)
        w = conv.weight.numpy().astype(np.float64) * g[:, None, None, None]
        b = bn.bias.numpy().astype(np.float64) - bn._mean.numpy().astype(np.float64) * g
        if conv.bias is not None:
            b = b + conv.bias.numpy().astype(np.float64) * g
        conv.weight.set_value(w.astype(np.float32))
        if conv.bias is None:
            conv.bias = conv.create_parameter([conv._out_channels], is_bias=True, dtype="float32")
        conv.bias.set_value(b.astype(np.float32))
        layer.bn = nn.Identity()
        n += 1
    return n


def bias_as_batchnorm(state: Mapping[str, np.ndarray]) -> Tuple[Dict[str, np.ndarray], int]:
    """A state with folded blocks (``X.conv.bias``, no ``X.bn.weight``) in our layout: each
    bias moved into an identity BN, exact. Returns (state, blocks changed)."""
    out = dict(state)
    n = 0
    for k in [k for k in out if k.endswith(".conv.bias")]:
        base = k[: -len(".conv.bias")]
        if base + ".bn.weight" in out:
            continue
        b = np.asarray(out.pop(k), dtype=np.float32)
        out[base + ".bn.weight"] = np.ones_like(b)
        out[base + ".bn.bias"] = b
        out[base + ".bn._mean"] = np.zeros_like(b)
        out[base + ".bn._variance"] = np.full_like(b, 1.0 - BN_EPS)   # var + eps == 1 in float32
        n += 1
    return out, n

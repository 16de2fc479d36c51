"""Fold the constant output of removed channels into the layers that read them.

A channel network slimming removes has gamma ~ 0, so its BN emits beta and its SiLU a
constant silu(beta), which the next conv still sums into every output: dropping the
channel shifts that conv's output by ``delta[o] = sum_c W[o, c, :, :].sum() * a_c``.
We put it back where it costs nothing: into the following BN's running mean
(``mean -= delta``) or, for Detect's output convs, into the conv bias (``bias += delta``).

What "the constant" is at a consumer is not always silu(beta) of one BN: inside a C3 the
residual stream adds several removed channels (cv1 + each bottleneck cv2, tied, so all
removed together), SPPF max-pools them, the head upsamples and concatenates them. Rather
than re-deriving each path, we set gamma = 0 on every removed channel, run the model once
and read each consumer's input at its removed channels: it must be spatially constant
(checked), and is exactly what the consumer used to see under the gamma = 0 assumption.

Exactness: for 1x1 consumers the fold is exact when gamma = 0. For kxk consumers with zero
padding (the 3x3 bottleneck cv2 and the stride-2 downsamples) the fold is exact inside
the image and off by the padded taps' share on the border pixels; we fold anyway (it is
the better approximation everywhere but the one-pixel frame) and report those layers.
For gamma != 0 the removed channel was not constant, and no fold is exact.
"""
from __future__ import annotations

from typing import Any, Dict

import numpy as np
import paddle
import paddle.nn as nn

from ..utils.layers import state_names


class CompensationError(RuntimeError):
    pass


def _removed(plan, names: Dict[str, str], dims: int) -> Dict[str, np.ndarray]:
    out = {}
    for pname, masks in plan.masks.items():
        key = names.get(pname)
        if key is None:
            continue
        for m in masks:
            if m.dims == dims:
                idx = np.flatnonzero(np.asarray(m.mask).astype(bool) == 0)
                if idx.size:
                    out[key] = idx
    return out


def fold_removed_channels(net: nn.Layer, plan, *, enabled: bool = True, img_size: int = 64) -> Dict[str, Any]:
    """Fold removed channels' constants into consumers of ``net`` (before ``plan`` is
    applied). Returns a summary {consumer: {...}} for the report."""
    names = state_names(net)
    layers = dict(net.named_sublayers())
    gone_out = {k: v for k, v in _removed(plan, names, 0).items() if k.endswith(".bn.weight")}
    gone_in = {k: v for k, v in _removed(plan, names, 1).items()
               if k.endswith("weight") and len(layers[k[:-len(".weight")]].weight.shape) == 4}
    summary: Dict[str, Any] = {"enabled": bool(enabled), "consumers": {}}
    if not enabled or not gone_in:
        return summary

    consumers = {k[:-len(".weight")]: idx for k, idx in gone_in.items()}
    seen: Dict[str, np.ndarray] = {}
    hooks = []
    for name in consumers:
        def grab(layer, inputs, name=name):
            seen[name] = inputs[0].numpy()[0]
        hooks.append(layers[name].register_forward_pre_hook(grab))

    saved = {}
    was_training = net.training
    net.eval()
    try:
        with paddle.no_grad():
            for key, idx in gone_out.items():
                w = layers[key[:-len(".weight")]].weight
                saved[key] = w.numpy().copy()
                v = saved[key].copy()
                v[idx] = 0.0
                w.set_value(v)
            net(paddle.zeros([1, 3, img_size, img_size]))
    finally:
        for h in hooks:
            h.remove()
        with paddle.no_grad():
            for key, v in saved.items():
                layers[key[:-len(".weight")]].weight.set_value(v)
        if was_training:
            net.train()

    for name, idx in consumers.items():
        x = seen[name][idx]                                   # [R, H, W]
        a = x.reshape(len(idx), -1).mean(1)
        spread = x.reshape(len(idx), -1).max(1) - x.reshape(len(idx), -1).min(1)
        bad = np.flatnonzero(spread > 1e-4 * (1.0 + np.abs(a)))
        if bad.size:
            raise CompensationError(
                f"{name}: removed input channel {int(idx[bad[0]])} is not constant under gamma=0 "
                f"(spread {float(spread[bad[0]]):.3g}); a channel it reads was removed on one path "
                f"but kept on another")
        conv = layers[name]
        w = conv.weight.numpy()
        delta = w[:, idx].sum(axis=(2, 3)) @ a                # [O]
        with paddle.no_grad():
            if conv.bias is not None:
                conv.bias.set_value(conv.bias.numpy() + delta.astype(np.float32))
                target = f"{name}.bias"
            else:
                parent = layers.get(name.rsplit(".", 1)[0]) if "." in name else None
                bn = getattr(parent, "bn", None)
                if not isinstance(bn, nn.BatchNorm2D):
                    raise CompensationError(f"{name}: no bias and no following BN to fold into")
                bn._mean.set_value(bn._mean.numpy() - delta.astype(np.float32))
                target = f"{name.rsplit('.', 1)[0]}.bn._mean"
        k = int(w.shape[2])
        summary["consumers"][name] = {
            "removed_inputs": int(idx.size), "into": target, "kernel": k,
            "max_abs_shift": float(np.abs(delta).max()) if delta.size else 0.0,
            "exact": k == 1,
        }
    summary["approximate_at_borders"] = sorted(n for n, s in summary["consumers"].items()
                                               if not s["exact"])
    return summary

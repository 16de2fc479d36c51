"""Importance functions: one score per output channel of a pruning group.

``fn(ctx, group) -> np.ndarray`` of ``group.channels`` scores, higher = more important.
``ctx`` gives ``ctx.layers`` (state-dict prefix -> layer) and ``ctx.channel_cost(group)``
(the multiply-accumulates one channel of the group costs, ``flops.py``). For a tied group
(a residual add) a channel scores its largest value over the group's layers, so all of them
keep it or lose it together. Register a new criterion with ``@register_importance("name")``;
``comparable`` says whether its scores compare across layers (a global threshold needs it).
"""
from __future__ import annotations

from typing import Callable, Dict, NamedTuple

import numpy as np


class Importance(NamedTuple):
    fn: Callable
    comparable: bool        # scores mean the same in every layer: one global threshold works
    doc: str


IMPORTANCE: Dict[str, Importance] = {}


def register_importance(name: str, comparable: bool):
    def deco(fn):
        IMPORTANCE[name] = Importance(fn, comparable, (fn.__doc__ or "").strip())
        return fn
    return deco


def importance(name: str) -> Importance:
    if name not in IMPORTANCE:
        raise ValueError(f"unknown prune criterion {name!r}; known: {', '.join(sorted(IMPORTANCE))}")
    return IMPORTANCE[name]


def _filters(ctx, group):
    return [ctx.layers[f"{c}.conv"].weight.numpy().reshape(group.channels, -1) for c in group.convs]


@register_importance("bn_scale", comparable=True)
def bn_scale(ctx, group) -> np.ndarray:
    """|gamma| of the BatchNorm (network slimming, Liu et al. 2017)."""
    return np.max(np.stack([np.abs(ctx.layers[b].weight.numpy()) for b in group.bns]), axis=0)


@register_importance("bn_scale_per_flop", comparable=True)
def bn_scale_per_flop(ctx, group) -> np.ndarray:
    """|gamma| divided by the channel's FLOP cost relative to the model's mean channel: at equal
    |gamma| an expensive (high-resolution) channel goes first (MorphNet's cost weighting)."""
    return bn_scale(ctx, group) / ctx.relative_cost(group)


@register_importance("l1_norm", comparable=False)
def l1_norm(ctx, group) -> np.ndarray:
    """L1 norm of the conv filter (Li et al. 2017, PaddleSlim's L1NormFilterPruner)."""
    return np.max(np.stack([np.abs(w).sum(1) for w in _filters(ctx, group)]), axis=0)


@register_importance("fpgm", comparable=False)
def fpgm(ctx, group) -> np.ndarray:
    """Summed distance of the filter to the layer's other filters (FPGM, He et al. 2019)."""
    out = []
    for w in _filters(ctx, group):
        w = w.astype(np.float64)
        sq = (w * w).sum(1)
        d2 = sq[:, None] + sq[None, :] - 2.0 * (w @ w.T)
        out.append(np.sqrt(np.maximum(d2, 0.0)).sum(1))
    return np.max(np.stack(out), axis=0)

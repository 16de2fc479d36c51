"""Network-slimming sparsity: an L1 penalty on BatchNorm scales (Liu et al., ICCV 2017).

After ``loss.backward()`` and before ``optimizer.step()``, ``SparsityL1.apply`` adds
``s(t) * sign(gamma)`` to the gradient of every selected BN scale: the subgradient of
``s * sum|gamma|``. Adding it to the gradient (rather than to the loss) keeps the loss
figures comparable with a dense run and costs no extra graph.

Which BNs take part (``prunable_bns``): every BN of a Conv-BN-SiLU, optionally without
the BNs whose output Detect reads (their channels carry the predictions).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Set, Tuple

import numpy as np
import paddle
import paddle.nn as nn

from ..config import DEFAULTS
from ..utils.layers import unwrap

SCHEDULES = ("constant", "linear", "cosine")

# the conv whose BN produces a block's output, by block type
_OUTPUT_CONV = {"Conv": "", "C3": "cv3", "SPPF": "cv2"}


def _bn_name(layer_name: str, conv_key: str) -> str:
    return f"{layer_name}.{conv_key}.bn" if conv_key else f"{layer_name}.bn"


def detect_input_bns(model: nn.Layer) -> Set[str]:
    """Names of the BNs whose outputs Detect reads (model.17.cv3.bn, ... for YOLOv5)."""
    model = unwrap(model)
    if not hasattr(model, "resolved"):
        return set()
    by_index = {r.spec.index: r for r in model.resolved}
    out = set()
    for r in model.resolved:
        if r.spec.block != "Detect":
            continue
        for s in r.spec.src:
            src = by_index[s]
            if src.spec.block not in _OUTPUT_CONV:
                raise ValueError(f"{r.name}: reads {src.name}, a {src.spec.block} block with no BN "
                                 f"of its own; cannot tell which BN feeds Detect")
            out.add(_bn_name(src.name, _OUTPUT_CONV[src.spec.block]))
    return out


def bottleneck_bns(model: nn.Layer) -> Set[str]:
    """Names of the BNs inside residual bottlenecks (C3 with shortcut: m.j.cv1.bn, m.j.cv2.bn)."""
    model = unwrap(model)
    names = set()
    for name, layer in model.named_sublayers():
        if getattr(layer, "add", False) is True and hasattr(layer, "cv1") and hasattr(layer, "cv2"):
            names.update({f"{name}.cv1.bn", f"{name}.cv2.bn"})
    return names


def prunable_bns(model: nn.Layer, exclude_detect_inputs: bool = True) -> List[Tuple[str, nn.BatchNorm2D]]:
    """(name, BatchNorm2D) of every Conv-BN in the model, in definition order; names are
    the state-dict prefixes (``model.2.cv1.bn``). ``exclude_detect_inputs`` leaves out
    the BNs Detect reads."""
    model = unwrap(model)
    skip = detect_input_bns(model) if exclude_detect_inputs else set()
    return [(n, l) for n, l in model.named_sublayers()
            if isinstance(l, nn.BatchNorm2D) and n not in skip]


def _check_cfg(cfg: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    out = dict(DEFAULTS["sparsity"])
    for k, v in (cfg or {}).items():
        if k not in out:
            raise ValueError(f"sparsity: unknown key '{k}'; known keys: {', '.join(sorted(out))}")
        out[k] = v
    if out["schedule"] not in SCHEDULES:
        raise ValueError(f"sparsity.schedule: expected one of {SCHEDULES}, got {out['schedule']!r}")
    for k in ("rate", "final_rate", "bottleneck_rate"):
        v = out[k]
        if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool)
                              or v < 0 or not math.isfinite(v)):
            raise ValueError(f"sparsity.{k}: expected a finite number >= 0, got {v!r}")
    return out


def schedule_factor(schedule: str, start: float, end: float, epoch: float, epochs: float) -> float:
    """The rate at ``epoch`` (float, 0..epochs) going from ``start`` to ``end``."""
    if schedule == "constant" or epochs <= 0:
        return start
    t = min(max(epoch / epochs, 0.0), 1.0)
    if schedule == "linear":
        return start + (end - start) * t
    if schedule == "cosine":
        return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * t))
    raise ValueError(f"unknown sparsity schedule {schedule!r}; expected one of {SCHEDULES}")


class SparsityL1:
    """L1 on BN scales, applied to the gradients.

    >>> sp = SparsityL1(model, cfg.sparsity, cfg.epochs)
    >>> loss.backward(); sp.apply(epoch + i / n_batches); optimizer.step()

    With AMP, call ``apply`` after ``scaler.unscale_(optimizer)`` or pass the loss scale as
    ``grad_scale`` so the penalty is scaled like the gradients it joins.
    """

    def __init__(self, model: nn.Layer, sparsity_cfg: Optional[Mapping[str, Any]] = None,
                 epochs: float = 1):
        self.cfg = _check_cfg(sparsity_cfg)
        self.enabled = bool(self.cfg["enabled"])
        self.epochs = float(epochs)
        self.bns = prunable_bns(model, self.cfg["exclude_detect_inputs"])
        if self.enabled and not self.bns:
            raise ValueError("sparsity is enabled but the model has no BatchNorm2D to penalise")
        inner = bottleneck_bns(model) if self.cfg["bottleneck_rate"] is not None else set()
        self.in_bottleneck = [n in inner for n, _ in self.bns]

    def rates(self, epoch: float) -> Tuple[float, float]:
        """(rate, bottleneck rate) at ``epoch``; the bottleneck rate follows the same schedule."""
        c = self.cfg
        r = schedule_factor(c["schedule"], c["rate"], c["final_rate"], epoch, self.epochs)
        if c["bottleneck_rate"] is None:
            return r, r
        scale = (r / c["rate"]) if c["rate"] > 0 else (
            schedule_factor(c["schedule"], 1.0, 0.0, epoch, self.epochs))
        return r, c["bottleneck_rate"] * scale

    def rate(self, epoch: float) -> float:
        return self.rates(epoch)[0]

    def apply(self, epoch: float, grad_scale: float = 1.0) -> float:
        """Add rate*sign(gamma) to each selected gamma's gradient. Returns the rate used
        (0.0 when disabled). Frozen gammas (stop_gradient) are left alone; a trainable gamma
        without a gradient means apply() was called at the wrong moment: an error."""
        if not self.enabled:
            return 0.0
        r, rb = self.rates(epoch)
        with paddle.no_grad():
            for (name, bn), inner in zip(self.bns, self.in_bottleneck):
                s = (rb if inner else r) * grad_scale
                if s == 0:
                    continue
                g = bn.weight
                if g.stop_gradient:
                    continue
                term = paddle.sign(g) * s
                if g.grad is None:
                    raise RuntimeError(f"sparsity: {name}.weight has no gradient; call apply() after "
                                       f"loss.backward() and before optimizer.clear_grad()")
                g.grad.add_(term.astype(g.grad.dtype))
        return r


def gamma_stats(model: nn.Layer, exclude_detect_inputs: bool = False) -> Dict[str, Any]:
    """Gammas of all Conv BNs: ``gammas`` (signed, 1-D), ``abs_gamma``, ``share_under_1e-2``,
    ``share_under_1e-3`` (of |gamma|), ``l1`` (sum |gamma|), ``mean``, ``count``, and
    ``per_layer`` {name: l1}."""
    bns = prunable_bns(model, exclude_detect_inputs)
    signed = [bn.weight.numpy().astype(np.float64) for _, bn in bns]
    per = {n: np.abs(g) for (n, _), g in zip(bns, signed)}
    a = np.concatenate(list(per.values())) if per else np.zeros(0)
    n = max(a.size, 1)
    return {
        "gammas": (np.concatenate(signed) if signed else np.zeros(0)).astype(np.float32),
        "abs_gamma": a.astype(np.float32),
        "share_under_1e-2": float((a < 1e-2).sum() / n),
        "share_under_1e-3": float((a < 1e-3).sum() / n),
        "l1": float(a.sum()),
        "mean": float(a.mean()) if a.size else 0.0,
        "count": int(a.size),
        "per_layer": {k: float(v.sum()) for k, v in per.items()},
    }

"""Optimizer with ultralytics' three parameter groups, the LR schedule and warmup.

Groups: conv/linear weights (with weight decay), BN weights (none), biases (none).
Per-group learning rates are set each step through each parameter's
``optimize_attr['learning_rate']`` multiplier with the global LR held at 1.0, because
warmup moves the bias LR down while the others go up (ultralytics' warmup).
"""
from __future__ import annotations

import math
from typing import Dict, List

import numpy as np
import paddle
import paddle.nn as nn

GROUPS = ("weights", "bn", "bias")


def split_parameters(model: nn.Layer) -> Dict[str, List]:
    groups = {g: [] for g in GROUPS}
    seen = set()
    for layer in model.sublayers(include_self=True):
        for name, p in layer.named_parameters(include_sublayers=False):
            if p.stop_gradient or id(p) in seen:
                continue
            seen.add(id(p))
            if name == "bias":
                groups["bias"].append(p)
            elif isinstance(layer, (nn.BatchNorm2D, nn.BatchNorm)):
                groups["bn"].append(p)
            else:
                groups["weights"].append(p)
    return groups


def lr_factor(kind: str, epochs: int, lrf: float):
    """Per-epoch LR multiplier (ultralytics one_cycle / linear)."""
    if kind == "cosine":
        return lambda x: ((1 - math.cos(x * math.pi / epochs)) / 2) * (lrf - 1) + 1
    if kind == "linear":
        return lambda x: (1 - x / epochs) * (1.0 - lrf) + lrf
    raise ValueError(f"schedule.type must be cosine or linear, got {kind!r}")


class Optimizer:
    """Wraps a Paddle optimizer; ``set_step(ni, epoch)`` sets warmup/schedule LRs and momentum."""

    def __init__(self, model: nn.Layer, opt_cfg: dict, sched_cfg: dict, epochs: int,
                 batches_per_epoch: int, weight_decay_scale: float = 1.0):
        self.cfg, self.sched = dict(opt_cfg), dict(sched_cfg)
        self.groups = split_parameters(model)
        # Paddle keys optimizer state by global names (conv2d_240.w_0) that differ from one
        # process to the next; checkpoints use the structured names (model.2.cv1.conv.weight).
        self._to_structured = {p.name: k for k, p in model.named_parameters()}
        wd = float(self.cfg["weight_decay"]) * weight_decay_scale
        params = [{"params": self.groups["weights"], "weight_decay": wd},
                  {"params": self.groups["bn"], "weight_decay": 0.0},
                  {"params": self.groups["bias"], "weight_decay": 0.0}]
        params = [g for g in params if g["params"]]
        kind = self.cfg["type"].lower()
        mom = float(self.cfg["momentum"])
        if kind == "sgd":
            self.opt = paddle.optimizer.Momentum(learning_rate=1.0, momentum=mom, parameters=params,
                                                 use_nesterov=bool(self.cfg["nesterov"]))
        elif kind in ("adam", "adamw"):
            cls = paddle.optimizer.AdamW if kind == "adamw" else paddle.optimizer.Adam
            self.opt = cls(learning_rate=1.0, beta1=mom, beta2=0.999, parameters=params)
        else:
            raise ValueError(f"optimizer.type must be SGD, Adam or AdamW, got {self.cfg['type']!r}")
        self.kind = kind
        self.lf = lr_factor(self.sched["type"], epochs, float(self.cfg["lrf"]))
        self.warmup_iters = (max(round(float(self.sched["warmup_epochs"]) * batches_per_epoch),
                                 int(self.sched.get("warmup_min_iters", 100)))
                             if float(self.sched["warmup_epochs"]) > 0 else 0)
        self.lrs = {g: None for g in GROUPS}   # forces the first set_step to write every multiplier

    def set_step(self, ni: int, epoch: int) -> Dict[str, float]:
        lr0 = float(self.cfg["lr0"])
        target = lr0 * self.lf(epoch)
        lrs = {g: target for g in GROUPS}
        if ni < self.warmup_iters:
            xi = [0, self.warmup_iters]
            # Adam's step is ~lr whatever the gradient's scale: a 0.1 bias warmup would throw the
            # Detect priors around, so (as ultralytics does for AdamW) biases warm up from 0 there.
            bias_start = float(self.sched["warmup_bias_lr"]) if self.kind == "sgd" else 0.0
            for g in GROUPS:
                start = bias_start if g == "bias" else 0.0
                lrs[g] = float(np.interp(ni, xi, [start, target]))
            if self.kind == "sgd":
                self.opt._momentum = float(np.interp(ni, xi, [float(self.sched["warmup_momentum"]),
                                                              float(self.cfg["momentum"])]))
        for g, params in self.groups.items():
            if lrs[g] != self.lrs[g]:
                for p in params:
                    p.optimize_attr["learning_rate"] = lrs[g]
        self.lrs = lrs
        return lrs

    def step(self):
        self.opt.step()

    def clear_grad(self):
        self.opt.clear_grad(set_to_zero=False)

    @staticmethod
    def _rename(state, names: Dict[str, str]):
        out = {}
        by_len = sorted(names, key=len, reverse=True)
        for k, v in state.items():
            for old in by_len:
                if k == old or k.startswith(old + "_"):
                    k = names[old] + k[len(old):]
                    break
            out[k] = v
        return out

    def state_dict(self):
        return self._rename(self.opt.state_dict(), self._to_structured)

    def set_state_dict(self, state):
        from_structured = {v: k for k, v in self._to_structured.items()}
        self.opt.set_state_dict(self._rename(state, from_structured))

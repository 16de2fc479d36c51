"""Network-slimming sparsity on BatchNorm scales, in three forms (``sparsity.method``).

* ``subgradient`` (Liu et al., ICCV 2017, as first built here): after ``loss.backward()``,
  ``s(t) * sign(gamma)`` joins the gradient of every penalised BN scale. Under Adam/AdamW the
  optimizer's per-parameter normalisation rescales that term with the loss gradient, so a
  gamma can hover near zero but never lands on it.
* ``proximal``: after the optimizer step, each penalised gamma is soft-thresholded by
  ``lr_t * s(t) * w``: gamma <- sign(gamma) * max(|gamma| - lr_t s w, 0). Exact zeros, and the
  same meaning under SGD and AdamW (the L1 part of the objective is stepped outside the
  optimizer, as decoupled weight decay is).
* ``gradual``: the channels the cut will remove are chosen as training goes (by the
  pruner's own importance function and selection policy, ``importance.py`` /
  ``selection.py``), their share grows from 0 to the target on a cubic schedule (Zhu & Gupta,
  2017), and their gamma *and* beta are held at exactly zero, so the network learns to do
  without them and the cut that follows is exact (a channel with gamma = beta = 0 emits
  SiLU(0) = 0).

``w`` is 1, or with ``flop_weighted`` the FLOPs one channel of the layer costs relative to
the model's mean channel (MorphNet, Gordon et al., CVPR 2018): the global threshold then stops
keeping expensive high-resolution layers whole while flooring the cheap deep ones.

Which BNs the L1 forms penalise (``prunable_bns``): every BN of a Conv-BN-SiLU, optionally
without the BNs whose output Detect reads. All three forms are trainer callbacks, as is
the per-epoch |gamma| histogram every run logs (``GammaLogger``).
"""
from __future__ import annotations

import math
import sys
from typing import Any, Dict, List, Mapping, Optional, Set, Tuple, Union

import numpy as np
import paddle
import paddle.nn as nn

from ..engine.callbacks import Callback, register_callback
from ..model.block_types import block_type
from ..utils.layers import unwrap
from .selection import PruneConfig
from .sparsity_config import SCHEDULES, SparsityConfig


def _bn_name(layer_name: str, conv_key: str) -> str:
    return f"{layer_name}.{conv_key}.bn" if conv_key else f"{layer_name}.bn"


def detect_input_bns(model: nn.Layer) -> Set[str]:
    """Names of the BNs whose outputs Detect reads (model.17.cv3.bn, ... for YOLOv5)."""
    model = unwrap(model)
    if not hasattr(model, "resolved"):
        return set()
    by_index = {r.spec.index: r for r in model.resolved}
    head = model.resolved[-1]     # Detect, the last row (as YOLOv5.detect)
    out = set()
    for s in head.spec.src:
        src = by_index[s]
        conv = block_type(src.spec.block).output_conv
        if conv is None:
            raise ValueError(f"{head.name}: reads {src.name}, a {src.spec.block} block with no BN "
                             f"of its own; cannot tell which BN feeds Detect")
        out.add(_bn_name(src.name, conv))
    return out


def bottleneck_bns(model: nn.Layer) -> Set[str]:
    """Names of the BNs inside residual adds (C3 with shortcut: m.j.cv1.bn, m.j.cv2.bn)."""
    model = unwrap(model)
    return {_bn_name(r.name, key) for r in getattr(model, "resolved", [])
            for key in block_type(r.spec.block).residual_convs(r)}


def prunable_bns(model: nn.Layer, exclude_detect_inputs: bool = True) -> List[Tuple[str, nn.BatchNorm2D]]:
    """(name, BatchNorm2D) of every Conv-BN in the model, in definition order; names are
    the state-dict prefixes (``model.2.cv1.bn``). ``exclude_detect_inputs`` leaves out
    the BNs Detect reads."""
    model = unwrap(model)
    skip = detect_input_bns(model) if exclude_detect_inputs else set()
    return [(n, l) for n, l in model.named_sublayers()
            if isinstance(l, nn.BatchNorm2D) and n not in skip]


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
    """L1 on BN scales: the subgradient form (``apply``, between backward and step) and the
    proximal form (``prox``, after the step).

    >>> sp = SparsityL1(model, cfg.sparsity, cfg.epochs)
    >>> loss.backward(); sp.apply(epoch + i / n_batches); optimizer.step()

    With AMP, call ``apply`` after ``scaler.unscale_(optimizer)`` or pass the loss scale as
    ``grad_scale`` so the penalty is scaled like the gradients it joins. ``weights``: a
    factor per penalised BN name (FLOP weighting); missing names weigh 1.
    """

    def __init__(self, model: nn.Layer, sparsity_cfg: Union[SparsityConfig, Mapping[str, Any], None] = None,
                 epochs: float = 1, weights: Optional[Mapping[str, float]] = None):
        self.cfg = sparsity_cfg if isinstance(sparsity_cfg, SparsityConfig) else \
            SparsityConfig.from_dict(sparsity_cfg)
        self.enabled = bool(self.cfg.enabled)
        self.method = self.cfg.method
        self.epochs = float(epochs)
        self.bns = prunable_bns(model, self.cfg.exclude_detect_inputs)
        if self.enabled and not self.bns:
            raise ValueError("sparsity is enabled but the model has no BatchNorm2D to penalise")
        inner = bottleneck_bns(model) if self.cfg.bottleneck_rate is not None else set()
        self.in_bottleneck = [n in inner for n, _ in self.bns]
        self.set_weights(weights or {})

    def set_weights(self, weights: Mapping[str, float]) -> None:
        self.weights = [float(weights.get(n, 1.0)) for n, _ in self.bns]

    def rates(self, epoch: float) -> Tuple[float, float]:
        """(rate, bottleneck rate) at ``epoch``; the bottleneck rate follows the same schedule."""
        c = self.cfg
        r = schedule_factor(c.schedule, c.rate, c.final_rate, epoch, self.epochs)
        if c.bottleneck_rate is None:
            return r, r
        scale = (r / c.rate) if c.rate > 0 else (
            schedule_factor(c.schedule, 1.0, 0.0, epoch, self.epochs))
        return r, c.bottleneck_rate * scale

    def rate(self, epoch: float) -> float:
        return self.rates(epoch)[0]

    def _each(self, epoch: float):
        r, rb = self.rates(epoch)
        for (name, bn), inner, w in zip(self.bns, self.in_bottleneck, self.weights):
            g = bn.weight
            if not g.stop_gradient:          # frozen gammas are left alone
                yield name, g, (rb if inner else r) * w

    def apply(self, epoch: float, grad_scale: float = 1.0) -> float:
        """Subgradient form: add rate*w*sign(gamma) to each selected gamma's gradient. Returns
        the rate used (0.0 when disabled or another method). A trainable gamma without a
        gradient means apply() was called at the wrong moment: an error."""
        if not self.enabled or self.method != "subgradient":
            return 0.0
        with paddle.no_grad():
            for name, g, s in self._each(epoch):
                if s == 0:
                    continue
                if g.grad is None:
                    raise RuntimeError(f"sparsity: {name}.weight has no gradient; call apply() after "
                                       f"loss.backward() and before optimizer.clear_grad()")
                g.grad.add_((paddle.sign(g) * (s * grad_scale)).astype(g.grad.dtype))
        return self.rate(epoch)

    def prox(self, epoch: float, lr: float) -> float:
        """Proximal form, after the optimizer step: soft-threshold each selected gamma by
        ``lr * rate * w`` (exact zeros). Returns the rate used (0.0 when disabled). The gradual
        method uses it too, on the channels not yet masked: the L1 pull separates the channels
        the loss needs (their gradient holds them up) from those it does not, so the ranking
        that picks the next channels to mask is informed rather than noise around gamma = 1."""
        if not self.enabled or self.method not in ("proximal", "gradual"):
            return 0.0
        with paddle.no_grad():
            for _, g, s in self._each(epoch):
                t = lr * s
                if t > 0:
                    g.set_value(paddle.sign(g) * paddle.clip(paddle.abs(g) - t, min=0.0))
        return self.rate(epoch)


def stepped_share(steps: List[float], epoch: float, ramp_epochs: float) -> float:
    """Progressive pruning: ``steps`` (e.g. 2x -> 4x -> 8x: [0.5, 0.75, 0.875]) reached at equal
    intervals of the ramp, each held while the network recovers before the next."""
    if ramp_epochs <= 0:
        return steps[-1]
    k = int(min(max(epoch / ramp_epochs, 0.0), 1.0) * len(steps))
    return steps[min(k, len(steps) - 1)]


def cubic_share(target: float, epoch: float, ramp_epochs: float) -> float:
    """Zhu & Gupta's gradual schedule: 0 at the start, ``target`` from ``ramp_epochs`` on, fast
    early (when the network has most redundancy) and slow late."""
    if ramp_epochs <= 0:
        return target
    t = min(max(epoch / ramp_epochs, 0.0), 1.0)
    return target * (1.0 - (1.0 - t) ** 3)


class GradualMask:
    """The ``gradual`` method: hold gamma = beta = 0 on the channels chosen for removal.

    Selection is the pruner's (a ``ChannelPruner`` on the training model, its importance
    function and the prune section's floors and rounding), redone every ``interval``-th
    optimizer step of the run (counted from the epoch, so a resumed run selects at the same
    steps) at the scheduled share, and at the step the target is reached; a masked channel
    scores 0, so the masked set only grows. Masks are applied to the model and to its EMA
    (what is saved and evaluated). A resumed run reads its masks back from the zeros."""

    def __init__(self, pruner, criterion: str, target: float, ramp_epochs: float,
                 min_channels: int, round_to: int, interval: int = 5, steps: Optional[List[float]] = None,
                 mode: str = "global"):
        self.pruner, self.criterion, self.mode = pruner, criterion, mode
        self.target, self.ramp = float(target), float(ramp_epochs)
        self.steps = [float(x) for x in steps] if steps else None
        if self.steps and (sorted(self.steps) != self.steps or abs(self.steps[-1] - self.target) > 1e-9):
            raise ValueError(f"sparsity.steps {self.steps}: expected rising shares ending at the target "
                             f"{self.target}")
        self.min_channels, self.round_to, self.interval = int(min_channels), int(round_to), int(interval)
        self.masks: Optional[List[np.ndarray]] = None
        self.share = 0.0
        self._cut: Optional[List[Tuple[List[str], paddle.Tensor]]] = None   # (BNs, 0/1 mask) per cut group
        self._layers: Dict[int, Dict[str, nn.Layer]] = {}

    def select(self, share: float) -> None:
        from .selection import Policy, select
        p = self.pruner
        p.criterion = self.criterion
        scores = [p.scores(g) for g in p.groups]
        if self.masks is not None:     # once removed, always removed (scores may drift by EMA)
            scores = [np.where(m, s, 0.0) for s, m in zip(scores, self.masks)]
        layers = [len(g.bns) for g in p.groups]
        if share <= 0:
            self.masks = [np.ones(s.size, dtype=bool) for s in scores]
        else:
            self.masks, _ = select(scores, layers, Policy(mode=self.mode, ratio=min(share, 0.999999),
                                                          min_channels=self.min_channels,
                                                          round_to=self.round_to))
        self.share = share
        self._cut = None

    def share_at(self, epoch: float) -> float:
        if self.steps:
            return stepped_share(self.steps, epoch, self.ramp)
        return cubic_share(self.target, epoch, self.ramp)

    def step(self, epoch: float, step: int, models: List[nn.Layer]) -> float:
        """``step``: the optimizer step's index in the run (a function of the epoch and batch)."""
        share = self.share_at(epoch)
        due = step % self.interval == 0 or share >= self.target
        if self.masks is None or (due and share > self.share):
            self.select(share)
        self.apply(models)
        return share

    def restore(self, model: nn.Layer, epoch: float, steps_per_epoch: int) -> None:
        """After a resume: the masked channels are those with gamma = beta = 0 in every layer of
        their group; the share is the one of the last selection before ``epoch``."""
        layers = dict(unwrap(model).named_sublayers())
        self.masks = []
        for g in self.pruner.groups:
            zero = np.ones(g.channels, dtype=bool)
            for b in g.bns:
                zero &= (layers[b].weight.numpy() == 0) & (layers[b].bias.numpy() == 0)
            self.masks.append(~zero)
        self._cut = None
        last = int(round(epoch * steps_per_epoch))
        while last > 0 and last % self.interval and self.share_at(last / steps_per_epoch) < self.target:
            last -= 1
        self.share = self.share_at(last / steps_per_epoch) if last > 0 else 0.0

    @paddle.no_grad()
    def apply(self, models: List[nn.Layer]) -> None:
        if self._cut is None:    # rebuilt after each selection, not at every step
            self._cut = [(g.bns, paddle.to_tensor(keep.astype("float32")))
                         for g, keep in zip(self.pruner.groups, self.masks) if not keep.all()]
        for model in models:
            layers = self._layers.get(id(model))
            if layers is None:
                layers = self._layers[id(model)] = dict(unwrap(model).named_sublayers())
            for bns, m in self._cut:
                for b in bns:
                    bn = layers[b]
                    bn.weight.set_value(bn.weight * m)
                    bn.bias.set_value(bn.bias * m)

    def removed_share(self) -> float:
        from .selection import removed_share
        return removed_share(self.masks, [len(g.bns) for g in self.pruner.groups]) if self.masks else 0.0


def flop_weights(pruner) -> Dict[str, float]:
    """BN name -> the relative FLOP cost of one of its channels (1 = the model's mean)."""
    return {b: pruner.relative_cost(g) for g in pruner.groups for b in g.bns}


class SparsityCallback(Callback):
    """The ``sparsity:`` section as a trainer callback (any of the three methods)."""

    def __init__(self, trainer):
        cfg = trainer.cfg
        self.cfg = SparsityConfig.of(cfg)
        self.l1 = SparsityL1(trainer.core, self.cfg, trainer.epochs)
        self.method = self.cfg.method
        self.gradual: Optional[GradualMask] = None
        self.prune_cfg = PruneConfig.of(cfg)    # the cut the gradual masks prepare
        self.img_size = int(cfg["img_size"])
        self._warned = False

    def _pruner(self, trainer):
        from .pruner import ChannelPruner
        return ChannelPruner(trainer.core, trace_size=64, cost_size=self.img_size)

    def on_train_start(self, trainer):
        c, cut = self.cfg, self.prune_cfg
        if self.method == "gradual":
            crit = "bn_scale_per_flop" if c.flop_weighted else "bn_scale"
            self.gradual = GradualMask(self._pruner(trainer), crit, c.target(cut.ratio),
                                       c.ramp * trainer.epochs, cut.min_channels,
                                       cut.round_to, c.interval, c.steps, c.selection)
            if trainer.start_epoch > 0:    # resumed: the masked set is the zeros it left
                self.gradual.restore(trainer.core, trainer.start_epoch, trainer.nb)
        elif c.flop_weighted:
            self.l1.set_weights(flop_weights(self._pruner(trainer)))

    def on_after_backward(self, trainer, epoch_float):
        self.l1.apply(epoch_float)

    def on_after_step(self, trainer, epoch_float):
        if self.method == "proximal" or (self.gradual is not None and epoch_float <= self.gradual.ramp):
            self.l1.prox(epoch_float, float(trainer.optimizer.lrs["bn"]))   # gradual: while choosing
        if self.gradual is not None:
            models = [trainer.core] + ([trainer.ema.ema] if trainer.ema is not None else [])
            self.gradual.step(epoch_float, int(round(epoch_float * trainer.nb)), models)

    def on_epoch_end(self, trainer, epoch, record):
        if self.gradual is not None:
            record["masked_share"] = self.gradual.removed_share()
            trainer.logger.scalars({"sparsity/masked_share": record["masked_share"]}, epoch)
            # best.pdparams only from epochs whose masks are complete: it is what gets pruned
            record["best_eligible"] = self.gradual.share >= self.gradual.target - 1e-9
            if (record["best_eligible"] and record["masked_share"] < self.gradual.target - 1e-6
                    and not self._warned and trainer.rank == 0):
                self._warned = True
                print(f"warning: sparsity.method=gradual holds {record['masked_share']:.3f} of the channels "
                      f"at zero, not the {self.gradual.target:.3f} asked: prune.min_channels="
                      f"{self.prune_cfg.min_channels} per layer keeps the rest", file=sys.stderr)
        else:
            record["sparsity_rate"] = self.l1.rate(epoch + 1.0)


class GammaLogger(Callback):
    """Every run: the |gamma| histogram and the share under 1e-2 / 1e-3, each epoch (shows
    what sparsity does, or would do)."""

    def on_epoch_end(self, trainer, epoch, record):
        if trainer.rank != 0:
            return
        st = gamma_stats(trainer.core)
        g = st["abs_gamma"]
        trainer.logger.histogram("sparsity/gamma_abs", g, epoch)
        vals = {"sparsity/share_below_1e-2": st["share_under_1e-2"],
                "sparsity/share_below_1e-3": st["share_under_1e-3"],
                "sparsity/share_zero": float((g == 0).mean()) if g.size else 0.0,
                "sparsity/gamma_l1": st["l1"]}
        trainer.logger.scalars(vals, epoch)
        record.update({"gamma_below_1e-2": vals["sparsity/share_below_1e-2"],
                       "gamma_below_1e-3": vals["sparsity/share_below_1e-3"],
                       "gamma_zero": vals["sparsity/share_zero"], "gamma_l1": vals["sparsity/gamma_l1"]})


@register_callback("gamma_log")
def _gamma_logger(trainer) -> Callback:
    return GammaLogger()


@register_callback("sparsity")
def _sparsity(trainer) -> Optional[Callback]:
    return SparsityCallback(trainer) if trainer.cfg["sparsity"]["enabled"] else None


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

"""Channel pruning with PaddleSlim: BN-scale criterion, one global threshold.

``ChannelPruner`` is a PaddleSlim ``FilterPruner``: PaddleSlim traces the model, walks the
graph with its prune workers (plus ours, ``workers.py``) and returns *collections*: a
master conv weight pruned on its outputs and every tensor that must shrink with it
(its BN, the consumers' input channels, through concat offsets). We

* check that every Conv-BN of the model is in exactly one collection (else
  ``PruneCoverageError``: PaddleSlim drops collections silently when it meets an op it
  does not know);
* rank the channels of a collection by |gamma| of its BatchNorm(s): a collection can hold
  several BNs when a residual add ties their channels (C3's cv1 and every bottleneck
  cv2); a tied channel scores its largest |gamma| and all its layers lose it together;
* pick one threshold over all prunable channels (network slimming), with a floor per
  layer (``min_channels``) and optional rounding of kept counts (``round_to``); asked for
  a share, the threshold is the lowest that removes it once floors and rounding kept theirs;
* hand the masks to PaddleSlim's ``prune_vars`` through ``cal_mask`` (its hook for a
  criterion), fold the removed channels' constant output into their consumers
  (``compensate.py``), apply the plan, and rebuild a clean model from the pruned shapes.

Detect's 1x1 output convs are graph leaves: PaddleSlim never prunes their outputs; their
input channels shrink with the C3 that feeds them.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import paddle
import paddle.nn as nn

from . import selection, workers  # noqa: F401  workers registers the silu and concat workers
from ._compat import import_paddleslim
from .importance import IMPORTANCE, importance
from .selection import Policy, PruneConfig, SelectionError
from ..settings import SettingError
from ..utils.layers import state_names, unwrap

_FLOOR = PruneConfig.min_channels   # the prune section's default floor, for direct calls

import_paddleslim()
from paddleslim.dygraph.prune.filter_pruner import FilterPruner  # noqa: E402
from paddleslim.dygraph.prune.pruning_plan import PruningPlan  # noqa: E402

_logger = logging.getLogger(__name__)


class PruneCoverageError(RuntimeError):
    """A prunable layer that PaddleSlim's graph walk did not put in a collection."""


class PruneError(ValueError):
    """Bad pruning settings or a pruned model that does not hold together."""


@contextlib.contextmanager
def quiet_paddleslim(level: int = logging.ERROR):
    """PaddleSlim logs every leaf and every pruned variable at INFO/WARNING; our own
    coverage check is stricter than its warnings, so keep the terminal readable."""
    loggers = [logging.getLogger(n) for n in list(logging.root.manager.loggerDict)
               if n.startswith("paddleslim")]
    old = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(level)
    try:
        yield
    finally:
        for lg, lv in zip(loggers, old):
            lg.setLevel(lv)


@dataclass
class ChannelGroup:
    """The output channels shared by one PaddleSlim collection."""
    master: str                    # paddle name of the master conv weight
    master_key: str                # its state-dict name (model.2.cv1.conv.weight)
    convs: List[str]               # state-dict prefixes of the convs emitting these channels
    bns: List[str]                 # state-dict prefixes of their BNs
    consumers: List[str]           # conv weights whose input channels shrink with them
    channels: int
    sliced: List[str] = field(default_factory=list)  # convs tied to a *slice* of these channels
    keep: Optional[np.ndarray] = field(default=None, repr=False)   # bool mask once decided
    scores: Optional[np.ndarray] = field(default=None, repr=False) # what the mask was ranked by

    @property
    def tied(self) -> bool:
        return len(self.bns) > 1

    @property
    def label(self) -> str:
        name = self.master_key[:-len(".conv.weight")] if self.master_key.endswith(".conv.weight") \
            else self.master_key
        return name + (f" (+{len(self.convs) - 1} tied)" if self.tied else "")


def _is_identity(transforms) -> bool:
    return not transforms or all(not t for t in transforms)


class ChannelPruner(FilterPruner):
    """A PaddleSlim FilterPruner ranking channels by an importance function (importance.py).

    Two ways to get masks through ``cal_mask`` (PaddleSlim's criterion hook):
    ``set_threshold(t, min_channels, round_to)`` fixes them for a global threshold; without
    it, ``cal_mask`` prunes the requested ratio of a collection by |gamma| (what
    PaddleSlim's ``sensitive()`` asks for).
    """

    CRITERIA = tuple(IMPORTANCE)    # every registered importance function

    def __init__(self, model: nn.Layer, trace_size: int = 64, in_channels: int = 3,
                 min_channels: int = 1, criterion: str = "bn_scale", cost_size: int = 640):
        self.CRITERIA = tuple(IMPORTANCE)   # criteria registered after import count too
        if criterion not in self.CRITERIA:
            raise PruneError(f"prune criterion must be one of {self.CRITERIA}, got {criterion!r}")
        self.criterion = criterion
        self.net = unwrap(model)
        if trace_size % 32:
            raise PruneError(f"trace_size must be a multiple of 32, got {trace_size}")
        was_training = self.net.training
        self.net.train()   # trace the raw maps; eval mode would cache static grids in Detect
        try:
            with quiet_paddleslim():
                super().__init__(self.net, [1, in_channels, trace_size, trace_size],
                                 skip_leaves=True)
        finally:
            # PaddleSlim's tracer switches Paddle to static mode and back, but not on error
            if not paddle.in_dynamic_mode():
                paddle.disable_static()
            self.net.train() if was_training else self.net.eval()
        self.min_channels = min_channels
        self.round_to = 1
        self.threshold: Optional[float] = None
        self.cost_size = cost_size             # image size the FLOP costs are counted at
        self._macs: Optional[Dict[str, int]] = None
        self._mean_cost: Optional[float] = None
        self._names = state_names(self.net)
        self._layers = dict(self.net.named_sublayers())
        self.groups: List[ChannelGroup] = [self._group(c) for c in self.collections]
        self._by_master = {g.master: g for g in self.groups}
        self.check_coverage()

    # ---------------------------------------------------------------- analysis
    def _key(self, paddle_name: str) -> str:
        return self._names.get(paddle_name, paddle_name)

    def _group(self, collection) -> ChannelGroup:
        convs, bns, consumers, sliced = [], [], [], []
        for d in collection.all_pruning_details():
            key = self._names.get(d.name)
            if key is None:          # activations the walk passed through
                continue
            if d.axis == 0 and _is_identity(d.transform):
                if key.endswith(".conv.weight"):
                    convs.append(key[:-len(".conv.weight")])
                elif key.endswith(".bn.weight"):
                    bns.append(key[:-len(".weight")])
            elif d.axis == 0 and key.endswith(".conv.weight"):
                sliced.append(key[:-len(".conv.weight")])
            elif d.axis == 1 and key.endswith("weight") and len(d.var.shape()) == 4:
                if key not in consumers:
                    consumers.append(key)
        master_key = self._key(collection.master_name)
        shape = self._var_shapes[collection.master_name]
        return ChannelGroup(collection.master_name, master_key, convs, bns, consumers, int(shape[0]),
                            sliced)

    def expected_convs(self) -> List[str]:
        """State-dict prefixes of every Conv of a Conv-BN (Detect's output convs are not)."""
        out = []
        for name, layer in self._layers.items():
            bn = getattr(layer, "bn", None)
            if isinstance(getattr(layer, "conv", None), nn.Conv2D) and isinstance(bn, nn.BatchNorm2D):
                out.append(name)
        return out

    def check_coverage(self) -> None:
        """Every Conv-BN in exactly one collection, with its own BN, or an error naming them."""
        seen: Dict[str, str] = {}
        twice = []
        for g in self.groups:
            for c in g.convs:
                if c in seen:
                    twice.append(f"{c} (in {seen[c]} and {g.master_key})")
                seen[c] = g.master_key
            if g.sliced:
                raise PruneCoverageError(
                    f"collection of {g.master_key}: the outputs of {g.sliced} are tied to a slice of "
                    f"its channels (an add or similar after a concat); ranking such ties is not "
                    f"supported")
            if not g.bns:
                raise PruneCoverageError(
                    f"collection of {g.master_key} holds no BatchNorm scale to rank its channels")
            missing_bn = [c for c in g.convs if f"{c}.bn" not in g.bns]
            if missing_bn:
                raise PruneCoverageError(f"collection of {g.master_key}: the BN of {missing_bn} "
                                         f"is not pruned with its conv")
        expected = self.expected_convs()
        missing = [c for c in expected if c not in seen]
        if missing or twice:
            msg = []
            if missing:
                msg.append(f"{len(missing)} of {len(expected)} Conv-BN layers are in no pruning "
                           f"collection: {', '.join(missing)}. PaddleSlim's graph walk stopped at "
                           f"an op it has no worker for (see ppyolo_slim/slim/workers.py)")
            if twice:
                msg.append(f"layers in two collections: {', '.join(twice)}")
            raise PruneCoverageError("; ".join(msg))
        self.covered = sorted(seen)

    # ---------------------------------------------------------------- criterion
    @property
    def layers(self) -> Dict[str, nn.Layer]:
        return self._layers

    def channel_cost(self, group: ChannelGroup) -> float:
        """Multiply-accumulates one channel of ``group`` costs at ``cost_size`` px: its share of
        every conv that emits it, plus its share of every consumer's input (MorphNet)."""
        if self._macs is None:
            from ..model.flops import conv_macs
            self._macs = conv_macs(self.net, self.cost_size)
        cost = 0.0
        for c in group.convs:
            cost += self._macs[f"{c}.conv"] / group.channels
        for w in group.consumers:
            layer = w[:-len(".weight")]
            cin = int(self._layers[layer].weight.shape[1])
            cost += self._macs[layer] / max(cin, 1)
        return cost

    def relative_cost(self, group: ChannelGroup) -> float:
        """``channel_cost`` over the mean channel's (weighted by channels), so 1 is typical."""
        if self._mean_cost is None:
            tot = sum(self.channel_cost(g) * g.channels for g in self.groups)
            self._mean_cost = tot / max(sum(g.channels for g in self.groups), 1)
        return self.channel_cost(group) / self._mean_cost

    def scores(self, group: ChannelGroup) -> np.ndarray:
        """Importance per channel by ``self.criterion`` (``importance.py``)."""
        return importance(self.criterion).fn(self, group)

    def _policy(self, **kw) -> Policy:
        try:
            return Policy(**kw)
        except SelectionError as e:
            raise PruneError(str(e)) from None

    def _all(self):
        return [self.scores(g) for g in self.groups], [len(g.bns) for g in self.groups]

    def all_scores(self) -> Tuple[np.ndarray, np.ndarray]:
        """(score of every prunable channel of every BN layer, the same per group index):
        a tied channel counts once per layer that holds it."""
        vals, idx = [], []
        for i, g in enumerate(self.groups):
            s = self.scores(g)
            vals.append(np.tile(s, len(g.bns)))
            idx.append(np.full(s.size * len(g.bns), i))
        return np.concatenate(vals), np.concatenate(idx)

    def global_threshold(self, ratio: float) -> float:
        """The score below which ``ratio`` of all prunable channels lie (floors ignored)."""
        self._policy(ratio=ratio)
        return selection.percentile_threshold(*self._all(), ratio)

    def removed_share_at(self, threshold: float, min_channels: int, round_to: int) -> float:
        """Share of all prunable channels a threshold removes, after floors and rounding."""
        return selection.share_at_threshold(*self._all(), threshold, min_channels, round_to)

    def threshold_for_share(self, ratio: float, min_channels: int = _FLOOR,
                            round_to: int = 1) -> Tuple[float, float]:
        """(threshold, share it removes): ``selection.threshold_for_share`` on this model."""
        self._policy(ratio=ratio, min_channels=min_channels, round_to=round_to)
        return selection.threshold_for_share(*self._all(), ratio, min_channels, round_to)

    def _kept_count(self, n_keep: int, c: int) -> int:
        return selection.kept_count(n_keep, c, self.min_channels, self.round_to)

    def apply_policy(self, policy: Policy) -> Optional[float]:
        """Fix every group's mask by ``policy``; returns the threshold used (None: uniform)."""
        if policy.mode == "global" and not importance(self.criterion).comparable:
            raise PruneError(f"criterion {self.criterion} gives scores that do not compare across "
                             f"layers: it needs the uniform policy")
        scores, layers = self._all()
        masks, t = selection.select(scores, layers, policy)
        self.threshold, self.min_channels, self.round_to = t, policy.min_channels, policy.round_to
        for g, s, m in zip(self.groups, scores, masks):
            g.scores, g.keep = s, m
        return t

    def set_threshold(self, threshold: float, min_channels: int = _FLOOR, round_to: int = 1) -> None:
        """Fix every group's mask: keep scores >= threshold, at least ``min_channels`` (the
        best ones), the kept count rounded up to a multiple of ``round_to``."""
        self.apply_policy(self._policy(mode="global", ratio=None, threshold=threshold,
                                       min_channels=min_channels, round_to=round_to))

    def set_uniform_ratio(self, ratio: float, min_channels: int = _FLOOR, round_to: int = 1) -> None:
        """Fix every group's mask: remove ``ratio`` of its channels (lowest scores first)."""
        self.apply_policy(self._policy(mode="uniform", ratio=ratio, min_channels=min_channels,
                                       round_to=round_to))

    def clear_threshold(self) -> None:
        self.threshold = None
        for g in self.groups:
            g.keep = g.scores = None

    def cal_mask(self, pruned_ratio, collection, num_head=-1):
        """PaddleSlim's criterion hook: 1 keeps a channel, 0 removes it."""
        g = self._by_master[collection.master_name]
        if g.keep is not None:
            return g.keep.astype(np.int64)
        s = self.scores(g)
        n_keep = g.channels - int(round(float(pruned_ratio) * g.channels))
        return selection.mask_top(s, self._kept_count(n_keep, g.channels)).astype(np.int64)

    # ---------------------------------------------------------------- plan
    def make_plan(self):
        """PaddleSlim's pruning plan for the fixed masks (not applied)."""
        if any(g.keep is None for g in self.groups):
            raise PruneError("call set_threshold() before make_plan()")
        ratios = {g.master: 1.0 - g.keep.mean() for g in self.groups}
        with quiet_paddleslim():
            return self.prune_vars(ratios, axis=0, apply=None)


@dataclass
class PruneResult:
    model: nn.Layer                       # the narrower model, rebuilt from the pruned shapes
    state: Dict[str, np.ndarray]
    threshold: Optional[float]            # None for the per-layer criteria
    ratio: Optional[float]                # the requested share (None when a threshold was given)
    groups: List[ChannelGroup]
    scores: np.ndarray                    # every prunable channel's |gamma| (per BN layer)
    compensation: Dict[str, Any]
    before: Dict[str, Tuple[int, ...]]    # state-dict shapes before
    after: Dict[str, Tuple[int, ...]]

    @property
    def removed_share(self) -> float:
        return self.share_of(self.groups)

    @staticmethod
    def share_of(groups: List[ChannelGroup]) -> float:
        return selection.removed_share([g.keep for g in groups], [len(g.bns) for g in groups])


def _numpy_state(model: nn.Layer, keys) -> Dict[str, np.ndarray]:
    sd = model.state_dict()
    return {k: sd[k].numpy() for k in keys}


def prune_settings(settings: Optional[PruneConfig] = None, **changes) -> PruneConfig:
    """``settings`` (default: the ``prune:`` section's defaults) with ``changes`` (its fields:
    ratio, threshold, min_channels, ...), checked; bad ones are a ``PruneError``."""
    try:
        return dataclasses.replace(settings or PruneConfig(), **changes)
    except SettingError as e:
        raise PruneError(str(e)) from None


def prune_model(model: nn.Layer, meta, settings: Optional[PruneConfig] = None, *, trace_size: int = 64,
                build: Optional[Callable] = None, pruner: Optional["ChannelPruner"] = None,
                **changes) -> PruneResult:
    """Prune ``model`` (modified in place; use the returned ``result.model``).

    ``settings`` (a ``PruneConfig``, e.g. ``PruneConfig.of(cfg)``) with ``changes`` to its
    fields (``ratio=0.5, min_channels=4``): a threshold wins over the ratio (a share of
    prunable channels removed, counted after the ``min_channels`` floors and ``round_to``:
    see ``threshold_for_share``). ``meta`` (ModelMeta) is needed to rebuild the narrower
    model from the pruned shapes. A criterion other than bn_scale(_per_flop) removes
    ``ratio`` of every layer (their scores do not compare across layers, so a global
    threshold would not mean anything).
    ``pruner``: a ``ChannelPruner`` already built on this model (the graph analysis takes
    seconds); ``undo_pruning(model)`` puts the model back afterwards if it is to be reused.
    """
    from ..model import build_model
    from .compensate import fold_removed_channels

    cut = prune_settings(settings, **changes)
    build = build or build_model
    net = unwrap(model)
    net.eval()
    keys = list(net.state_dict().keys())
    before = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    if pruner is None:
        pruner = ChannelPruner(net, trace_size=trace_size, criterion=cut.criterion)
    elif pruner.net is not net:
        raise PruneError("the pruner given was built on another model")
    else:
        pruner.criterion = cut.criterion
    scores = pruner.all_scores()[0]
    comparable = importance(cut.criterion).comparable
    if cut.threshold is not None and not comparable:
        raise PruneError(f"a threshold is a score value of a criterion that compares across layers "
                         f"(bn_scale, bn_scale_per_flop), not {cut.criterion}; give a ratio instead")
    try:
        policy = cut.policy("global" if comparable else "uniform")
    except SelectionError as e:
        raise PruneError(str(e)) from None
    threshold = pruner.apply_policy(policy)
    if cut.requested_ratio is not None and comparable:
        reached = PruneResult.share_of(pruner.groups)
        if reached < cut.ratio - 1e-9:
            _logger.warning("prune ratio %.3f is out of reach with min_channels=%d, "
                            "round_to=%d: every layer is cut to its floor, removing %.3f",
                            cut.ratio, cut.min_channels, cut.round_to, reached)
    plan = pruner.make_plan()
    comp = fold_removed_channels(net, plan, enabled=cut.compensate, img_size=trace_size)
    with quiet_paddleslim():
        plan.apply(net, lazy=False)
    state = _numpy_state(net, keys)
    after = {k: tuple(v.shape) for k, v in state.items()}
    for k in keys:    # Detect's outputs are never cut (PaddleSlim treats them as leaves)
        if k.startswith(f"model.{len(net.resolved) - 1}.m.") and after[k][0] != before[k][0]:
            raise PruneError(f"{k}: Detect's outputs were pruned ({before[k]} -> {after[k]})")
    try:
        pruned = build(meta, state)
    except ValueError as e:
        raise PruneError(f"the pruned weights do not make a consistent network: {e}") from None
    pruned.eval()
    check_forward(pruned, trace_size)
    return PruneResult(pruned, state, None if threshold is None else float(threshold),
                       cut.requested_ratio,
                       [dataclasses.replace(g) for g in pruner.groups],   # the pruner may be reused
                       scores, comp, before, after)


def undo_pruning(model: nn.Layer) -> None:
    """Put back every parameter PaddleSlim pruned in place: its plans keep the original
    values as ``*_backup`` buffers, and any plan restores all of them."""
    PruningPlan().restore(unwrap(model))


def check_forward(model: nn.Layer, img_size: int = 64) -> None:
    """Run the model once in eval mode (train mode would move BN statistics) and check
    the output shape."""
    net = unwrap(model)
    was_training = net.training
    x = paddle.zeros([1, 3, img_size, img_size])
    try:
        with paddle.no_grad():
            net.eval()
            y = net(x)
            n = sum((img_size // s) ** 2 for s in net.detect.stride) * net.detect.na
            if list(y.shape) != [1, n, net.detect.no]:
                raise PruneError(f"pruned model gives {list(y.shape)}, expected {[1, n, net.detect.no]}")
    finally:
        net.train() if was_training else net.eval()

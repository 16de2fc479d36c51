"""Channel selection: from per-group channel scores and a policy to keep-masks. Pure NumPy.

A *group* is the set of output channels one pruning collection shares (``ChannelGroup``); a
tied group (a residual add) holds several BN layers, and a channel of it counts once per
layer in every share. Policies, as in Torch-Pruning's ranking kept apart from importance:

* ``global``: one score threshold over every prunable channel (network slimming); asked for
  a share, the lowest threshold that removes it once floors and rounding kept theirs.
* ``uniform``: the same share removed from every group (for scores that do not compare
  across layers: l1_norm, fpgm).

Every group keeps at least ``min_channels`` (its best ones), and kept counts round up to a
multiple of ``round_to``. ``PruneConfig`` is the ``prune:`` config section these come from.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..settings import AT_LEAST_0, AT_LEAST_1, BELOW_1, Section, SettingError, section, setting
from .importance import IMPORTANCE


class SelectionError(ValueError):
    pass


@section("prune")
class PruneConfig(Section):
    ratio: float = setting(0.875, BELOW_1)          # share of prunable channels removed (0.875: 8x fewer)
    threshold: Optional[float] = setting(None, AT_LEAST_0, float)   # or a score threshold: wins over ratio
    min_channels: int = setting(8, AT_LEAST_1)      # floor per layer, never zero
    round_to: int = setting(1, AT_LEAST_1)          # round kept counts up to a multiple (8 for tensor cores)
    compensate: bool = setting(True)                # fold removed channels' constant SiLU(beta) into consumers
    # an importance function (importance.py); criteria registered later count too
    criterion: str = setting("bn_scale", (lambda v: v in IMPORTANCE, lambda: "one of " + ", ".join(IMPORTANCE)))
    # progressive (slim/progressive.py): cut at these shares of the original channels in turn,
    # e.g. [0.5, 0.75, 0.875], training step_epochs after each cut but the last; null: one cut
    steps: Optional[List[float]] = setting(None, (lambda v: len(v) > 0 and all(0 < x < 1 for x in v)
                                                  and all(b > a for a, b in zip(v, v[1:])),
                                                  "rising shares in (0, 1)"), list)
    step_epochs: int = setting(2, AT_LEAST_1)

    def check(self) -> None:
        if self.steps and self.threshold is not None:
            raise SettingError("prune.steps cuts by shares of the channels: it cannot be used with "
                               f"prune.threshold ({self.threshold}); set one of them to null")

    @property
    def requested_ratio(self) -> Optional[float]:
        """The share asked for, or None when a threshold is given: the one place where a
        threshold wins over the ratio."""
        return self.ratio if self.threshold is None else None

    def policy(self, mode: str = "global") -> "Policy":
        return Policy(mode=mode, ratio=self.requested_ratio, threshold=self.threshold,
                      min_channels=self.min_channels, round_to=self.round_to)


@dataclass(frozen=True)
class Policy:
    """How to select; the defaults are neutral (no floor, no rounding): the configured values
    come from ``PruneConfig.policy``."""
    mode: str = "global"              # global or uniform
    ratio: Optional[float] = None     # share of prunable channels removed
    threshold: Optional[float] = None  # global mode: a score threshold (used when given)
    min_channels: int = 1
    round_to: int = 1

    def __post_init__(self):
        if self.mode not in ("global", "uniform"):
            raise SelectionError(f"selection mode must be global or uniform, got {self.mode!r}")
        if self.min_channels < 1:
            raise SelectionError(f"min_channels must be >= 1 (a layer with no channel breaks the "
                                 f"network), got {self.min_channels}")
        if self.round_to < 1:
            raise SelectionError(f"round_to must be >= 1, got {self.round_to}")
        if self.threshold is None and self.ratio is None:
            raise SelectionError("give a prune ratio or a threshold")
        if self.ratio is not None and not 0.0 <= self.ratio < 1.0:
            raise SelectionError(f"prune ratio must be in [0, 1), got {self.ratio}")
        if self.threshold is not None:
            if self.mode != "global":
                raise SelectionError("a threshold is a score value: it needs the global policy; "
                                     "give a ratio instead")
            if not np.isfinite(self.threshold) or self.threshold < 0:
                raise SelectionError(f"threshold must be a finite score >= 0, got {self.threshold}")


def kept_count(n_keep: int, channels: int, min_channels: int, round_to: int) -> int:
    n = max(n_keep, min(min_channels, channels))
    if round_to > 1:
        n = int(np.ceil(n / round_to) * round_to)
    return int(min(max(n, 1), channels))


def mask_top(scores: np.ndarray, n_keep: int) -> np.ndarray:
    """Keep the ``n_keep`` highest scores (ties: the earlier channel)."""
    order = np.argsort(-scores, kind="stable")
    keep = np.zeros(scores.size, dtype=bool)
    keep[order[:n_keep]] = True
    return keep


def _f64(scores: Sequence[np.ndarray]) -> List[np.ndarray]:
    """Scores in float64: a threshold just above a float32 score (``np.nextafter``) must not
    round back onto it when compared."""
    return [np.asarray(s, dtype=np.float64) for s in scores]


def masks_at_threshold(scores: Sequence[np.ndarray], threshold: float, min_channels: int,
                       round_to: int) -> List[np.ndarray]:
    scores = _f64(scores)
    return [mask_top(s, kept_count(int((s >= threshold).sum()), s.size, min_channels, round_to))
            for s in scores]


def removed_share(masks: Sequence[np.ndarray], layers: Sequence[int]) -> float:
    """Share of all prunable channels (a tied channel once per layer) the masks remove."""
    tot = sum(m.size * n for m, n in zip(masks, layers))
    gone = sum(int((~m).sum()) * n for m, n in zip(masks, layers))
    return gone / max(tot, 1)


def share_at_threshold(scores, layers, threshold, min_channels, round_to) -> float:
    scores = _f64(scores)
    tot = gone = 0
    for s, n in zip(scores, layers):
        k = kept_count(int((s >= threshold).sum()), s.size, min_channels, round_to)
        tot += s.size * n
        gone += (s.size - k) * n
    return gone / max(tot, 1)


def percentile_threshold(scores: Sequence[np.ndarray], layers: Sequence[int], ratio: float) -> float:
    """The score below which ``ratio`` of all prunable channels lie (floors ignored)."""
    scores = _f64(scores)
    s = np.sort(np.concatenate([np.tile(x, n) for x, n in zip(scores, layers)]))
    k = int(np.floor(ratio * s.size))
    return float(s[k]) if k > 0 else 0.0


def threshold_for_share(scores: Sequence[np.ndarray], layers: Sequence[int], ratio: float,
                        min_channels: int, round_to: int) -> Tuple[float, float]:
    """(threshold, share it removes): the lowest threshold that removes at least ``ratio`` of
    all prunable channels once floors and rounding have kept theirs (the plain percentile
    removes less as soon as a floor binds). If floors make ``ratio`` unreachable, every group
    is cut to its floor and the share reached is returned."""
    if ratio == 0.0:
        return 0.0, 0.0
    scores = _f64(scores)
    cand = np.unique(np.concatenate(list(scores)))
    cand = np.append(cand, np.nextafter(cand[-1], np.inf))   # above all: floors only
    at = lambda t: share_at_threshold(scores, layers, t, min_channels, round_to)  # noqa: E731
    lo = int(np.searchsorted(cand, percentile_threshold(scores, layers, ratio)))
    hi = len(cand) - 1
    if at(cand[hi]) < ratio:
        return float(cand[hi]), at(cand[hi])
    while lo < hi:                     # the share removed grows with the threshold
        mid = (lo + hi) // 2
        if at(cand[mid]) >= ratio:
            hi = mid
        else:
            lo = mid + 1
    return float(cand[lo]), at(cand[lo])


def select(scores: Sequence[np.ndarray], layers: Sequence[int], policy: Policy
           ) -> Tuple[List[np.ndarray], Optional[float]]:
    """(keep-mask per group, the threshold used: None for the uniform policy)."""
    scores = _f64(scores)
    if policy.mode == "uniform":
        masks = [mask_top(s, kept_count(s.size - int(np.floor(policy.ratio * s.size)), s.size,
                                        policy.min_channels, policy.round_to)) for s in scores]
        return masks, None
    t = policy.threshold
    if t is None:
        t, _ = threshold_for_share(scores, layers, policy.ratio, policy.min_channels, policy.round_to)
    return masks_at_threshold(scores, t, policy.min_channels, policy.round_to), float(t)

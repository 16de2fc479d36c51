"""The ``sparsity:`` config section (sparsity.py uses it). Apart from sparsity.py so that
composing a config imports no paddle."""
from __future__ import annotations

from typing import List, Optional

from ..settings import AT_LEAST_0, AT_LEAST_1, BELOW_1, SHARE, Section, one_of, section, setting

SCHEDULES = ("constant", "linear", "cosine")
METHODS = ("subgradient", "proximal", "gradual")


@section("sparsity")
class SparsityConfig(Section):
    enabled: bool = setting(False)
    method: str = setting("subgradient", one_of(*METHODS))   # sparsity.py's docstring compares them
    # s: subgradient s*sign(gamma); proximal: |gamma| shrinks lr_t*s a step
    rate: float = setting(1.0e-4, AT_LEAST_0)
    schedule: str = setting("constant", one_of(*SCHEDULES))   # linear, cosine: to final_rate
    final_rate: float = setting(1.0e-5, AT_LEAST_0)
    exclude_detect_inputs: bool = setting(True)     # the BNs feeding Detect keep no penalty
    # rate for BNs inside residual bottlenecks (None: same rate)
    bottleneck_rate: Optional[float] = setting(None, AT_LEAST_0, float)
    flop_weighted: bool = setting(False)    # weight each BN's penalty (gradual: its ranking) by a channel's FLOPs
    # gradual: share of channels held at zero at the end (None: prune.ratio)
    target_ratio: Optional[float] = setting(None, BELOW_1, float)
    ramp: float = setting(0.6, SHARE)       # gradual: share of the epochs over which that share grows (cubic)
    interval: int = setting(5, AT_LEAST_1)  # gradual: optimizer steps between re-selections
    # gradual: global (one threshold, as the cut) or uniform (the share per layer)
    selection: str = setting("global", one_of("global", "uniform"))
    # gradual, progressive: shares held in turn, e.g. [0.5, 0.75, 0.875]
    steps: Optional[List[float]] = setting(None, (lambda v: len(v) > 0 and all(0 <= x < 1 for x in v),
                                                  "shares in [0, 1)"), list)

    def target(self, prune_ratio: float) -> float:
        """The share the gradual method holds at zero at the end: its own, or the cut's."""
        return self.target_ratio if self.target_ratio is not None else prune_ratio

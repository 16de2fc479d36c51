"""Which layers hurt when cut: PaddleSlim's ``FilterPruner.sensitive()`` with our pruner.

For every collection (a layer, or a residual-tied chain of layers) PaddleSlim prunes 10%,
20%, ... 90% of its channels (lowest |gamma| first, via our ``cal_mask``), evaluates, and
restores the weights. The loss it records is ``(baseline - metric) / (baseline + 1e-3)``:
0 means harmless, 1 means the metric is gone. ``eval_fn(model) -> float`` is pluggable:
the tool passes mAP@0.5:0.95 on a slice of val; tests pass a cheap stand-in.

The cuts here are PaddleSlim's plain ones, without ``compensate.py``'s fold (PaddleSlim
restores only the tensors it cut, and the fold edits the consumers' BN statistics), so
for layers with a large beta the loss shown is a little worse than the real prune's.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Callable, Dict, Iterable, Optional

import numpy as np
import paddle.nn as nn

from .pruner import ChannelPruner, quiet_paddleslim, undo_pruning
from .report import _save_fig, write_json
from ..utils.layers import unwrap

from paddleslim.dygraph.prune.filter_pruner import Status  # noqa: E402  (.pruner imported paddleslim)


def layer_matches(layer: str, name: str) -> bool:
    """``layer`` is ``name`` or lies inside it: model.2 holds model.2.cv1, not model.20."""
    return layer == name or layer.startswith(name + ".")


def select_groups(groups, layers: Iterable[str]) -> list:
    """The collections with a conv that is, or lies inside, one of ``layers``."""
    names = [n.rstrip(".") for n in layers]
    out = [g for g in groups
           if any(layer_matches(c, n) for c in [g.label.split(" ")[0], *g.convs] for n in names)]
    if not out:
        raise ValueError(f"no prunable layer is or lies inside {names} (layer names look like "
                         f"{groups[0].label.split(' ')[0] if groups else 'model.2.cv1'})")
    return out


def sensitivity(model: nn.Layer, eval_fn: Callable[[nn.Layer], float], *, trace_size: int = 64,
                layers: Optional[Iterable[str]] = None, metric: str = "metric",
                progress: Optional[Callable[[str], None]] = None,
                pruner: Optional[ChannelPruner] = None) -> Dict[str, Any]:
    """Sensitivity of each collection. ``layers``: only collections with a conv that is or
    lies inside one of these layers (``["model.2", "model.9"]``: not model.20, model.21). The model's weights
    are restored afterwards."""
    net = unwrap(model)
    if pruner is None:
        pruner = ChannelPruner(net, trace_size=trace_size)
    elif pruner.net is not net:
        raise ValueError("the pruner given was built on another model")
    pruner.criterion, pruner.min_channels, pruner.round_to = "bn_scale", 1, 1
    pruner.clear_threshold()
    pruner._status = Status()        # PaddleSlim caches finished results per pruner; start afresh
    wanted = None
    if layers is not None:
        wanted = [g.master for g in select_groups(pruner.groups, layers)]
    calls = {"n": 0, "baseline": None}

    def evaluate():
        net.eval()
        v = float(eval_fn(net))
        if calls["baseline"] is None:
            calls["baseline"] = v
        calls["n"] += 1
        if progress and calls["n"] % 9 == 1:
            progress(f"sensitivity: {calls['n']} evaluations")
        return v

    tmp = tempfile.mkdtemp(prefix="ppyolo_slim_sens_")
    try:
        with quiet_paddleslim():
            raw = pruner.sensitive(eval_func=evaluate, sen_file=os.path.join(tmp, "status.pkl"),
                                   target_vars=wanted, skip_vars=[])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        # a plan restores every parameter that has a backup buffer, whatever its own masks:
        # this undoes a half-done step if eval_fn raised
        undo_pruning(net)
    by_master = {g.master: g for g in pruner.groups}
    out: Dict[str, Any] = {"metric": metric, "baseline": calls["baseline"], "evaluations": calls["n"],
                           "loss": "(baseline - metric) / (baseline + 1e-3), PaddleSlim's definition",
                           "layers": {}}
    for master, losses in raw.items():
        g = by_master[master]
        out["layers"][g.label] = {"layers": g.convs, "channels": g.channels,
                                  "loss": {f"{float(r):.1f}": float(v) for r, v in sorted(losses.items())}}
    return out


def plot_sensitivity(sens: Dict[str, Any], path: str) -> None:
    """A heat map: layers down, pruned share across, colour = relative metric loss."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    names = list(sens["layers"])
    if not names:
        raise ValueError("no sensitivities to plot")
    ratios = sorted({r for v in sens["layers"].values() for r in v["loss"]}, key=float)
    grid = np.array([[sens["layers"][n]["loss"].get(r, np.nan) for r in ratios] for n in names])
    fig, ax = plt.subplots(figsize=(7, max(3, 0.22 * len(names) + 1)))
    im = ax.imshow(grid, aspect="auto", cmap="magma_r", vmin=min(0.0, np.nanmin(grid)),
                   vmax=max(1e-6, np.nanmax(grid)))
    ax.set_xticks(range(len(ratios)))
    ax.set_xticklabels(ratios)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels([n.replace("model.", "") for n in names], fontsize=7)
    ax.set_xlabel("share of the layer's channels pruned")
    metric = {"map50_95": "mAP@0.5:0.95", "map50": "mAP@0.5"}.get(sens.get("metric"), sens.get("metric", "metric"))
    fig.colorbar(im, ax=ax, label=f"relative loss of {metric}")
    base = sens.get("baseline")
    ax.set_title(f"sensitivity of each layer (baseline {metric} = "
                 f"{'n/a' if base is None else format(base, '.4f')})", fontsize=9)
    fig.tight_layout()
    _save_fig(fig, path)


def write_sensitivity(sens: Dict[str, Any], out_dir: str) -> Dict[str, str]:
    paths = {"json": os.path.join(out_dir, "sensitivity.json"),
             "plot": os.path.join(out_dir, "sensitivity.png")}
    write_json(paths["json"], sens)
    plot_sensitivity(sens, paths["plot"])
    return paths

"""What pruning did, for people: prune_report.json, a printed table, plots, VisualDL.

Parameters are counted as ultralytics does (trainable only: conv weights and biases, BN
scale and shift; Paddle also lists BN running statistics). FLOPs come
from ``ppyolo_slim.model.flops``: forward hooks on every Conv2D, 2 x multiply-accumulates,
BN folded (the ultralytics/thop convention: 4.5 GFLOPs for YOLOv5n at 640).
"""
from __future__ import annotations

import glob
import io
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..utils.io import atomic_write_bytes, write_json as _write_json

_STATS = ("_mean", "_variance")


def count_params(shapes: Mapping[str, Sequence[int]]) -> int:
    """Trainable parameters from state-dict shapes (BN running statistics left out)."""
    return int(sum(int(np.prod(s)) for k, s in shapes.items() if not k.endswith(_STATS)))


def layer_rows(before: Mapping[str, Sequence[int]], after: Mapping[str, Sequence[int]]) -> List[Dict[str, Any]]:
    """One row per conv: output and input channels before and after."""
    rows = []
    for k, b in before.items():
        if len(b) != 4 or not k.endswith("weight"):
            continue
        a = after[k]
        name = k[:-len(".conv.weight")] if k.endswith(".conv.weight") else k[:-len(".weight")]
        rows.append({"name": name, "out_before": int(b[0]), "out_after": int(a[0]),
                     "in_before": int(b[1]), "in_after": int(a[1]), "kernel": int(b[2])})
    return rows


def build_report(result, *, source: str, settings: Mapping[str, Any],
                 flops_before: Mapping[int, float], flops_after: Mapping[int, float],
                 metrics_before: Optional[Mapping[str, Any]] = None,
                 metrics_after: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    pb, pa = count_params(result.before), count_params(result.after)
    rows = layer_rows(result.before, result.after)
    ch_b = sum(g.channels * len(g.bns) for g in result.groups)
    ch_a = sum(int(g.keep.sum()) * len(g.bns) for g in result.groups)
    rep: Dict[str, Any] = {
        "source": source,
        "settings": dict(settings),
        "threshold": result.threshold,
        "ratio_requested": result.ratio,
        "channels": {"before": ch_b, "after": ch_a, "removed_share": 1 - ch_a / max(ch_b, 1),
                     "note": "BN channels of all prunable layers (a residual-tied channel counts "
                             "once per layer that holds it)"},
        "params": {"before": pb, "after": pa, "removed_share": 1 - pa / max(pb, 1)},
        "flops": {"counter": "ppyolo_slim.model.flops: Conv2D forward hooks, 2 x MACs, BN folded",
                  "gflops_before": {str(k): v for k, v in flops_before.items()},
                  "gflops_after": {str(k): v for k, v in flops_after.items()},
                  "removed_share": {str(k): 1 - flops_after[k] / max(flops_before[k], 1e-12)
                                    for k in flops_before}},
        "layers": rows,
        "groups": [{"label": g.label, "layers": g.convs, "channels": g.channels,
                    "kept": int(g.keep.sum()), "consumers": g.consumers,
                    "max_score_removed": float(g.scores[~g.keep].max()) if (~g.keep).any() else None,
                    "min_score_kept": float(g.scores[g.keep].min())}
                   for g in result.groups],
        "compensation": result.compensation,
    }
    if metrics_before is not None or metrics_after is not None:
        rep["metrics"] = {"before": _plain(metrics_before), "after_prune": _plain(metrics_after)}
    return rep


def _plain(m):
    if m is None:
        return None
    return {k: (float(v) if isinstance(v, (int, float, np.floating, np.integer)) else v)
            for k, v in m.items() if isinstance(v, (int, float, str, np.floating, np.integer, dict))}


def write_json(path: str, obj: Any) -> None:
    _write_json(path, obj, indent=2)


def format_table(rep: Mapping[str, Any]) -> str:
    """The per-layer table and the totals, as users read them in a terminal."""
    lines = [f"{'layer':<22}{'k':>3}{'out before':>12}{'out after':>11}{'in before':>11}{'in after':>10}"]
    for r in rep["layers"]:
        lines.append(f"{r['name']:<22}{r['kernel']:>3}{r['out_before']:>12}{r['out_after']:>11}"
                     f"{r['in_before']:>11}{r['in_after']:>10}")
    p, c, f = rep["params"], rep["channels"], rep["flops"]
    thr = rep["threshold"]
    lines.append("")
    lines.append(f"threshold |gamma| {thr:.4g}" if thr is not None
                 else f"per-layer ratio ({rep['settings'].get('criterion')})")
    lines.append(f"channels   {c['before']:>10,} -> {c['after']:>10,}  ({c['removed_share']:.1%} removed)")
    lines.append(f"parameters {p['before']:>10,} -> {p['after']:>10,}  ({p['removed_share']:.1%} removed)")
    for s, b in f["gflops_before"].items():
        a = f["gflops_after"][s]
        lines.append(f"GFLOPs@{s:<4}{b:>10.3f} -> {a:>10.3f}  ({f['removed_share'][s]:.1%} removed)")
    m = rep.get("metrics")
    if m and m.get("before") and m.get("after_prune"):
        for k in ("map50_95", "map50"):
            if isinstance(m["before"].get(k), float) and isinstance(m["after_prune"].get(k), float):
                lines.append(f"{k:<11}{m['before'][k]:>10.4f} -> {m['after_prune'][k]:>10.4f}  "
                             f"(before fine-tuning)")
    return "\n".join(lines)


def plot_gamma_histogram(scores: np.ndarray, threshold: Optional[float], path: str,
                         title: str = "|gamma| of prunable channels") -> None:
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    s = np.asarray(scores, dtype=np.float64)
    axes[0].hist(s, bins=100, color="#4477aa")
    axes[0].set_xlabel("|gamma|")
    axes[0].set_ylabel("channels")
    axes[0].set_yscale("log")
    floor = max(float(s[s > 0].min()) if (s > 0).any() else 1e-8, 1e-8)
    # exact zeros have no log: left out and counted (clamped to the smallest nonzero they drew
    # one tall bar there, which read as thousands of channels at that |gamma|)
    zeros = int((s <= 0).sum())
    axes[1].hist(np.log10(s[s > 0]) if zeros < s.size else [], bins=100, color="#4477aa")
    axes[1].set_xlabel("log10 |gamma|" + (f" ({zeros:,} exact zeros not shown)" if zeros else ""))
    axes[1].set_ylabel("channels")
    from matplotlib.ticker import MaxNLocator
    for ax, t in ((axes[0], threshold), (axes[1], None if threshold is None else np.log10(max(threshold, floor)))):
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6))     # a narrow span's ticks ran together
        if t is not None:
            ax.axvline(t, color="#cc3311", lw=1.5, label=f"threshold {threshold:.4g}")
            ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    _save_fig(fig, path)


def plot_layers(rep: Mapping[str, Any], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    rows = rep["layers"]
    names = [r["name"].replace("model.", "") for r in rows]
    kept = np.array([r["out_after"] for r in rows])
    gone = np.array([r["out_before"] - r["out_after"] for r in rows])
    fig, ax = plt.subplots(figsize=(max(8, 0.22 * len(rows)), 4.5))
    x = np.arange(len(rows))
    ax.bar(x, kept, color="#228833", label="kept")
    ax.bar(x, gone, bottom=kept, color="#bbbbbb", label="removed")
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=90, fontsize=7)
    ax.set_ylabel("output channels")
    ax.set_title("channels kept / removed per conv")
    ax.legend()
    fig.tight_layout()
    _save_fig(fig, path)


def _save_fig(fig, path: str) -> None:
    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.savefig(buf, format=os.path.splitext(path)[1][1:] or "png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def find_visualdl_logdir(weights: str, depth: int = 2) -> Optional[str]:
    """The folder holding the VisualDL log of the run that wrote ``weights`` (its folder or a
    subfolder up to ``depth`` levels), or None."""
    root = os.path.dirname(os.path.abspath(weights))
    for d in range(depth + 1):
        pat = os.path.join(root, *(["*"] * d), "vdlrecords*")
        hits = sorted(p for p in glob.glob(pat) if os.path.isfile(p)
                      and os.sep + "prune" + os.sep not in p[len(root):])
        if hits:
            return os.path.dirname(hits[-1])
    return None


def write_visualdl(rep: Mapping[str, Any], logdir: str, scores: Optional[np.ndarray] = None,
                   images: Sequence[str] = ()) -> str:
    """Write the pruning summary as its own run ``<logdir>/prune``. VisualDL shows one log
    file per folder (the newest), so writing into the training run's own folder would hide
    the training curves."""
    from visualdl import LogWriter
    run = os.path.join(logdir, "prune")
    with LogWriter(logdir=run) as w:
        w.add_scalar("prune/params_before", rep["params"]["before"], 0)
        w.add_scalar("prune/params_after", rep["params"]["after"], 0)
        w.add_scalar("prune/channels_removed_share", rep["channels"]["removed_share"], 0)
        for s, v in rep["flops"]["gflops_before"].items():
            w.add_scalar(f"prune/gflops{s}_before", v, 0)
            w.add_scalar(f"prune/gflops{s}_after", rep["flops"]["gflops_after"][s], 0)
        if rep["threshold"] is not None:
            w.add_scalar("prune/threshold", rep["threshold"], 0)
        w.add_text("prune/summary", "```\n" + format_table(rep) + "\n```", 0)
        if scores is not None and len(scores):
            w.add_histogram("prune/abs_gamma", np.asarray(scores, dtype=np.float32), 0)
        for p in images:
            import matplotlib.image as mpimg
            img = mpimg.imread(p)
            img = (img[..., :3] * 255).astype(np.uint8) if img.dtype != np.uint8 else img[..., :3]
            w.add_image(f"prune/{os.path.splitext(os.path.basename(p))[0]}", img, 0)
    return run

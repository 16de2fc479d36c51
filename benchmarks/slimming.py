"""The slimming trade-off: what each channel cut costs in accuracy and buys in size.

On the embedded shapes set (or --data), for a sparse-trained checkpoint (L1 on BN scales)
and a dense one (same recipe, sparsity off), each cut of the prunable channels, 1x (none),
2x, 4x and 8x (ratios 0, 0.5, 0.75, 0.875), is made with each criterion:

* bn_scale: ours, |gamma| of the BN after each conv, one global threshold (network slimming)
* l1_norm:  PaddleSlim's L1NormFilterPruner criterion (filter L1 norm, same ratio per layer)
* fpgm:     PaddleSlim's FPGMFilterPruner criterion (geometric median, same ratio per layer)

and each pruned model is scored (pycocotools mAP@0.5:0.95 and mAP@0.5) right after pruning
and after fine-tuning (configs/finetune.yml for --finetune-epochs). The 1x model is
fine-tuned for the same epochs, so every row had the same extra training. Parameters and
GFLOPs for each, a JSON table and a plot of mAP against GFLOPs.

    python benchmarks/slimming.py --train-epochs 30 --finetune-epochs 15   # trains both checkpoints
    python benchmarks/slimming.py --sparse output/sparse/best.pdparams --dense output/dense/best.pdparams
    python benchmarks/slimming.py --quick       # 16 tiny images, 64 px, 1 epoch everywhere

Long on a CPU (one fine-tune per cell: 2 sources x (1 + 3 cuts x 3 criteria) = 20 by
default; narrow it with --sources/--criteria/--criteria-ratios). Finished cells are kept
in the work folder and skipped on a rerun (--fresh starts over).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

import ppyolo_slim  # noqa: E402,F401  (import order: before paddle)

CUT_NAMES = {0.0: "1x", 0.5: "2x", 0.75: "4x", 0.875: "8x"}


def cut_name(r: float) -> str:
    return CUT_NAMES.get(r, f"{1 / (1 - r):.3g}x" if r < 1 else "?")


def model_size(model, img_size: int):
    from ppyolo_slim.model.flops import gflops
    from ppyolo_slim.model.yolo import count_parameters
    return {"params": count_parameters(model), f"gflops_{img_size}": gflops(model, img_size),
            "gflops_640": gflops(model, 640)}


def train_checkpoint(kind: str, config: str, overrides, epochs, work: str, fresh: bool, progress: bool) -> str:
    """Sparse (the config as is) or dense (sparsity.enabled=false) training; returns best weights."""
    from ppyolo_slim.config import load_config
    from ppyolo_slim.engine.trainer import train
    out = os.path.join(work, f"train_{kind}")
    done = os.path.join(out, "results.json")
    if os.path.isfile(done) and not fresh:
        with open(done) as f:
            summary = json.load(f)
        print(f"{kind}: reusing {out} (trained before; --fresh retrains)", flush=True)
    else:
        shutil.rmtree(out, ignore_errors=True)
        ov = list(overrides) + [f"output_dir={out}", "log.visualdl=false"]
        ov += [f"epochs={epochs}"] if epochs else []
        ov += ["sparsity.enabled=false"] if kind == "dense" else []
        cfg = load_config(config, ov)
        t = time.time()
        print(f"{kind}: training {cfg['epochs']} epochs ({config}, {' '.join(ov)})", flush=True)
        summary = train(cfg, progress=progress)
        print(f"{kind}: trained in {time.time() - t:.0f} s", flush=True)
    best = summary.get("best")
    return best if best and os.path.isfile(best) else summary["last"]


def _training_record(weights: str) -> dict:
    """How a checkpoint was trained, from the results.json and config.yml the trainer wrote beside it."""
    folder = os.path.dirname(weights)
    rec = {}
    try:
        with open(os.path.join(folder, "results.json")) as f:
            res = json.load(f)
        rec = {k: res.get(k) for k in ("epochs", "train_s", "best_fitness")}
        import yaml
        with open(os.path.join(folder, "config.yml")) as f:
            cfg = yaml.safe_load(f)
        rec.update({"sparsity": cfg.get("sparsity"), "img_size": cfg.get("img_size"),
                    "optimizer": cfg.get("optimizer"), "threads": cfg.get("threads")})
    except (OSError, ValueError, AttributeError):
        pass        # weights from elsewhere: the path alone is recorded
    return rec


def run_cell(source: str, weights: str, criterion: str, ratio: float, a, overrides, cell_dir: str,
             evaluator) -> dict:
    """Prune (unless ratio 0), score, fine-tune, score again."""
    from ppyolo_slim.config import load_config
    from ppyolo_slim.engine.trainer import train
    from ppyolo_slim.model import ModelMeta, model_from_weights, save_weights
    from ppyolo_slim.slim import prune_model
    from ppyolo_slim.slim.selection import PruneConfig
    t0 = time.time()
    os.makedirs(cell_dir, exist_ok=True)
    model, meta = model_from_weights(weights)
    model.eval()
    pcfg = PruneConfig.of(load_config(a.finetune_config, overrides))
    row = {"source": source, "criterion": criterion if ratio > 0 else "none", "ratio": ratio,
           "cut": cut_name(ratio), "weights_in": weights}
    if ratio > 0:
        res = prune_model(model, meta, pcfg, ratio=ratio, threshold=None, criterion=criterion)
        model = res.model
        row["removed_share"] = float(res.removed_share)
        pruned = os.path.join(cell_dir, "pruned.pdparams")
        m = ModelMeta.from_dict(meta.to_dict())
        m.made_by = {"stage": "prune", "tool": "benchmarks/slimming.py", "ratio": ratio, "criterion": criterion,
                     "source": weights}
        save_weights(pruned, res.state, m)
    else:
        row["removed_share"] = 0.0
        pruned = weights
    row.update(model_size(model, a.img_size))
    after = evaluator(model)
    row["after_prune"] = {"map50_95": float(after["map50_95"]), "map50": float(after["map50"])}
    del model
    ft_out = os.path.join(cell_dir, "finetune")
    cfg = load_config(a.finetune_config, list(overrides) + [
        f"weights={pruned}", f"epochs={a.finetune_epochs}", f"output_dir={ft_out}", "log.visualdl=false",
        f"eval.interval={a.finetune_epochs}"])
    summary = train(cfg, progress=a.progress)
    last = [h for h in summary["history"] if "map50_95" in h][-1]
    row["after_finetune"] = {"map50_95": float(last["map50_95"]), "map50": float(last["map50"]),
                             "epochs": a.finetune_epochs}
    row["seconds"] = round(time.time() - t0, 1)
    return row


def plot(rows, img_size: int, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ppyolo_slim.utils.io import atomic_write_bytes
    import io
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    key = f"gflops_{img_size}"
    series = {}
    for r in rows:
        crits = [r["criterion"]] if r["criterion"] != "none" else sorted({x["criterion"] for x in rows} - {"none"})
        for c in crits:   # the 1x point starts every criterion's line
            series.setdefault((r["source"], c), []).append(r)
    colors = {"bn_scale": "tab:blue", "l1_norm": "tab:orange", "fpgm": "tab:green"}
    from ppyolo_slim.plots import place_labels, readable_log_axis
    marks = {0: [], 1: []}
    for n, (ax, metric, title) in enumerate(((axes[0], "map50_95", "mAP@0.5:0.95"), (axes[1], "map50", "mAP@0.5"))):
        for (src, crit), rs in sorted(series.items()):
            rs = sorted(rs, key=lambda r: r[key])
            x = [r[key] for r in rs]
            ls = "-" if src == "sparse" else "--"
            col = colors.get(crit, "tab:gray")
            ax.plot(x, [r["after_finetune"][metric] for r in rs], ls, marker="o", color=col,
                    label=f"{src}, {crit}: fine-tuned")
            ax.plot(x, [r["after_prune"][metric] for r in rs], ls, marker="o", mfc="none", color=col, alpha=0.45,
                    label=f"{src}, {crit}: just pruned")
            marks[n] += [(r[key], r["after_finetune"][metric], r["cut"], col) for r in rs
                         if r["criterion"] != "none" or crit == "bn_scale"]     # the shared 1x point once
        readable_log_axis(ax, [r[key] for r in rows])
        ax.set_xlabel(f"GFLOPs at {img_size} px (log)")
        ax.set_ylabel(title)
        ax.set_title(f"{title} against FLOPs")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    for n, ax in enumerate(axes):
        x, y, t, c = zip(*marks[n])
        place_labels(ax, x, y, t, colors=c, fontsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sparse", help="sparse-trained .pdparams (default: train it)")
    ap.add_argument("--dense", help="dense-trained .pdparams (default: train it, sparsity off)")
    ap.add_argument("--train-config", default="configs/sparse.yml")
    ap.add_argument("--finetune-config", default="configs/finetune.yml")
    ap.add_argument("--train-epochs", type=int, help="epochs for the checkpoints trained here (default: config)")
    ap.add_argument("--finetune-epochs", type=int, default=15)
    ap.add_argument("--ratios", default="0,0.5,0.75,0.875")
    ap.add_argument("--criteria", default="bn_scale,l1_norm,fpgm")
    ap.add_argument("--criteria-ratios", help="ratios at which the criteria other than bn_scale run "
                                              "(default: all of --ratios)")
    ap.add_argument("--sources", default="sparse,dense")
    ap.add_argument("-o", "--override", action="append", default=[],
                    help="config override for every stage, e.g. -o img_size=320")
    ap.add_argument("--work", default=os.path.join(C.WORK, "slimming"))
    ap.add_argument("--fresh", action="store_true", help="forget finished cells and trained checkpoints")
    ap.add_argument("--progress", action="store_true", help="training progress bars")
    ap.add_argument("--quick", action="store_true", help="smoke run: 16 train / 8 val images, 64 px, 1 epoch")
    a = ap.parse_args(argv)

    overrides = list(a.override)
    if a.quick:
        a.work = os.path.join(C.WORK, "quick", "slimming")
        from ppyolo_slim.data.shapes import generate_shapes
        data = generate_shapes(os.path.join(a.work, "shapes"), n_train=16, n_val=8, img_size=64, verbose=False)
        overrides = [f"data={data}", "img_size=64", "batch_size=8", "eval.batch_size=8",
                     "schedule.warmup_min_iters=0", "workers=0"] + overrides
        a.train_epochs, a.finetune_epochs = 1, 1
    from ppyolo_slim.config import load_config
    base = load_config(a.finetune_config, overrides)
    a.img_size = int(base["img_size"])
    ratios = [float(r) for r in a.ratios.split(",")]
    criteria = [c.strip() for c in a.criteria.split(",") if c.strip()]
    crit_ratios = [float(r) for r in a.criteria_ratios.split(",")] if a.criteria_ratios else ratios
    sources = [s.strip() for s in a.sources.split(",") if s.strip()]
    for s in sources:
        if s not in ("sparse", "dense"):
            ap.error(f"--sources: {s!r} is not sparse or dense")
    for c in criteria:
        if c not in ("bn_scale", "l1_norm", "fpgm"):
            ap.error(f"--criteria: {c!r} is not bn_scale, l1_norm or fpgm")
    if a.fresh:
        shutil.rmtree(os.path.join(a.work, "cells"), ignore_errors=True)

    cells = []
    for s in sources:
        for r in ratios:
            if r == 0:
                cells.append((s, "none", 0.0))
                continue
            for c in criteria:
                if c == "bn_scale" or any(abs(r - q) < 1e-9 for q in crit_ratios):
                    cells.append((s, c, r))
    print(f"{len(cells)} cells (each: prune, evaluate, fine-tune {a.finetune_epochs} epochs, evaluate)", flush=True)

    result = C.header("slimming", a.quick)
    result["settings"] = {"train_config": a.train_config, "finetune_config": a.finetune_config,
                          "overrides": overrides, "img_size": a.img_size, "data": base["data"],
                          "train_epochs": a.train_epochs, "finetune_epochs": a.finetune_epochs,
                          "prune": dict(base["prune"]), "ratios": ratios, "criteria": criteria,
                          "criteria_ratios": crit_ratios, "sources": sources}
    t0 = time.time()
    weights = {}
    for s in sources:
        given = a.sparse if s == "sparse" else a.dense
        weights[s] = os.path.abspath(given) if given else train_checkpoint(
            s, a.train_config, overrides, a.train_epochs, a.work, a.fresh, a.progress)
        if not os.path.isfile(weights[s]):
            ap.error(f"--{s} {weights[s]}: no such file")
    result["checkpoints"] = weights
    result["checkpoint_training"] = {s: _training_record(w) for s, w in weights.items()}

    from ppyolo_slim.slim import val_evaluator
    evaluator = val_evaluator(base)
    rows = []
    for (s, c, r) in cells:
        key = f"{s}_{c}_{r}"
        cell_dir = os.path.join(a.work, "cells", key)
        done = os.path.join(cell_dir, "row.json")
        if os.path.isfile(done):
            with open(done) as f:
                row = json.load(f)
            if row.get("weights_in") == weights[s]:
                rows.append(row)
                print(f"{key}: done before (kept)", flush=True)
                continue
        shutil.rmtree(cell_dir, ignore_errors=True)
        row = run_cell(s, weights[s], c, r, a, overrides, cell_dir, evaluator)
        from ppyolo_slim.utils.io import write_json
        write_json(done, row)
        rows.append(row)
        print(f"{key}: {row['params']:,} params, {row['gflops_%d' % a.img_size]:.3f} GFLOPs; mAP@.5:.95 "
              f"{row['after_prune']['map50_95']:.4f} pruned -> {row['after_finetune']['map50_95']:.4f} "
              f"fine-tuned ({row['seconds']:.0f} s)", flush=True)

    result["rows"] = rows
    result["seconds"] = round(time.time() - t0, 1)     # this invocation (cells done before are reused)
    result["cell_seconds_total"] = round(sum(r.get("seconds", 0.0) for r in rows), 1)
    png = os.path.join(os.path.dirname(C.result_path("slimming", a.quick)), "slimming_map_vs_flops.png")
    os.makedirs(os.path.dirname(png), exist_ok=True)
    plot(rows, a.img_size, png)
    result["plot"] = os.path.relpath(png, C.REPO)
    C.write_result("slimming", a.quick, result)
    print(table(result))
    return 0


def table(result) -> str:
    s = result["settings"]["img_size"]
    rows = sorted(result["rows"], key=lambda r: (r["source"], r["ratio"], r["criterion"]))
    return C.fmt_table(
        ["checkpoint", "cut", "criterion", "params", f"GFLOPs@{s}", "GFLOPs@640", "mAP@.5:.95 pruned",
         "mAP@.5 pruned", "mAP@.5:.95 fine-tuned", "mAP@.5 fine-tuned"],
        [[r["source"], r["cut"], r["criterion"], f"{r['params']:,}", f"{r[f'gflops_{s}']:.3f}",
          f"{r['gflops_640']:.2f}", f"{r['after_prune']['map50_95']:.4f}", f"{r['after_prune']['map50']:.4f}",
          f"{r['after_finetune']['map50_95']:.4f}", f"{r['after_finetune']['map50']:.4f}"] for r in rows])


if __name__ == "__main__":
    sys.exit(main())

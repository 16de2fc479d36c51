"""Accuracy retention of slimming, against the baselines a sceptical engineer asks for.

From one converged dense checkpoint (default: the shipped weights/ checkpoint on the embedded
set), each cell makes a slimmed model and scores it with pycocotools:

* ``dense``:   the unpruned model trained the same total epochs (sparse + fine-tune) at the
               fine-tune recipe: the reference every retention figure divides by;
* sparse methods (``gradual``, ``progressive`` (gradual in steps 2x -> 4x -> 8x), ``proximal``,
               ``subgradient``, with or without FLOP weighting)
               for ``--sparse-epochs``, pruned at each cut (2x/4x/8x fewer channels), scored
               right after the cut, fine-tuned ``--finetune-epochs`` with or without the dense
               model as distillation teacher, scored again;
* ``oneshot``: the dense model pruned directly (no sparse stage), fine-tuned the same total epochs;
* ``scratch``: the pruned architecture of the gradual cell, re-initialised and trained from
               scratch for the same total epochs (Liu et al., ICLR 2019).

Seeds (``--seeds``) repeat every cell; the table gives mean and spread. Cells run
``--jobs`` at a time, one math thread each; finished cells are kept and skipped on a rerun.

    python benchmarks/retention.py                         # the default grid, 2 seeds
    python benchmarks/retention.py --cells gradual_8x gradual_8x_nodistill dense --seeds 0
    python benchmarks/retention.py --quick                  # CI smoke: tiny data, 1 epoch
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CUTS = {"2x": 0.5, "4x": 0.75, "8x": 0.875}


def grid() -> Dict[str, Dict[str, Any]]:
    """name -> cell settings. The default grid: every variant at 8x, the best one at 2x and 4x."""
    # the first grid's recipe, pinned (the config defaults have since moved to the combo_lr10 cells':
    # Detect inputs penalised, ramp 0.3, fine-tune LR 0.01)
    first = {"exclude_detect_inputs": True, "finetune": ["optimizer.lr0=0.001"]}
    g = {"kind": "sparse", "method": "gradual", "ramp": 0.6, **first}
    cells: Dict[str, Dict[str, Any]] = {"dense": {"kind": "dense", "finetune": first["finetune"]}}
    cells["gradual_8x"] = {**g, "cut": "8x"}
    cells["scratch_8x"] = {"kind": "scratch", "cut": "8x", "like": "gradual_8x"}
    cells["gradual_8x_nodistill"] = {**g, "cut": "8x", "distill": False}
    cells["gradual_8x_flops"] = {**g, "cut": "8x", "flop_weighted": True}
    cells["gradual_8x_nol1"] = {**g, "cut": "8x", "rate": 0.0}
    cells["proximal_8x"] = {"kind": "sparse", "method": "proximal", "cut": "8x", **first}
    cells["subgradient_8x"] = {"kind": "sparse", "method": "subgradient", "cut": "8x", **first}
    cells["oneshot_8x"] = {"kind": "oneshot", "cut": "8x", "finetune": first["finetune"]}
    for cut in ("4x", "2x"):
        cells[f"gradual_{cut}"] = {**g, "cut": cut}
        cells[f"scratch_{cut}"] = {"kind": "scratch", "cut": cut, "like": f"gradual_{cut}"}
    cells["progressive_8x"] = {**g, "cut": "8x", "steps": [0.5, 0.75, 0.875]}
    # the same share cut from every layer (the narrow-model shape of ultralytics' width scaling),
    # and the Detect inputs penalised like the rest
    cells["gradual_8x_uniform"] = {**g, "cut": "8x", "selection": "uniform"}
    cells["gradual_8x_detect"] = {**g, "cut": "8x", "exclude_detect_inputs": False}
    # a longer fine-tune (4x the epochs; more training than the dense reference had): is the gap budget?
    cells["gradual_8x_ft4x"] = {**g, "cut": "8x", "finetune_scale": 4}
    # where the 8x budget can go: floors of 8 channels take most of it (a layer keeps >= 8)
    cells["gradual_8x_min4"] = {**g, "cut": "8x", "min_channels": 4}
    cells["gradual_8x_detect_min4"] = {**g, "cut": "8x", "min_channels": 4, "exclude_detect_inputs": False}
    # recipe: the cut reached earlier (more epochs at the final width), a higher fine-tune LR
    cells["gradual_8x_ramp3"] = {**g, "cut": "8x", "ramp": 0.3}
    cells["gradual_8x_ftlr"] = {**g, "cut": "8x", "finetune": ["optimizer.lr0=0.004"]}
    cells["gradual_8x_ftlr10"] = {**g, "cut": "8x", "finetune": ["optimizer.lr0=0.01"]}
    cells["gradual_8x_detect_ftlr"] = {**g, "cut": "8x", "exclude_detect_inputs": False,
                                       "finetune": ["optimizer.lr0=0.004"]}
    # the three that paid, together
    combo = {**g, "exclude_detect_inputs": False, "ramp": 0.3, "finetune": ["optimizer.lr0=0.004"]}
    for cut in ("8x", "4x", "2x"):
        cells[f"gradual_{cut}_combo"] = {**combo, "cut": cut}
        cells[f"scratch_{cut}_combo"] = {"kind": "scratch", "cut": cut, "like": f"gradual_{cut}_combo"}
    for cut in ("8x", "4x", "2x"):
        cells[f"gradual_{cut}_combo_lr10"] = {**combo, "cut": cut, "finetune": ["optimizer.lr0=0.01"],
                                             "ref": "dense_lr10"}
    # progressive pruning (slim/progressive.py) from the dense model: 2x, 5 epochs, 4x, 5 epochs, 8x,
    # then the same 10-epoch fine-tune (20 epochs in all, as the gradual cells)
    cells["progressive_tool_8x"] = {"kind": "progressive", "cut": "8x", "steps": [0.5, 0.75, 0.875],
                                    "finetune": ["optimizer.lr0=0.01"], "ref": "dense_lr10"}
    # the reference under the same recipe: the dense model fine-tuned 20 epochs at that LR
    cells["dense_lr10"] = {"kind": "dense", "finetune": ["optimizer.lr0=0.01"], "ref": "dense_lr10"}
    # the scratch baseline at that LR too (it might just need a higher one)
    cells["scratch_8x_lr10"] = {"kind": "scratch", "cut": "8x", "like": "gradual_8x_combo",
                                "finetune": ["optimizer.lr0=0.01"], "ref": "dense_lr10"}
    cells["gradual_8x_combo_lr20"] = {**combo, "cut": "8x", "finetune": ["optimizer.lr0=0.02"]}
    # is it the budget? 10x the fine-tune (110 epochs in all), against the dense model trained as long
    lng = {"finetune_scale": 10, "finetune": ["optimizer.lr0=0.004"], "ref": "dense_long"}
    cells["dense_long"] = {"kind": "dense", **lng}
    cells["gradual_8x_long"] = {**g, "cut": "8x", **lng}
    cells["gradual_4x_long"] = {**g, "cut": "4x", **lng}
    return cells


def _evaluate(weights: str, cfg) -> Dict[str, float]:
    from ppyolo_slim import load_model
    from ppyolo_slim.slim.workflow import val_evaluator
    m = val_evaluator(cfg)(load_model(weights))
    return {"map50_95": float(m["map50_95"]), "map50": float(m["map50"])}


def _size(weights: str) -> Dict[str, Any]:
    from ppyolo_slim import load_model
    from ppyolo_slim.model.flops import gflops
    from ppyolo_slim.model.yolo import count_parameters
    m = load_model(weights)
    return {"params": count_parameters(m), "gflops_640": gflops(m, 640)}


def _train(config: str, overrides: List[str], out: str) -> Dict[str, Any]:
    from ppyolo_slim.config import load_config
    from ppyolo_slim.engine.trainer import train
    cfg = load_config(config, overrides + [f"output_dir={out}", "log.visualdl=false"])
    s = train(cfg, progress=False)
    best = s["best"] if os.path.isfile(s["best"]) else s["last"]
    return {"weights": best, "train_s": s["train_s"], "best_map50_95": s["best_fitness"]}


def run_cell(name: str, cell: Dict[str, Any], seed: int, a: Dict[str, Any]) -> Dict[str, Any]:
    """One cell, one seed, in its own folder; returns its row."""
    import ppyolo_slim  # noqa: F401  (import order: before paddle)
    from ppyolo_slim.config import load_config
    from ppyolo_slim.slim.workflow import prune_checkpoint, val_evaluator
    out = os.path.join(a["work"], f"{name}_s{seed}")
    done = os.path.join(out, "row.json")
    if os.path.isfile(done):
        with open(done) as f:
            return json.load(f)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    t0 = time.time()
    common = list(a["overrides"]) + [f"seed={seed}", "threads=1"]
    total = a["sparse_epochs"] + a["finetune_epochs"]
    ft_cfg = os.path.join(ROOT, "configs", "finetune.yml")
    row: Dict[str, Any] = {"cell": name, "seed": seed, **cell}
    eval_cfg = load_config(ft_cfg, common)
    kind = cell["kind"]
    if kind == "dense":
        epochs = a["sparse_epochs"] + a["finetune_epochs"] * int(cell.get("finetune_scale", 1))
        r = _train(ft_cfg, common + [f"weights={a['dense']}", f"epochs={epochs}", "distill.enabled=false"]
                   + list(cell.get("finetune", [])), os.path.join(out, "train"))
        row.update(final=_evaluate(r["weights"], eval_cfg), weights=r["weights"], **_size(r["weights"]))
    elif kind == "scratch":
        like = os.path.join(a["work"], f"{cell['like']}_s{seed}", "prune", "pruned.pdparams")
        if not os.path.isfile(like):
            raise RuntimeError(f"{name}: needs {cell['like']} (seed {seed}) to have run first for its architecture")
        init = os.path.join(out, "init.pdparams")
        _reinitialise(like, init, seed)
        r = _train(os.path.join(ROOT, "configs", "base.yml"), common + [f"weights={init}", f"epochs={total}"]
                   + list(cell.get("finetune", [])), os.path.join(out, "train"))
        row.update(final=_evaluate(r["weights"], eval_cfg), weights=r["weights"], **_size(r["weights"]))
    else:
        ratio = CUTS[cell["cut"]]
        src = a["dense"]
        ft_epochs = a["finetune_epochs"] * int(cell.get("finetune_scale", 1))
        if kind == "sparse":
            ov = common + [f"weights={a['dense']}", f"epochs={a['sparse_epochs']}",
                           f"sparsity.method={cell['method']}", f"prune.ratio={ratio}",
                           f"sparsity.flop_weighted={str(cell.get('flop_weighted', False)).lower()}"]
            ov.append(f"sparsity.rate={cell.get('rate', a['rates'][cell['method']])}")
            if cell.get("selection"):
                ov.append(f"sparsity.selection={cell['selection']}")
            if "exclude_detect_inputs" in cell:
                ov.append(f"sparsity.exclude_detect_inputs={str(cell['exclude_detect_inputs']).lower()}")
            if cell.get("steps"):
                ov.append("sparsity.steps=[" + ",".join(str(x) for x in cell["steps"]) + "]")
            if "ramp" in cell:
                ov.append(f"sparsity.ramp={cell['ramp']}")
            if "min_channels" in cell:
                ov.append(f"prune.min_channels={cell['min_channels']}")
            r = _train(os.path.join(ROOT, "configs", "sparse.yml"), ov, os.path.join(out, "sparse"))
            src = r["weights"]
            row["sparse"] = _evaluate(src, eval_cfg)
            row["sparse_train_s"] = r["train_s"]
        elif kind == "oneshot":   # the dense model cut directly, fine-tuned for the whole budget
            ft_epochs = total
        # uniform masks remove less than the global share where floors bind: cut exactly the zeros
        cut = {"threshold": 1e-12} if cell.get("selection") == "uniform" else {"ratio": ratio}   # a threshold wins
        cut["min_channels"] = int(cell.get("min_channels", 8))
        kw = dict(img_size=int(eval_cfg["img_size"]), evaluate=val_evaluator(eval_cfg), visualdl=False, plots=False,
                  log=lambda *_: None)
        if kind == "progressive":   # the sparse epochs go to the trainings between the cuts
            from ppyolo_slim.slim.progressive import progressive_prune, trainer_between
            between = trainer_between(ft_cfg, common + [f"distill.teacher={a['dense']}"] + list(cell.get("finetune", [])),
                                      a["sparse_epochs"] // (len(cell["steps"]) - 1))
            rep = progressive_prune(src, os.path.join(out, "prune"), cell["steps"], prune=prune_checkpoint,
                                    train_between=between, min_channels=cut["min_channels"], **kw)
        else:
            rep = prune_checkpoint(src, os.path.join(out, "prune"), **cut, **kw)
        row["after_cut"] = {k: float(rep["metrics"]["after_prune"][k]) for k in ("map50_95", "map50")}
        pruned = rep["paths"]["weights"]
        distill = cell.get("distill", True)
        ov = common + [f"weights={pruned}", f"epochs={ft_epochs}",
                       f"distill.enabled={str(distill).lower()}", f"distill.teacher={a['dense']}"]
        ov += list(cell.get("finetune", []))
        r = _train(ft_cfg, ov, os.path.join(out, "finetune"))
        row.update(final=_evaluate(r["weights"], eval_cfg), weights=r["weights"], **_size(r["weights"]))
    row["seconds"] = round(time.time() - t0, 1)
    with open(done, "w") as f:
        json.dump(row, f, indent=1)
    return row


def _reinitialise(pruned: str, dst: str, seed: int) -> None:
    """The architecture of ``pruned`` (its shapes) with fresh random weights and YOLOv5's
    Detect priors, as a from-scratch run starts."""
    import paddle
    from ppyolo_slim.model import netspec_from_meta, read_weights, save_weights
    from ppyolo_slim.model.yolo import YOLOv5
    state, meta = read_weights(pruned)
    paddle.seed(seed)
    model = YOLOv5(netspec_from_meta(meta), {k: v.shape for k, v in state.items()})
    meta.made_by = {"stage": "scratch", "tool": "benchmarks/retention.py", "architecture_of": pruned}
    save_weights(dst, model.state_dict(), meta)


def _quick_setup(work: str, opt: List[str]):
    import ppyolo_slim  # noqa: F401
    from ppyolo_slim.data.shapes import generate_shapes
    shutil.rmtree(work, ignore_errors=True)
    data = generate_shapes(os.path.join(work, "shapes"), n_train=16, n_val=8, img_size=64, verbose=False)
    opt = [f"data={data}", "img_size=64", "batch_size=8", "eval.batch_size=8", "workers=0",
           "schedule.warmup_epochs=0"] + list(opt)
    r = _train(os.path.join(ROOT, "configs", "base.yml"), opt + ["epochs=1", "threads=1"], os.path.join(work, "dense0"))
    return r["weights"], opt


def all_rows(work: str, cells: Dict[str, Any]) -> List[Dict[str, Any]]:
    rows = []
    for d in sorted(os.listdir(work)):
        f = os.path.join(work, d, "row.json")
        if os.path.isfile(f):
            with open(f) as fh:
                r = json.load(fh)
            if r.get("cell") in cells:
                rows.append(r)
    order = list(cells)
    return sorted(rows, key=lambda r: (order.index(r["cell"]), r["seed"]))


def latency(rows: List[Dict[str, Any]], work: str, img_size: int) -> Dict[str, Dict[str, float]]:
    """ONNX Runtime CPU, batch 1, one thread: every cell's seed-0 model exported at ``img_size``
    and timed in turns in one loop; speed-up against the dense cell."""
    from ppyolo_slim.export.exporter import export_model
    from ppyolo_slim.summary import ort_latency
    onnx = {}
    for r in rows:
        if r["seed"] != min(x["seed"] for x in rows if x["cell"] == r["cell"]):
            continue
        d = os.path.join(work, "onnx", f"{r['cell']}_{img_size}")
        if not os.path.isfile(os.path.join(d, "model.onnx")):
            export_model(r["weights"], d, img_size=img_size, batch=1, log=lambda *_: None)
        onnx[r["cell"]] = os.path.join(d, "model.onnx")
    lat = ort_latency(onnx, img_size, warmup=5, rounds=40, threads=1)
    # every unpruned cell has the same network: the first timed one is the speed-up's reference
    dense = [r["cell"] for r in rows if grid().get(r["cell"], {}).get("kind") == "dense" and r["cell"] in lat]
    ref = lat[dense[0]]["median_ms"] if dense else None
    return {k: {"ort_ms_640": v["median_ms"], "ort_p90_ms_640": v["p90_ms"],
                **({"speedup_vs_dense": ref / v["median_ms"]} if ref else {})} for k, v in lat.items()}


def summarise(rows: List[Dict[str, Any]], cells: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    import numpy as np
    by: Dict[str, List[Dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["cell"], []).append(r)
    out = {}
    for name, rs in by.items():
        # kept: against the dense model trained as long (cell "ref", default "dense"), same seed
        ref = (cells or {}).get(name, {}).get("ref", rs[0].get("ref", "dense"))
        dense = {r["seed"]: r["final"]["map50_95"] for r in by.get(ref, [])}
        fin = [r["final"]["map50_95"] for r in rs]
        ent = {"seeds": [r["seed"] for r in rs], "map50_95": float(np.mean(fin)),
               "map50_95_spread": float(np.ptp(fin)) if len(fin) > 1 else None,
               "map50": float(np.mean([r["final"]["map50"] for r in rs])),
               "params": rs[0]["params"], "gflops_640": rs[0]["gflops_640"]}
        if "after_cut" in rs[0]:
            ent["after_cut_map50_95"] = float(np.mean([r["after_cut"]["map50_95"] for r in rs]))
        if "sparse" in rs[0]:
            ent["sparse_map50_95"] = float(np.mean([r["sparse"]["map50_95"] for r in rs]))
        kept = [r["final"]["map50_95"] / dense[r["seed"]] for r in rs if dense.get(r["seed"])]
        if kept:
            ent["retention"] = float(np.mean(kept))
        cut = [r["after_cut"]["map50_95"] / dense[r["seed"]] for r in rs if "after_cut" in r and dense.get(r["seed"])]
        if cut:
            ent["retention_after_cut"] = float(np.mean(cut))
        out[name] = ent
    return out


def table(summary: Dict[str, Any]) -> str:
    rows = []
    for name, e in summary.items():
        sp = e.get("map50_95_spread")
        rows.append([name, f"{e['params']:,}", f"{e['gflops_640']:.2f}",
                     f"{e['sparse_map50_95']:.3f}" if "sparse_map50_95" in e else "-",
                     f"{e['after_cut_map50_95']:.3f}" if "after_cut_map50_95" in e else "-",
                     f"{e['map50_95']:.3f}" + (f" ± {sp / 2:.3f}" if sp is not None else ""),
                     f"{e['map50']:.3f}",
                     f"{e['retention']:.0%}" if "retention" in e else "-",
                     f"{e['retention_after_cut']:.0%}" if "retention_after_cut" in e else "-",
                     f"{e['speedup_vs_dense']:.2f}x" if "speedup_vs_dense" in e else "-"])
    return C.fmt_table(["cell", "params", "GFLOPs@640", "sparse mAP", "after cut", "final mAP@.5:.95",
                        "mAP@.5", "kept", "kept at cut", "ORT speed-up @640"], rows)


# the plot's named series: (label, cells from dense to the smallest cut, colour); every other
# cell is a grey point ("other variants"), scratch cells grey crosses
SERIES = [("defaults now (detect + ramp 0.3 + fine-tune LR 0.01), 20 epochs",
           ["dense_lr10", "gradual_2x_combo_lr10", "gradual_4x_combo_lr10", "gradual_8x_combo_lr10"], "tab:red"),
          ("first grid (ramp 0.6, fine-tune LR 0.001), 20 epochs",
           ["dense", "gradual_2x", "gradual_4x", "gradual_8x"], "tab:blue"),
          ("110 epochs (fine-tune LR 0.004)", ["dense_long", "gradual_4x_long", "gradual_8x_long"], "tab:green")]


def plot(summary: Dict[str, Any], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ppyolo_slim.plots import readable_log_axis
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    named = set()
    for label, names, colour in SERIES:
        pts = [(summary[n]["gflops_640"], summary[n]["map50_95"], (summary[n].get("map50_95_spread") or 0) / 2)
               for n in names if n in summary]
        named.update(names)
        if pts:
            x, y, e = zip(*pts)
            ax.errorbar(x, y, yerr=e, fmt="-o", color=colour, capsize=3, ms=6, label=label)
            for n in names:
                if n in summary and "retention" in summary[n] and not n.startswith("dense"):
                    ax.annotate(f"{summary[n]['retention']:.0%}", (summary[n]["gflops_640"], summary[n]["map50_95"]),
                                textcoords="offset points", xytext=(6, 4), fontsize=7, color=colour)
    rest = [(n, e) for n, e in summary.items() if n not in named]
    for kind, fmt, label in (("scratch", "x", "pruned architectures trained from scratch"),
                             ("other", "o", "other variants (benchmarks/README.md)")):
        pts = [e for n, e in rest if n.startswith("scratch") == (kind == "scratch")]
        if pts:
            ax.plot([e["gflops_640"] for e in pts], [e["map50_95"] for e in pts], fmt, color="0.55",
                    ms=5, alpha=0.8, label=label)
    readable_log_axis(ax, [e["gflops_640"] for e in summary.values()])
    ax.set_xlabel("GFLOPs at 640 px (log); 8x / 4x / 2x channel cuts from the left, dense at the right")
    ax.set_ylabel("mAP@0.5:0.95 (val, after fine-tuning)")
    ax.set_title("Slimmed YOLOv5n on the embedded set: accuracy against cost\n(% = kept of the dense model trained as long)",
                 fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dense", default=os.path.join(ROOT, "weights", "yolov5n_shapes_160.pdparams"),
                    help="the converged dense checkpoint every cell starts from")
    ap.add_argument("--cells", nargs="+", help=f"cells to run (default all): {', '.join(grid())}")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--sparse-epochs", type=int, default=10)
    ap.add_argument("--finetune-epochs", type=int, default=10)
    ap.add_argument("--gradual-rate", type=float, default=1.0, help="L1 while the gradual masks are chosen")
    ap.add_argument("--proximal-rate", type=float, default=3.0,
                    help="proximal L1 s: |gamma| shrinks lr_t*s a step; 3 reaches zero within 10 CPU epochs")
    ap.add_argument("--subgradient-rate", type=float, default=1e-3)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--work", default=os.path.join(ROOT, "output", "bench_retention"))
    ap.add_argument("-o", "--opt", action="extend", nargs="+", default=[], metavar="KEY=VALUE")
    ap.add_argument("--no-latency", action="store_true", help="skip the ONNX Runtime timing at 640 px")
    ap.add_argument("--latency-cells", nargs="+", help="time only these cells (default: every finished one)")
    ap.add_argument("--tag", help="write results/retention_TAG.json and .png (a variant beside the main "
                                  "table, e.g. the other Paddle set)")
    ap.add_argument("--quick", action="store_true", help="CI smoke: tiny data, 1 epoch each, 1 seed")
    args = ap.parse_args(argv)
    if args.quick:     # tiny data and a tiny dense model made here, 1 epoch per stage
        args.work = os.path.join(C.WORK, "quick", "retention")
        args.dense, args.opt = _quick_setup(args.work, args.opt)
        args.sparse_epochs = args.finetune_epochs = 1
        args.seeds = [0]
        args.cells = args.cells or ["dense", "gradual_8x", "scratch_8x", "oneshot_8x"]
    cells = grid()
    names = args.cells or list(cells)
    unknown = [n for n in names if n not in cells]
    if unknown:
        ap.error(f"unknown cells {unknown}; known: {', '.join(cells)}")
    a = {"dense": os.path.abspath(args.dense), "work": os.path.abspath(args.work),
         "sparse_epochs": args.sparse_epochs, "finetune_epochs": args.finetune_epochs,
         "rates": {"gradual": args.gradual_rate, "proximal": args.proximal_rate,
                   "subgradient": args.subgradient_rate},
         "overrides": list(args.opt)}
    if not os.path.isfile(a["dense"]):
        ap.error(f"{a['dense']}: no such dense checkpoint")
    os.makedirs(a["work"], exist_ok=True)
    # scratch cells need their gradual twin's architecture: run them last
    order = sorted(((n, s) for n in names for s in args.seeds), key=lambda t: cells[t[0]]["kind"] == "scratch")
    first = [t for t in order if cells[t[0]]["kind"] != "scratch"]
    last = [t for t in order if cells[t[0]]["kind"] == "scratch"]
    rows: List[Dict[str, Any]] = []
    t0 = time.time()
    for batch in (first, last):
        with ProcessPoolExecutor(max_workers=args.jobs) as ex:
            futs = {ex.submit(run_cell, n, cells[n], s, a): (n, s) for n, s in batch}
            for f, (n, s) in futs.items():
                row = f.result()
                rows.append(row)
                print(f"{n} seed {s}: final mAP@0.5:0.95 {row['final']['map50_95']:.4f} ({row['seconds']:.0f} s)",
                      flush=True)
    rows = all_rows(a["work"], cells)      # every finished cell, this run's and earlier runs'
    summary = summarise(rows, cells)
    if not args.no_latency:
        timed = [r for r in rows if not args.latency_cells or r["cell"] in args.latency_cells]
        lat = latency(timed, a["work"], 64 if args.quick else 640)
        for name, v in lat.items():
            summary[name].update(v)
    print(table(summary))
    name = f"retention_{args.tag}" if args.tag else "retention"
    res = C.header(name, args.quick)
    res.update({"settings": {k: v for k, v in a.items() if k != "work"}, "cells": summary, "rows": rows,
                "wall_s": round(time.time() - t0, 1)})
    path = C.write_result(name, args.quick, res)
    plot(summary, os.path.join(os.path.dirname(path), f"{name}.png" if not args.quick else f"{name}_quick.png"))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""The pipeline's closing report: size, cost, accuracy and CPU latency of each model, the
deploy stage's verdict, and a plot of mAP against GFLOPs.

Latency is ONNX Runtime on the CPU, one thread, the models timed in turns in one loop (these machines
are noisy: only ratios measured side by side mean much).

The table is driven by ``LABELS`` (model key -> row label, in the README's words) and
``COLUMNS`` (header, cell): a new model is a new entry in the ``weights`` given to
``summarize`` (and a label here), a new column one line in ``COLUMNS``.
"""
from __future__ import annotations

import os
import platform
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np

from .utils.io import atomic_write_bytes, write_json


def ort_latency(onnx_paths: Mapping[str, str], img_size: int, warmup: int = 5, rounds: int = 40,
                threads: int = 1) -> Dict[str, Dict[str, float]]:
    """Median and p90 ms per image (batch 1) for each model, timed alternately (the first of
    each round rotating). One thread, no spinning, by default: with every core and spinning
    thread pools, two sessions of the same network measured 0.9x and 1.7x each other on a
    loaded 2-core machine; with one thread 1.01-1.19x."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sessions = {k: ort.InferenceSession(p, so, providers=["CPUExecutionProvider"]) for k, p in onnx_paths.items()}
    x = np.random.RandomState(0).rand(1, 3, img_size, img_size).astype("float32")
    feeds = {k: {s.get_inputs()[0].name: x} for k, s in sessions.items()}
    times: Dict[str, list] = {k: [] for k in sessions}
    keys = list(sessions)
    for i in range(warmup + rounds):
        for k in keys[i % len(keys):] + keys[:i % len(keys)]:
            t0 = time.perf_counter()
            sessions[k].run(None, feeds[k])
            if i >= warmup:
                times[k].append(1000 * (time.perf_counter() - t0))
    return {k: {"median_ms": float(np.median(v)), "p90_ms": float(np.percentile(v, 90))}
            for k, v in times.items()}


# model key -> row label; keys not listed show as themselves
LABELS = {"dense": "dense (unpruned)", "sparse": "sparse", "pruned": "pruned", "finetuned": "fine-tuned"}
REFERENCE = "sparse"       # speed-up and FLOP ratio are against this row

Cell = Callable[[Mapping[str, Any]], str]
COLUMNS: List[Tuple[str, Cell]] = [
    ("params", lambda r: f"{r['params']:,}"),
    ("GFLOPs @{size}", lambda r: f"{r['gflops']:.3f}"),
    ("GFLOPs @640", lambda r: f"{r['gflops_640']:.2f}"),
    ("mAP@0.5:0.95", lambda r: f"{r['map50_95']:.4f}"),
    ("mAP@0.5", lambda r: f"{r['map50']:.4f}"),
    (".pdparams MB", lambda r: f"{r['pdparams_mb']:.2f}"),
    (".onnx MB", lambda r: f"{r['onnx_mb']:.2f}"),
    ("ORT CPU ms (median / p90)", lambda r: f"{r['ort_cpu_median_ms']:.2f} / {r['ort_cpu_p90_ms']:.2f}"),
    ("speed-up", lambda r: f"{r.get('speedup_vs_sparse', 1):.2f}x"),
    ("FLOP ratio", lambda r: f"{r.get('flops_ratio_vs_sparse', 1):.2f}x"),
    ("mAP kept", lambda r: f"{r['map_retention_vs_dense']:.0%}" if "map_retention_vs_dense" in r else "-"),
]


def label(name: str, rows: Optional[Mapping[str, Mapping[str, Any]]] = None) -> str:
    """The row label; a pruned row says how many times fewer channels it has."""
    text = LABELS.get(name, name.replace("_", " "))
    share = ((rows or {}).get(name) or {}).get("channels_removed_share")
    if share and 0 < share < 1:
        text += f" ({1 / (1 - share):.0f}x fewer channels)"
    return text


def machine() -> Dict[str, Any]:
    """Where the latency was measured: it depends on this, and on the load at the time."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", "r", encoding="utf-8") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        load = round(os.getloadavg()[0], 1)
    except (OSError, AttributeError):
        load = None
    return {"cpu": cpu, "cores": os.cpu_count(), "load_1min": load, "os": platform.platform(terse=True),
            "date": time.strftime("%Y-%m-%d %H:%M")}


def summarize(weights: Mapping[str, str], onnx: Mapping[str, str], cfg, out_dir: str,
              log: Callable[[str], None] = print,
              stages: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """``weights`` / ``onnx``: model key -> file, in table order. ``stages``: the pipeline's
    finished stages (their results), for the deploy verdict, the prune share and stage times."""
    from . import load_model
    from .data import load_data
    from .engine.evaluate import EvalConfig, evaluate_model
    from .engine.predict import DygraphPredictor
    from .model.flops import gflops
    from .model.yolo import count_parameters

    stages = dict(stages or {})
    size = int(cfg["img_size"])
    spec = load_data(cfg["data"])
    ev = EvalConfig.of(cfg)
    rows: Dict[str, Dict[str, Any]] = {}
    for name, w in weights.items():
        model = load_model(w)
        metrics, _ = evaluate_model(DygraphPredictor(model), spec.val, spec.names, size,
                                    ev.batch_size, ev.conf_thres, ev.iou_thres, ev.max_det)
        rows[name] = {"weights": w, "params": count_parameters(model), "gflops": gflops(model, size),
                      "gflops_640": gflops(model, 640), "map50_95": metrics["map50_95"],
                      "map50": metrics["map50"], "pdparams_mb": os.path.getsize(w) / 2**20,
                      "onnx_mb": os.path.getsize(onnx[name]) / 2**20}
    lat = ort_latency(onnx, size)
    for name in rows:
        rows[name].update({f"ort_cpu_{k}": v for k, v in lat[name].items()})
    ref = rows.get(REFERENCE)
    if ref:
        for r in rows.values():
            r["speedup_vs_sparse"] = ref["ort_cpu_median_ms"] / r["ort_cpu_median_ms"]
            r["flops_ratio_vs_sparse"] = ref["gflops"] / r["gflops"]
    dense = rows.get("dense")
    if dense:   # what slimming keeps of the unpruned model's accuracy
        for r in rows.values():
            r["map_retention_vs_dense"] = r["map50_95"] / max(dense["map50_95"], 1e-12)
    share = _pruned_share(stages.get("prune"))
    if share is not None and "pruned" in rows:
        rows["pruned"]["channels_removed_share"] = share
    for name, r in rows.items():
        r["label"] = label(name, rows)
    result = {"img_size": size, "data": spec.source, "models": rows,
              "latency_note": "ONNX Runtime CPU, batch 1, models timed alternately in one run",
              "val_images": len(spec.val), "machine": machine()}
    if "deploy" in stages:
        result["deploy"] = stages["deploy"]
    if isinstance(stages.get("dense"), dict) and "dense" in rows:
        result["dense_model"] = _dense_origin(stages["dense"], rows["dense"]["weights"])
    result["stage_seconds"] = {k: v.get("seconds") for k, v in stages.items() if isinstance(v, dict)}
    md = format_report(result)
    paths = {"json": os.path.join(out_dir, "summary.json"), "md": os.path.join(out_dir, "summary.md"),
             "plot": os.path.join(out_dir, "map_vs_flops.png")}
    plot_map_vs_flops(rows, paths["plot"], size=size, data=_short(str(spec.source)))
    write_json(paths["json"], result)
    atomic_write_bytes(paths["md"], (md + "\n").encode())
    log(format_markdown(result))
    result["paths"] = paths
    return result


def _dense_origin(stage: Mapping[str, Any], weights: str) -> Dict[str, Any]:
    """How the dense row's model came about: given (trained on this data before the run) or
    trained by the pipeline's dense stage, and at which epoch its best checkpoint was taken."""
    out: Dict[str, Any] = {"trained": bool(stage.get("trained")), "weights": weights}
    if out["trained"]:
        out.update(init=stage.get("init", "its initial weights"), epochs=stage.get("epochs"))
        try:
            from .model.weights import load_weights
            made_by = (load_weights(weights)[1] or {}).get("made_by") or {}
            out["best_epoch"] = int(made_by["epoch"])
        except Exception:   # an unreadable record only loses this sentence's detail
            pass
    return out


def format_dense_origin(d: Mapping[str, Any]) -> str:
    if not d.get("trained"):
        return (f"The dense model is `{d.get('weights')}`, trained on this data's classes before this "
                f"run (not trained here).")
    text = (f"The dense model was trained in this run: {d.get('epochs', '?')} epochs from "
            f"{d.get('init') or 'random init'} (`pipeline.dense_epochs`; trained by default when the initial "
            f"weights do not know this data's classes).")
    best, epochs = d.get("best_epoch"), d.get("epochs")
    if best is not None and epochs:
        text += f" Its best checkpoint is from epoch {best} of {epochs}"
        if best >= epochs:
            text += (": it was still improving when training stopped, so **mAP kept** is measured "
                     "against an under-trained reference (and teacher). Train it longer "
                     "(`-o pipeline.dense_epochs=N`), or give a converged dense model of this data "
                     "(`-o weights=PATH`; it is then used as it is).")
        else:
            text += "."
    return text


def _short(path: str) -> str:
    """A data set's name for a title: its file and folder (shapes/data.yaml)."""
    parts = os.path.normpath(path).split(os.sep)
    return "/".join(parts[-2:])


def _pruned_share(prune_stage: Optional[Mapping[str, Any]]) -> Optional[float]:
    import json
    try:
        with open(prune_stage["report"], "r", encoding="utf-8") as f:
            return float(json.load(f)["channels"]["removed_share"])
    except (TypeError, KeyError, OSError, ValueError):
        return None


def format_markdown(result: Mapping[str, Any]) -> str:
    """The table alone (what the pipeline prints)."""
    size = result["img_size"]
    heads = [h.format(size=size) for h, _ in COLUMNS]
    lines = ["| model | " + " | ".join(heads) + " |", "|---|" + "---:|" * len(COLUMNS)]
    for name, r in result["models"].items():
        lines.append(f"| {r.get('label') or label(name)} | " + " | ".join(cell(r) for _, cell in COLUMNS) + " |")
    return "\n".join(lines)


def format_report(result: Mapping[str, Any]) -> str:
    """summary.md: what the numbers are, the table, the deploy verdict, the plot."""
    m = result.get("machine") or {}
    size = result["img_size"]
    where = (f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, load {m.get('load_1min', '?')}, "
             f"{m.get('date', '?')}")
    parts = [
        "# Pipeline summary",
        "",
        "## What you are looking at",
        "",
        f"One run of each model on the val split of `{result['data']}` "
        f"({result.get('val_images', '?')} images) at {size} px. **params** are trainable parameters; "
        f"**GFLOPs** are 2 x multiply-accumulates of the convolutions with BN folded (the ultralytics "
        f"convention), at {size} px and at 640; **mAP** is pycocotools' COCOeval. These depend only on "
        f"the weights, and the weights on the training run (seed, schedule, data). **ORT CPU ms** is ONNX "
        f"Runtime latency at batch 1 on one thread, the models timed in turns in one loop; **speed-up** and **FLOP "
        f"ratio** are against the {label(REFERENCE)} row; **mAP kept** is mAP@0.5:0.95 as a share of the "
        f"dense (unpruned) model's, the figure slimming is judged by. Latency and speed-up depend on the machine "
        f"and on what else ran on it: here {where}. Compare ratios measured side by side, not "
        f"milliseconds across machines or runs.",
        "",
        format_markdown(result),
    ]
    if result.get("dense_model"):
        parts += ["", format_dense_origin(result["dense_model"])]
    deploy = result.get("deploy")
    if deploy:
        parts += ["", "## TensorRT network (deploy stage)", "", *format_deploy(deploy)]
    secs = {k: v for k, v in (result.get("stage_seconds") or {}).items() if v is not None}
    if secs:
        parts += ["", "Stage time: " + ", ".join(f"{k} {v:.0f} s" for k, v in secs.items())
                  + f" ({sum(secs.values()) / 60:.1f} min before this summary)."]
    parts += ["", "![mAP@0.5:0.95 against GFLOPs](map_vs_flops.png)"]
    return "\n".join(parts)


def format_deploy(deploy: Mapping[str, Any]) -> List[str]:
    models = {k: v for k, v in deploy.items() if isinstance(v, dict)}
    if deploy.get("tensorrt"):
        return ["Engines built with TensorRT:"] + [f"- {label(k)}: {v.get('engine') or v.get('path') or v}"
                                                    for k, v in models.items()]
    ok = all(v.get("passed") for v in models.values())
    why = str(deploy.get('why') or 'TensorRT or a GPU is missing').rstrip('.')
    lines = [f"No TensorRT engine was built ({why}). "
             f"Instead the builder's exact layer calls ran in NumPy with TensorRT's documented semantics "
             f"and were compared with the Paddle model: **{'passed' if ok else 'FAILED'}**.", ""]
    for k, v in models.items():
        d = v.get("cpu_check_max_abs_diff")
        lines.append(f"- {label(k)}: {'passed' if v.get('passed') else 'failed'}, max |difference| "
                     f"{'?' if d is None else format(d, '.2g')} over {v.get('layers', '?')} layers"
                     + (f" (allowed: {v['tolerance']})" if v.get("tolerance") else ""))
    return lines


def plot_map_vs_flops(rows: Mapping[str, Mapping[str, Any]], path: str, size: Optional[int] = None,
                      data: str = "") -> None:
    import io
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from .plots import place_labels, readable_log_axis
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    names = list(rows)
    xs = [rows[n]["gflops"] for n in names]
    ys = [rows[n]["map50_95"] for n in names]
    cmap = plt.get_cmap("tab10")
    for i, (x, y) in enumerate(zip(xs, ys)):
        ax.scatter(x, y, s=45, color=cmap(i % 10), zorder=3)
    readable_log_axis(ax, xs)
    top = max(ys + [0.0])
    ax.set_ylim(-0.04 * (top or 1), top * 1.25 if top > 0 else 1)     # a point at 0 shows whole
    at = f" @{size} px" if size else ""
    ax.set_xlabel(f"GFLOPs{at} (log scale)")
    ax.set_ylabel("mAP@0.5:0.95 (val)")
    ax.set_title(f"Accuracy against compute{f' ({data})' if data else ''}", fontsize=10)
    ax.grid(alpha=0.3, which="major")
    fig.tight_layout()
    place_labels(ax, xs, ys, [rows[n].get("label") or label(n) for n in names],
                 colors=[cmap(i % 10) for i in range(len(names))], fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())

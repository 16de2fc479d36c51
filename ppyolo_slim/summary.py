"""The pipeline's closing table: size, cost, accuracy and CPU latency of each model.

Latency is ONNX Runtime on the CPU, the models timed in turns in one loop (these machines
are noisy: only ratios measured side by side mean much).
"""
from __future__ import annotations

import os
import time
from typing import Any, Callable, Dict, Mapping

import numpy as np

from .utils.io import atomic_write_bytes, write_json


def ort_latency(onnx_paths: Mapping[str, str], img_size: int, warmup: int = 5, rounds: int = 30,
                threads: int = 0) -> Dict[str, Dict[str, float]]:
    """Median and p90 ms per image (batch 1) for each model, timed alternately."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    sessions = {k: ort.InferenceSession(p, so, providers=["CPUExecutionProvider"]) for k, p in onnx_paths.items()}
    x = np.random.RandomState(0).rand(1, 3, img_size, img_size).astype("float32")
    feeds = {k: {s.get_inputs()[0].name: x} for k, s in sessions.items()}
    times: Dict[str, list] = {k: [] for k in sessions}
    for i in range(warmup + rounds):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, feeds[k])
            if i >= warmup:
                times[k].append(1000 * (time.perf_counter() - t0))
    return {k: {"median_ms": float(np.median(v)), "p90_ms": float(np.percentile(v, 90))}
            for k, v in times.items()}


def summarize(weights: Mapping[str, str], onnx: Mapping[str, str], cfg, out_dir: str,
              log: Callable[[str], None] = print) -> Dict[str, Any]:
    from . import load_model
    from .data import load_data
    from .engine.evaluate import evaluate_model
    from .engine.predict import DygraphPredictor
    from .model.flops import gflops
    from .model.yolo import count_parameters

    size = int(cfg["img_size"])
    spec = load_data(cfg["data"])
    ev = cfg["eval"]
    rows: Dict[str, Dict[str, Any]] = {}
    for name, w in weights.items():
        model = load_model(w)
        metrics, _ = evaluate_model(DygraphPredictor(model), spec.val, spec.names, size,
                                    int(ev["batch_size"]), float(ev["conf_thres"]), float(ev["iou_thres"]),
                                    int(ev["max_det"]))
        rows[name] = {"weights": w, "params": count_parameters(model), "gflops": gflops(model, size),
                      "gflops_640": gflops(model, 640), "map50_95": metrics["map50_95"],
                      "map50": metrics["map50"], "pdparams_mb": os.path.getsize(w) / 2**20,
                      "onnx_mb": os.path.getsize(onnx[name]) / 2**20}
    lat = ort_latency(onnx, size)
    for name in rows:
        rows[name].update({f"ort_cpu_{k}": v for k, v in lat[name].items()})
    ref = rows.get("sparse")
    if ref:
        for r in rows.values():
            r["speedup_vs_sparse"] = ref["ort_cpu_median_ms"] / r["ort_cpu_median_ms"]
            r["flops_ratio_vs_sparse"] = ref["gflops"] / r["gflops"]
    dense = rows.get("dense")
    if dense:   # what slimming keeps of the unpruned model's accuracy
        for r in rows.values():
            r["map_retention_vs_dense"] = r["map50_95"] / max(dense["map50_95"], 1e-12)
    result = {"img_size": size, "data": spec.source, "models": rows,
              "latency_note": "ONNX Runtime CPU, batch 1, models timed alternately in one run"}
    md = format_markdown(result)
    paths = {"json": os.path.join(out_dir, "summary.json"), "md": os.path.join(out_dir, "summary.md"),
             "plot": os.path.join(out_dir, "map_vs_flops.png")}
    plot_map_vs_flops(rows, paths["plot"])
    write_json(paths["json"], result)
    atomic_write_bytes(paths["md"], (md + "\n\n![mAP against GFLOPs](map_vs_flops.png)\n").encode())
    log(md)
    result["paths"] = paths
    return result


def format_markdown(result: Mapping[str, Any]) -> str:
    size = result["img_size"]
    lines = [f"| model | params | GFLOPs @{size} | GFLOPs @640 | mAP@0.5:0.95 | mAP@0.5 | .pdparams MB | "
             f".onnx MB | ORT CPU ms (median / p90) | speed-up | FLOP ratio | mAP kept |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in result["models"].items():
        lines.append(f"| {name} | {r['params']:,} | {r['gflops']:.3f} | {r['gflops_640']:.2f} | "
                     f"{r['map50_95']:.4f} | {r['map50']:.4f} | {r['pdparams_mb']:.2f} | {r['onnx_mb']:.2f} | "
                     f"{r['ort_cpu_median_ms']:.2f} / {r['ort_cpu_p90_ms']:.2f} | "
                     f"{r.get('speedup_vs_sparse', 1):.2f}x | {r.get('flops_ratio_vs_sparse', 1):.2f}x | "
                     + (f"{r['map_retention_vs_dense']:.0%} |" if "map_retention_vs_dense" in r else "- |"))
    return "\n".join(lines)


def plot_map_vs_flops(rows: Mapping[str, Mapping[str, Any]], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    for name, r in rows.items():
        ax.scatter(r["gflops"], r["map50_95"], s=40)
        ax.annotate(name, (r["gflops"], r["map50_95"]), textcoords="offset points", xytext=(5, 5))
    ax.set_xscale("log")
    ax.set_xlabel("GFLOPs (log)")
    ax.set_ylabel("mAP@0.5:0.95")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)

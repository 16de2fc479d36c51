"""Latency of the original model against the pruned one, exported, on the CPU.

ONNX Runtime and Paddle Inference (oneDNN on), at each image size and batch: both models
exported with ppyolo_slim.export.exporter.export_model, then timed alternately in one run
(median and p90 after warm-up), with the speed-up beside the FLOP ratio (its ceiling).

    python benchmarks/latency.py                                  # random-weight yolov5n, 8x pruned
    python benchmarks/latency.py --original sparse.pdparams --pruned pruned.pdparams
    python benchmarks/latency.py --quick                          # 64 px, batch 1, few runs

Timings are of the model alone (no letterbox, no NMS), on random input.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402  (puts the repo on sys.path)

import ppyolo_slim  # noqa: E402,F401  (import order: before paddle)
import numpy as np  # noqa: E402


def random_models(work: str, ratio: float, round_to: int = 1, seed: int = 0):
    """A random-weight yolov5n (nc=5) and its pruned copy. BN scales are drawn at random (a
    fresh BN has every gamma = 1: the ranking would be arbitrary ties), so the global
    threshold cuts the layers unevenly, as a trained model's would."""
    import paddle
    from ppyolo_slim.model import ModelMeta, build_model, save_weights
    from ppyolo_slim.data.shapes import NAMES
    paddle.seed(seed)
    rng = np.random.default_rng(seed)
    meta = ModelMeta(nc=len(NAMES), names=list(NAMES), img_size=640,
                     made_by={"stage": "benchmark", "tool": "benchmarks/latency.py", "weights": "random"})
    model = build_model(meta)
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    for k in state:
        if k.endswith(".bn.weight"):
            state[k] = rng.uniform(0.05, 1.0, state[k].shape).astype(np.float32)
    model = build_model(meta, state)
    model.eval()
    orig = os.path.join(work, "original.pdparams")
    save_weights(orig, state, meta)
    return (orig, *prune_and_save(model, meta, work, ratio, round_to))


def prune_and_save(model, meta, work: str, ratio: float, round_to: int):
    """(path of ``model`` pruned at ``ratio``, share of channels removed)."""
    from ppyolo_slim.model import save_weights
    from ppyolo_slim.slim import prune_model
    res = prune_model(model, meta, ratio=ratio, round_to=round_to)
    pruned = os.path.join(work, f"pruned_{ratio}_r{round_to}.pdparams")
    save_weights(pruned, res.state, meta)
    return pruned, float(res.removed_share)


def export_all(weights: str, tag: str, work: str, sizes, batches, check: bool):
    from ppyolo_slim.export.exporter import export_model
    out = {}
    for s in sizes:
        for b in batches:
            folder = os.path.join(work, f"{tag}_{s}_b{b}")
            done = os.path.join(folder, "export_report.json")
            if not (os.path.isfile(done) and os.path.getmtime(done) >= os.path.getmtime(weights)):
                export_model(weights, folder, img_size=s, batch=b, check=check, log=lambda m: None)
            out[(s, b)] = folder
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--original", help="original .pdparams (default: random-weight yolov5n, nc=5)")
    ap.add_argument("--pruned", help="pruned .pdparams (default: --original pruned at --ratio)")
    ap.add_argument("--ratio", type=float, default=0.875, help="prune ratio when --pruned is not given")
    ap.add_argument("--round-to", type=int, default=1,
                    help="round kept channel counts up to a multiple (prune.round_to) when pruning here")
    ap.add_argument("--sizes", default="320,640")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--backends", default="onnxruntime,paddle_inference")
    ap.add_argument("--rounds", type=int, default=15, help="timed calls per model (alternating)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads for both runtimes (1: on a shared machine more threads than free "
                         "cores make every runtime stall unevenly; use the core count on a quiet one)")
    ap.add_argument("--check", action="store_true", help="check each export against dygraph (slower)")
    ap.add_argument("--work", default=os.path.join(C.WORK, "latency"))
    ap.add_argument("--tag", help="write results/latency_TAG.json (a variant beside the main table)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 64 px, batch 1, 3 rounds")
    a = ap.parse_args(argv)
    if a.quick:
        a.sizes, a.batches, a.rounds, a.warmup = "64", "1", 3, 1
        a.work = os.path.join(C.WORK, "quick", "latency")
    sizes = [int(s) for s in a.sizes.split(",")]
    batches = [int(b) for b in a.batches.split(",")]
    backends = [b.strip() for b in a.backends.split(",") if b.strip()]
    for b in backends:
        if b not in ("onnxruntime", "paddle_inference"):
            ap.error(f"--backends: unknown backend {b!r} (onnxruntime, paddle_inference)")
    if a.pruned and not a.original:
        ap.error("--pruned needs --original")

    name = f"latency_{a.tag}" if a.tag else "latency"
    result = C.header(name, a.quick)
    t0 = time.time()
    random_weights = not a.original
    removed = None
    if random_weights:
        orig, pruned, removed = random_models(a.work, a.ratio, a.round_to)
    else:
        orig = os.path.abspath(a.original)
        if a.pruned:
            pruned = os.path.abspath(a.pruned)
        else:
            from ppyolo_slim import load_model
            m = load_model(orig)
            pruned, removed = prune_and_save(m, m.meta, a.work, a.ratio, a.round_to)

    from ppyolo_slim import load_model
    from ppyolo_slim.model.flops import gflops
    from ppyolo_slim.model.yolo import count_parameters
    mo, mp = load_model(orig), load_model(pruned)
    models = {"original": {"weights": orig, "params": count_parameters(mo)},
              "pruned": {"weights": pruned, "params": count_parameters(mp)}}
    for s in sizes:
        models["original"][f"gflops_{s}"] = gflops(mo, s)
        models["pruned"][f"gflops_{s}"] = gflops(mp, s)
    del mo, mp
    print(f"original {models['original']['params']:,} params, pruned {models['pruned']['params']:,}", flush=True)

    t = time.time()
    stem = lambda w: os.path.splitext(os.path.basename(w))[0]   # noqa: E731
    ex_o = export_all(orig, "original_" + stem(orig), a.work, sizes, batches, a.check)
    ex_p = export_all(pruned, "pruned_" + stem(pruned), a.work, sizes, batches, a.check)
    export_s = time.time() - t

    from ppyolo_slim.export.runtime import OnnxPredictor, PaddleInferencePredictor
    rows = []
    for backend in backends:
        for s in sizes:
            for b in batches:
                def make(folder):
                    if backend == "onnxruntime":
                        return OnnxPredictor(folder, device="cpu", threads=a.threads)
                    return PaddleInferencePredictor(folder, device="cpu", use_mkldnn=True, threads=a.threads)
                po, pp = make(ex_o[(s, b)]), make(ex_p[(s, b)])
                x = np.random.default_rng(0).random((b, 3, s, s), dtype=np.float32)
                times = C.interleaved({"original": lambda: po(x), "pruned": lambda: pp(x)},
                                      rounds=a.rounds, warmup=a.warmup)
                so, sp = C.stats(times["original"]), C.stats(times["pruned"])
                sp_up = C.ratio(times["original"], times["pruned"])
                flop_ratio = models["original"][f"gflops_{s}"] / models["pruned"][f"gflops_{s}"]
                row = {"backend": backend, "img_size": s, "batch": b, "original": so, "pruned": sp,
                       "speedup": sp_up, "flop_ratio": flop_ratio,
                       "options": {"threads": a.threads,
                                   **({"oneDNN": True} if backend == "paddle_inference" else {})}}
                rows.append(row)
                print(f"{backend:17s} {s:4d}px b{b}: original {so['median_ms']:8.1f} ms (p90 {so['p90_ms']:.1f}), "
                      f"pruned {sp['median_ms']:8.1f} ms (p90 {sp['p90_ms']:.1f}); speed-up "
                      f"{sp_up['median_of_pairs']:.2f}x, FLOP ratio {flop_ratio:.2f}x", flush=True)

    result.update({
        "weights": "random (yolov5n, nc=5, BN scales drawn uniform 0.05..1; latency does not depend "
                   "on the values)" if random_weights else "given",
        "prune_ratio": a.ratio if (random_weights or not a.pruned) else None,
        "round_to": a.round_to if (random_weights or not a.pruned) else None,
        "removed_share": removed, "models": models, "rounds": a.rounds, "warmup": a.warmup,
        "method": "both models exported per size/batch; each timed call alternates original/pruned "
                  "(order reversed every round); model only: random input, no letterbox, no NMS",
        "export_s": round(export_s, 1), "rows": rows, "seconds": round(time.time() - t0, 1)})
    C.write_result(name, a.quick, result)
    print(table(result))
    return 0


def table(result) -> str:
    rows = []
    for r in result["rows"]:
        rows.append([r["backend"], r["img_size"], r["batch"],
                     f"{r['original']['median_ms']:.1f} / {r['original']['p90_ms']:.1f}",
                     f"{r['pruned']['median_ms']:.1f} / {r['pruned']['p90_ms']:.1f}",
                     f"{r['speedup']['median_of_pairs']:.2f}x", f"{r['flop_ratio']:.2f}x"])
    return C.fmt_table(["runtime", "px", "batch", "original ms (median / p90)", "pruned ms (median / p90)",
                        "speed-up", "FLOP ratio"], rows)


if __name__ == "__main__":
    sys.exit(main())

"""Run a TensorRT engine built by trt_build.py on images, or benchmark it.

  python deploy/trt_infer.py --engine yolo.engine --source img.jpg|folder/ [--output output/trt]
  python deploy/trt_infer.py --engine yolo.engine --benchmark [--batch 8 --warmup 50 --iters 500]

Each image is letterboxed as in training, copied to the GPU, run with execute_async_v3;
an engine without NMS is decoded with the project's NMS (ppyolo_slim.engine), an engine
built with --nms gives its detections directly. Per image: the picture with boxes drawn
and a JSON file (boxes in original pixels). --benchmark reports latency percentiles and
throughput after a warm-up. Needs TensorRT and a GPU (exit 2 with the reason otherwise).

NEVER RUN on the machines this was written on (no GPU, no TensorRT): see deploy/README.md.
"""
import argparse
import os
import sys
import time

import ppyolo_slim  # noqa: F401  (native import order before paddle)

import numpy as np  # noqa: E402

EXIT_UNAVAILABLE = 2


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--engine", required=True, help=".engine written by deploy/trt_build.py (sidecar .json next to it)")
    p.add_argument("--source", help="an image, a folder of images or a glob")
    p.add_argument("--output", default="output/trt_infer",
                   help="folder for drawn images and JSON (default output/trt_infer)")
    p.add_argument("--conf-thres", type=float, default=0.25, help="score threshold (engines without --nms)")
    p.add_argument("--iou-thres", type=float, default=0.45, help="NMS IoU threshold (engines without --nms)")
    p.add_argument("--max-det", type=int, default=300)
    # --no-images as in tools/infer.py; --no-save-images, the first spelling, still works
    p.add_argument("--no-images", "--no-save-images", dest="no_images", action="store_true",
                   help="write the JSON files only")
    p.add_argument("--benchmark", action="store_true", help="time the engine instead of (or after) --source")
    p.add_argument("--batch", type=int, default=None, help="--benchmark batch (default: the engine's opt batch)")
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--iters", type=int, default=300)
    p.add_argument("--device", default="auto", help="GPU buffers: auto, paddle or cuda-python")
    p.add_argument("--benchmark-json", help="write the benchmark figures to this JSON file")
    p.add_argument("--compare-weights", help="also run this .pdparams in Paddle on each input and report "
                                             "the max |engine - paddle| (engines built without --nms)")
    a = p.parse_args(argv)
    if not a.source and not a.benchmark:
        p.error("give --source (images to run) and/or --benchmark")
    return a


def detect(engine, img: np.ndarray, conf: float, iou: float, max_det: int):
    """([n,6] (x1,y1,x2,y2,score,cls) in ``img``'s pixels, the input batch, the raw outputs);
    img: HxWx3 uint8 RGB."""
    from ppyolo_slim.data import letterbox
    from ppyolo_slim.engine.postprocess import non_max_suppression, scale_boxes
    h, w = engine.side["img_size"]
    lb, ratio, pad = letterbox(img, (h, w))
    x = np.ascontiguousarray(lb.transpose(2, 0, 1))[None].astype(np.float32) / 255.0
    b = engine.side["batch"]
    if b["min"] > 1:      # a fixed batch > 1: pad with zero images, keep the first result
        x = np.concatenate([x, np.zeros((b["min"] - 1,) + x.shape[1:], np.float32)])
    outs = engine.infer(x)
    if engine.side.get("nms"):
        d = engine.detections(outs, x.shape[0])[0]
    else:
        d = non_max_suppression(outs["output"][:1], conf, iou, max_det=max_det)[0]
    d = d.copy()
    d[:, :4] = scale_boxes(d[:, :4], ratio, pad, img.shape[:2])
    return d, x, outs


def run_images(engine, a) -> int:
    import cv2
    from ppyolo_slim.engine.draw import draw_detections
    from ppyolo_slim.engine.predict import detections_to_json, list_images, read_image_rgb
    from ppyolo_slim.utils.io import write_json
    from ppyolo_slim.utils.io import atomic_write_bytes
    files = list_images(a.source)
    os.makedirs(a.output, exist_ok=True)
    names = engine.side["names"]
    paddle_model = None
    if a.compare_weights:
        if engine.side.get("nms"):
            raise ValueError("--compare-weights needs an engine built without --nms (raw predictions)")
        paddle_model = ppyolo_slim.load_model(a.compare_weights)
    worst = 0.0
    for f in files:
        img = read_image_rgb(f)
        if img is None:
            print(f"skip {f}: cannot be read as an image")
            continue
        t = time.perf_counter()
        d, x, outs = detect(engine, img, a.conf_thres, a.iou_thres, a.max_det)
        ms = (time.perf_counter() - t) * 1000
        diff = None
        if paddle_model is not None:
            import paddle
            with paddle.no_grad():
                ref = paddle_model(paddle.to_tensor(x[:1])).numpy()
            diff = float(np.abs(outs["output"][:1] - ref).max())
            worst = max(worst, diff)
        stem = os.path.splitext(os.path.basename(f))[0]
        rec = {"image": os.path.abspath(f), "width": int(img.shape[1]), "height": int(img.shape[0]),
               "backend": "tensorrt", "engine": os.path.abspath(a.engine),
               "precision": engine.side.get("precision"), "nms_in_engine": bool(engine.side.get("nms")),
               "box_format": "xyxy pixels", "ms": round(ms, 2), "max_abs_diff_vs_paddle": diff,
               "detections": detections_to_json(d, names)}
        write_json(os.path.join(a.output, stem + ".json"), rec)
        if not a.no_images:
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(draw_detections(img, d, names), cv2.COLOR_RGB2BGR))
            if ok:
                atomic_write_bytes(os.path.join(a.output, stem + ".jpg"), buf.tobytes())
        print(f"{f}: {len(d)} detections, {ms:.1f} ms (letterbox + copy + execute + NMS)"
              + (f", max |engine - paddle| {diff:.3g}" if diff is not None else ""))
    if paddle_model is not None:
        print(f"max |engine - paddle| over {len(files)} images: {worst:.4g}")
    return 0


def benchmark(engine, batch: int, warmup: int, iters: int) -> dict:
    """Latency of infer() (host->device copy, execute_async_v3, sync, device->host copy)."""
    h, w = engine.side["img_size"]
    x = np.random.default_rng(0).uniform(0, 1, (batch, 3, h, w)).astype(np.float32)
    for _ in range(warmup):
        engine.infer(x)
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        engine.infer(x)
        times.append((time.perf_counter() - t) * 1000)
    t = np.asarray(times)
    return {"batch": batch, "iters": iters, "warmup": warmup, "mean_ms": float(t.mean()),
            "p50_ms": float(np.percentile(t, 50)), "p90_ms": float(np.percentile(t, 90)),
            "p99_ms": float(np.percentile(t, 99)), "min_ms": float(t.min()),
            "throughput_img_s": float(batch * 1000.0 / t.mean()),
            "precision": engine.side.get("precision"), "gpu": engine.gpu,
            "tensorrt_version": engine.side.get("tensorrt_version")}


def main(argv=None) -> int:
    a = parse_args(argv)
    from .trt_compat import TensorRTUnavailable
    from .trt_runtime import TrtEngine
    try:
        engine = TrtEngine(a.engine, device=a.device)
    except TensorRTUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    try:
        return _run(engine, a)
    finally:
        engine.close()       # device buffers and stream


def _run(engine, a) -> int:
    if a.source:
        run_images(engine, a)
    if a.benchmark:
        batch = a.batch or engine.side["batch"]["opt"]
        r = benchmark(engine, batch, a.warmup, a.iters)
        print(f"{a.engine}: batch {batch}, {r['precision']}: mean {r['mean_ms']:.2f} ms, p50 {r['p50_ms']:.2f}, "
              f"p90 {r['p90_ms']:.2f}, p99 {r['p99_ms']:.2f} ms; {r['throughput_img_s']:.1f} img/s "
              f"(after {a.warmup} warm-up runs, incl. host<->device copies)")
        if a.benchmark_json:
            from ppyolo_slim.utils.io import write_json
            write_json(a.benchmark_json, r)
    return 0


if __name__ == "__main__":
    sys.exit(main())

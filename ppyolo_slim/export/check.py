"""The post-export check: the exported files must compute what the dygraph model computes.

Each runtime's output on random input is compared with the dygraph model's (float32):
boxes in pixels, scores (obj, cls) as they are. What is allowed:

    boxes:  max(tol * img_size,  noise_factor * float32 noise of the boxes)
    scores: max(tol,             noise_factor * float32 noise of the scores)

``tol`` = 1e-4 (0.032 px at 320 px) is a floor far below anything that moves a detection.
The float32 noise is measured, not guessed: the largest difference between the dygraph
model in float32 and the same model in float64 on the same input, i.e. how much rounding
alone moves this model's outputs. Models with large activations (logits in the tens or
hundreds) round more, and a fixed absolute tolerance would call their correct exports wrong.
Measured here (Paddle 2.6.2, paddle2onnx 1.3.1, onnxruntime 1.32, CPU) on 21 models
(yolov5n/s, trained and random, 16 randomly initialised pruned-shaped ones) the exports
stayed within 0.7..2.5x of that noise; one random model with extreme activations reached
13x (ONNX Runtime and oneDNN fold BN into the conv weights, and sum in another order).
``noise_factor`` 50 covers that with margin, while scaling one conv's weights by 1 % moved
the outputs by 950..15000x the noise in the same models: a wrong export (a mis-mapped
weight, a dropped op, a truncated file) is still caught. NaN or inf, or a wrong shape,
always fails.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np

from ..compat import extract_onnx

DEFAULT_TOL = 1e-4
NOISE_FACTOR = 50.0


class ExportCheckError(RuntimeError):
    """The exported model's outputs differ from the dygraph model's (or it does not run)."""


def _maxdiff(a: np.ndarray, b: np.ndarray) -> Tuple[float, float]:
    d = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    d = np.where(np.isnan(d), np.inf, d)
    return float(d[..., :4].max(initial=0.0)), float(d[..., 4:].max(initial=0.0))


def compare(out: np.ndarray, ref: np.ndarray, img_size: int) -> Dict[str, Any]:
    """Differences of a [B,N,5+nc] output from the reference."""
    out, ref = np.asarray(out), np.asarray(ref)
    finite = bool(np.isfinite(out).all())
    if out.shape != ref.shape:
        return {"shape": list(out.shape), "expected_shape": list(ref.shape), "finite": finite,
                "max_abs_diff": float("inf"), "box_px": float("inf"), "box_rel_img": float("inf"),
                "score": float("inf")}
    box, score = _maxdiff(out, ref)
    return {"shape": list(out.shape), "finite": finite, "max_abs_diff": max(box, score),
            "box_px": box, "box_rel_img": box / float(img_size), "score": score}


def allowed(img_size: int, tol: float, noise: Optional[Dict[str, float]] = None,
            noise_factor: float = NOISE_FACTOR) -> Dict[str, float]:
    noise = noise or {"box_px": 0.0, "score": 0.0}
    return {"box_px": max(tol * img_size, noise_factor * noise["box_px"]),
            "score": max(tol, noise_factor * noise["score"])}


def within(diff: Dict[str, Any], limit: Dict[str, float]) -> bool:
    return bool(diff["finite"] and "expected_shape" not in diff
                and diff["box_px"] <= limit["box_px"] and diff["score"] <= limit["score"])


def describe_diff(name: str, diff: Dict[str, Any], limit: Dict[str, float]) -> str:
    if "expected_shape" in diff:
        return f"{name}: output shape {diff['shape']}, dygraph gives {diff['expected_shape']}"
    if not diff["finite"]:
        return f"{name}: output holds NaN or inf"
    return (f"{name} vs dygraph: max |diff| {diff['max_abs_diff']:.3g}; boxes {diff['box_px']:.3g} px "
            f"(allowed {limit['box_px']:.2g}), scores {diff['score']:.3g} (allowed {limit['score']:.2g}): "
            f"{'ok' if within(diff, limit) else 'DIFFERENT'}")


def check_inputs(img_size: int, batch: Optional[int], seed: int = 0) -> List[np.ndarray]:
    """Random RGB-in-[0,1] images; a dynamic-batch export is run at batch 1 and 2."""
    rng = np.random.default_rng(seed)
    sizes = [batch] if batch else [1, 2]
    return [rng.random((b, 3, img_size, img_size), dtype=np.float32) for b in sizes]


def _run(name: str, predictor: Callable[[np.ndarray], np.ndarray], xs: Iterable[np.ndarray]) -> List[np.ndarray]:
    try:
        return [np.asarray(predictor(x)) for x in xs]
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as e:   # any runtime failure of the exported file is a failed export
        raise ExportCheckError(f"{name}: running the exported model failed ({type(e).__name__}: {e})") from None


def synthetic_predictions(batch: int, num_boxes: int, nc: int, img_size: int, seed: int = 0) -> np.ndarray:
    """Raw [B,N,5+nc] predictions with many overlapping, confident boxes (an untrained model
    gives almost none above a real threshold, which would leave NMS untested)."""
    rng = np.random.default_rng(seed)
    p = np.empty((batch, num_boxes, 5 + nc), np.float32)
    p[..., :2] = rng.uniform(0, img_size, (batch, num_boxes, 2))
    p[..., 2:4] = rng.uniform(img_size / 20, img_size / 3, (batch, num_boxes, 2))
    p[..., 4:] = rng.uniform(0, 1, (batch, num_boxes, 1 + nc))
    return p


def _nms_equal(det: np.ndarray, raw: np.ndarray, conf_thres: float, iou_thres: float, max_det: int,
               what: str) -> Tuple[int, float]:
    from ..engine.postprocess import non_max_suppression
    worst, rows = 0.0, 0
    for b, r in enumerate(non_max_suppression(raw, conf_thres, iou_thres, max_det=max_det)):
        mine = det[det[:, 0] == b][:, 1:]
        if mine.shape != r.shape:
            raise ExportCheckError(f"ONNX NMS output ({what}): image {b} of a batch of {raw.shape[0]} has "
                                   f"{len(mine)} detections, the NumPy NMS keeps {len(r)}")
        if len(r):   # equal scores may come in either order: compare rows sorted on all columns
            worst = max(worst, float(np.abs(_rows_sorted(mine) - _rows_sorted(r)).max()))
        rows += len(r)
    if worst > 1e-3:
        raise ExportCheckError(f"ONNX NMS output ({what}) differs from the NumPy NMS by {worst:.3g}")
    return rows, worst


def _rows_sorted(a: np.ndarray) -> np.ndarray:
    return a[np.lexsort(a.T[::-1])]


def check_nms_output(onnx_path: str, session, xs: List[np.ndarray], raw_name: str, det_name: str,
                     conf_thres: float, iou_thres: float, max_det: int, img_size: int) -> Dict[str, Any]:
    """The file's NMS output must equal engine.postprocess.non_max_suppression (NumPy) on
    (a) the file's own raw output for the check images and (b) synthetic predictions full of
    confident overlapping boxes, fed to the NMS part cut out of the same file."""
    import onnx
    import onnxruntime as ort
    rows, worst = 0, 0.0
    for x in xs:
        det, raw = session.run([det_name, raw_name], {session.get_inputs()[0].name: x})
        r, w = _nms_equal(det, raw, conf_thres, iou_thres, max_det, "check images")
        rows, worst = rows + r, max(worst, w)
    tail = extract_onnx(onnx.load(onnx_path), [raw_name], [det_name])   # compat.py: onnx 1.17
    sess = ort.InferenceSession(tail.SerializeToString(), providers=["CPUExecutionProvider"])
    shape = session.get_outputs()[[o.name for o in session.get_outputs()].index(raw_name)].shape
    raw = synthetic_predictions(2, int(shape[1]), int(shape[2]) - 5, img_size)
    r2, w2 = _nms_equal(sess.run([det_name], {raw_name: raw})[0], raw, conf_thres, iou_thres, max_det,
                        "synthetic boxes")
    return {"rows_check_images": rows, "rows_synthetic": r2, "max_abs_diff": max(worst, w2)}


def check_export(folder: str, reference: Callable[[np.ndarray], np.ndarray],
                 reference64: Optional[Callable[[np.ndarray], np.ndarray]] = None, tol: float = DEFAULT_TOL,
                 noise_factor: float = NOISE_FACTOR, onnx: bool = True, paddle_inference: bool = True,
                 seed: int = 0, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Run ``folder``'s ONNX file (onnxruntime, CPU) and Paddle inference model (Paddle
    Inference, CPU, oneDNN) and ``reference`` (the dygraph model) on the same random input.
    ``reference64``, the same model in float64 (images given as float64), measures the
    float32 rounding noise that widens the tolerance (see the module doc); without it only
    ``tol`` applies. Returns the differences; raises ExportCheckError beyond them."""
    from .inference_cfg import read_infer_cfg
    from .runtime import OnnxPredictor, PaddleInferencePredictor
    cfg = read_infer_cfg(folder)
    img_size, batch = int(cfg["img_size"]), cfg.get("batch")
    xs = check_inputs(img_size, batch, seed)
    refs = [np.asarray(reference(x)) for x in xs]
    report: Dict[str, Any] = {"tolerance": tol, "noise_factor": noise_factor,
                              "input_batches": [int(x.shape[0]) for x in xs],
                              "input": "uniform random in [0, 1], seed %d" % seed}
    noise = None
    if reference64 is not None:
        pairs = [_maxdiff(r, reference64(x.astype(np.float64))) for x, r in zip(xs, refs)]
        noise = {"box_px": max(p[0] for p in pairs), "score": max(p[1] for p in pairs)}
        report["float32_noise"] = noise
        log(f"dygraph float32 vs float64 (rounding noise): boxes {noise['box_px']:.3g} px, "
            f"scores {noise['score']:.3g}")
    limit = report["allowed"] = allowed(img_size, tol, noise, noise_factor)
    failures = []
    runs = []
    if onnx and cfg.get("onnx_file"):
        try:
            pred = OnnxPredictor(os.path.join(folder, cfg["onnx_file"]), device="cpu")
        except Exception as e:
            raise ExportCheckError(f"onnxruntime cannot load {cfg['onnx_file']}: {e}") from None
        runs.append(("onnxruntime", pred))
    if paddle_inference:
        try:
            pred = PaddleInferencePredictor(folder, device="cpu", use_mkldnn=True)
        except Exception as e:
            raise ExportCheckError(f"Paddle Inference cannot load {folder}: {e}") from None
        runs.append(("paddle_inference", pred))
    for name, pred in runs:
        outs = _run(name, pred, xs)
        diffs = [compare(o, r, img_size) for o, r in zip(outs, refs)]
        worst = max(diffs, key=lambda d: (not d["finite"] or "expected_shape" in d,
                                          max(d["box_px"] / limit["box_px"], d["score"] / limit["score"])))
        report[name] = worst
        log(describe_diff(name, worst, limit))
        if not within(worst, limit):
            failures.append(describe_diff(name, worst, limit))
    if failures:
        raise ExportCheckError("the exported model does not compute what the dygraph model does:\n  "
                               + "\n  ".join(failures))
    post = cfg.get("postprocess", {})
    if onnx and cfg.get("onnx_file") and post.get("nms_in_onnx"):
        pred = dict(runs)["onnxruntime"]
        n = report["onnx_nms"] = check_nms_output(pred.source, pred.session, xs, "output0", "detections",
                                                  post["conf_thres"], post["iou_thres"], post["max_det"],
                                                  img_size)
        log(f"onnxruntime NMS output vs NumPy NMS: {n['rows_check_images']} detections on the check "
            f"images, {n['rows_synthetic']} on synthetic boxes, max |diff| {n['max_abs_diff']:.3g}: ok")
    return report

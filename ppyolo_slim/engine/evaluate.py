"""COCO mAP with the reference tool (pycocotools COCOeval), and the model-level evaluator.

``coco_evaluate`` scores detections already in original image pixels against Records;
``evaluate_model`` runs any predictor (dygraph, ONNX Runtime, Paddle Inference: a
callable images [B,3,S,S] -> [B,N,5+nc]) over letterboxed images and scores it.
"""
from __future__ import annotations

import contextlib
import io
import sys
import time
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..settings import AT_LEAST_1, SHARE, Section, section, setting
from .postprocess import non_max_suppression, scale_boxes
from .predict import run_predictor

COCO_STAT_NAMES = ["AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
                   "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large"]


class EvaluationError(ValueError):
    """Inputs the evaluator cannot score; the message says which and why."""


@section("eval")
class EvalConfig(Section):
    interval: int = setting(1, AT_LEAST_1)         # epochs between evaluations while training
    conf_thres: float = setting(0.001, SHARE)
    iou_thres: float = setting(0.6, SHARE)         # NMS
    max_det: int = setting(300, AT_LEAST_1)        # detections kept per image
    batch_size: int = setting(16, AT_LEAST_1)


def _quiet():
    # pycocotools prints progress on stdout; keep tool output to our own table
    return contextlib.redirect_stdout(io.StringIO())


def coco_ground_truth(records: Sequence[Any], names: Sequence[str]) -> Dict[str, Any]:
    """A COCO-format dataset dict of ``records``: category id = class index + 1, bbox xywh."""
    images, anns, seen = [], [], set()
    nc = len(names)
    for r in records:
        iid = int(r.image_id)
        if iid in seen:
            raise EvaluationError(f"{r.path}: image_id {iid} is used by two records; ids must be unique")
        seen.add(iid)
        images.append({"id": iid, "width": int(r.width), "height": int(r.height),
                       "file_name": str(r.path)})
        boxes = np.asarray(r.boxes, dtype=np.float64).reshape(-1, 4)
        classes = np.asarray(r.classes).reshape(-1)
        if len(classes) != len(boxes):
            raise EvaluationError(f"{r.path}: {len(boxes)} boxes but {len(classes)} class ids")
        for (x1, y1, x2, y2), c in zip(boxes, classes):
            if not 0 <= int(c) < nc:
                raise EvaluationError(f"{r.path}: class id {int(c)} outside 0..{nc - 1} ({nc} names)")
            w, h = x2 - x1, y2 - y1
            # ids start at 1: COCOeval treats a matched id of 0 as "no match"
            anns.append({"id": len(anns) + 1, "image_id": iid, "category_id": int(c) + 1,
                         "bbox": [float(x1), float(y1), float(w), float(h)],
                         "area": float(w * h), "iscrowd": 0})
    cats = [{"id": i + 1, "name": str(n)} for i, n in enumerate(names)]
    return {"images": images, "annotations": anns, "categories": cats}


def coco_detections(detections: Mapping[int, np.ndarray], nc: int,
                    image_ids: Optional[set] = None) -> np.ndarray:
    """Detections {image_id: [n,6] xyxy,score,cls} -> loadRes rows (image_id, x, y, w, h, score, cat)."""
    rows = []
    for iid, d in detections.items():
        d = np.asarray(d, dtype=np.float64).reshape(-1, 6)
        if not len(d):
            continue
        if image_ids is not None and int(iid) not in image_ids:
            raise EvaluationError(f"detections for image_id {iid}, which no record has")
        bad = (d[:, 5] < 0) | (d[:, 5] >= nc) | (d[:, 5] != np.round(d[:, 5]))
        if bad.any():
            raise EvaluationError(f"image_id {iid}: detection class {d[bad][0, 5]} outside 0..{nc - 1}")
        r = np.empty((len(d), 7))
        r[:, 0] = int(iid)
        r[:, 1:3] = d[:, 0:2]
        r[:, 3:5] = d[:, 2:4] - d[:, 0:2]
        r[:, 5] = d[:, 4]
        r[:, 6] = d[:, 5] + 1
        rows.append(r)
    return np.concatenate(rows) if rows else np.zeros((0, 7))


def _per_class_ap(precision: np.ndarray, k: int) -> Tuple[Optional[float], Optional[float]]:
    """(AP50-95, AP50) of category index k from COCOeval's precision [T,R,K,A,M]
    (area 'all', the largest maxDets), as PaddleDetection reports them; None without GT."""
    p = precision[:, :, k, 0, -1]
    p50 = p[0]
    ap = float(np.mean(p[p > -1])) if (p > -1).any() else None
    ap50 = float(np.mean(p50[p50 > -1])) if (p50 > -1).any() else None
    return ap, ap50


def coco_evaluate(records: Sequence[Any], detections: Mapping[int, np.ndarray],
                  names: Sequence[str], max_dets: int = 100) -> Dict[str, Any]:
    """Score ``detections`` {image_id: [n,6] (x1,y1,x2,y2,score,cls) in original pixels}
    against ``records`` with COCOeval (bbox). max_dets: COCO's per-image cap (100, the standard).

    Returns map50_95, map50 (= COCOeval stats[0], stats[1] at max_dets=100; 0.0 when
    undefined: no detections or no ground truth), per_class {name: AP50-95 or None if the class has no
    instances}, per_class_ap50, instances / images per class, counts and the 12 COCO stats."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    t0 = time.time()
    names = list(names)
    nc = len(names)
    if len(set(names)) != nc:
        raise EvaluationError(f"class names must be unique, got {names}")
    gt = coco_ground_truth(records, names)
    inst = np.zeros(nc, np.int64)
    imgs = np.zeros(nc, np.int64)
    for r in records:
        c = np.asarray(r.classes, dtype=np.int64).reshape(-1)
        inst += np.bincount(c, minlength=nc)
        imgs[np.unique(c)] += 1
    rows = coco_detections(detections, nc, {im["id"] for im in gt["images"]})
    out: Dict[str, Any] = {
        "map50_95": 0.0, "map50": 0.0,
        "per_class": {n: (0.0 if inst[i] else None) for i, n in enumerate(names)},
        "per_class_ap50": {n: (0.0 if inst[i] else None) for i, n in enumerate(names)},
        "instances": {n: int(inst[i]) for i, n in enumerate(names)},
        "images_with_class": {n: int(imgs[i]) for i, n in enumerate(names)},
        "num_images": len(records), "num_instances": int(inst.sum()),
        "num_detections": int(len(rows)), "max_dets": int(max_dets),
        "coco_stats": {k: None for k in COCO_STAT_NAMES}, "notes": [],
    }
    if not len(rows):
        out["notes"].append("no detections: every AP is 0")
    if not inst.sum():
        out["notes"].append("no ground-truth boxes: mAP is undefined, reported as 0")
    if not len(rows) or not inst.sum():
        out["eval_time_s"] = time.time() - t0
        return out

    with _quiet():
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(rows)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.maxDets = [1, 10, int(max_dets)]
        ev.evaluate()
        ev.accumulate()
        if max_dets == 100:
            ev.summarize()
    prec = ev.eval["precision"]            # [T iou, R recall, K class, A area, M maxDets]
    # as summarize() computes stats[0], stats[1], but at our max_dets (summarize hard-codes 100)
    p, p50 = prec[:, :, :, 0, -1], prec[0, :, :, 0, -1]
    out["map50_95"] = float(np.mean(p[p > -1])) if (p > -1).any() else 0.0
    out["map50"] = float(np.mean(p50[p50 > -1])) if (p50 > -1).any() else 0.0
    if max_dets == 100:
        # COCOeval writes -1 where a stat is undefined (e.g. no small objects): None in JSON
        out["coco_stats"] = {k: (float(s) if s > -1 else None) for k, s in zip(COCO_STAT_NAMES, ev.stats)}
    else:
        out["notes"].append("coco_stats not filled: COCO's summary is defined for max_dets=100")
    for k, n in enumerate(names):
        ap, ap50 = _per_class_ap(prec, k)
        out["per_class"][n] = ap
        out["per_class_ap50"][n] = ap50
    out["eval_time_s"] = time.time() - t0
    return out


def format_table(metrics: Mapping[str, Any]) -> str:
    """A table as ultralytics val.py prints it: one row for all classes, one per class."""
    names = list(metrics["per_class"])
    w = max([len("Class"), len("all")] + [len(n) for n in names]) + 2
    head = f"{'Class':>{w}}{'Images':>9}{'Instances':>11}{'AP50':>9}{'AP50-95':>9}"
    lines = [head, f"{'all':>{w}}{metrics['num_images']:>9}{metrics['num_instances']:>11}"
                   f"{metrics['map50']:>9.3f}{metrics['map50_95']:>9.3f}"]

    def fmt(v):
        return f"{v:>9.3f}" if v is not None else f"{'-':>9}"
    for n in names:
        lines.append(f"{n:>{w}}{metrics['images_with_class'][n]:>9}{metrics['instances'][n]:>11}"
                     f"{fmt(metrics['per_class_ap50'][n])}{fmt(metrics['per_class'][n])}")
    sp = metrics.get("speed_ms")
    if sp:
        lines.append("Speed: %.1f ms pre-process, %.1f ms inference, %.1f ms NMS per image at %s"
                     % (sp["preprocess"], sp["inference"], sp["nms"], sp.get("shape", "?")))
    for note in metrics.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)


def evaluate_model(predict_fn: Callable[[np.ndarray], np.ndarray], records: Sequence[Any],
                   names: Sequence[str], img_size: int, batch_size: int = 16,
                   conf_thres: float = 0.001, iou_thres: float = 0.6, max_det: int = 300,
                   multi_label: bool = True, workers: int = 0, max_dets: int = 100,
                   progress: bool = False) -> Tuple[Dict[str, Any], Dict[int, np.ndarray]]:
    """Letterbox each record's image to ``img_size``, run ``predict_fn`` (images float32
    [B,3,S,S] RGB in [0,1] -> [B,N,5+nc]), NMS (multi-label, as ultralytics val.py), map
    boxes back to original pixels and score with COCOeval.

    A predictor with an int attribute ``batch`` (fixed-batch export) is fed in chunks of that
    size. Returns (metrics as coco_evaluate plus speed_ms and time_s, {image_id: [n,6]})."""
    from ..data import DetectionDataset, build_loader

    if not records:
        raise EvaluationError("no images to evaluate (the val split is empty)")
    names = list(names)
    t_start = time.time()
    ds = DetectionDataset(list(records), img_size, len(names), augment=None)
    loader = build_loader(ds, batch_size, shuffle=False, workers=workers)
    detections: Dict[int, np.ndarray] = {}
    t_pre = t_inf = t_nms = 0.0
    seen = 0
    it = iter(loader)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(loader), desc="eval", file=sys.stderr, leave=False)
    while True:
        t0 = time.time()
        try:
            images, _, metas = next(it)
        except StopIteration:
            break
        t1 = time.time()
        pred = run_predictor(predict_fn, np.ascontiguousarray(images, dtype=np.float32))
        t2 = time.time()
        if pred.ndim != 3 or pred.shape[0] != images.shape[0] or pred.shape[2] != 5 + len(names):
            raise EvaluationError(
                f"the model returned shape {list(pred.shape)} for {images.shape[0]} images; expected "
                f"[{images.shape[0]}, N, {5 + len(names)}] for the data's {len(names)} classes")
        dets = non_max_suppression(pred, conf_thres, iou_thres, max_det=max_det, multi_label=multi_label)
        for d, m in zip(dets, metas):
            d = d.copy()
            d[:, :4] = scale_boxes(d[:, :4], m["ratio"], m["pad"], m["orig_shape"])
            detections[int(m["image_id"])] = d
        t3 = time.time()
        t_pre, t_inf, t_nms = t_pre + t1 - t0, t_inf + t2 - t1, t_nms + t3 - t2
        seen += images.shape[0]
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    metrics = coco_evaluate(records, detections, names, max_dets=max_dets)
    n = max(seen, 1)
    metrics["speed_ms"] = {"preprocess": 1000 * t_pre / n, "inference": 1000 * t_inf / n,
                           "nms": 1000 * t_nms / n, "shape": [batch_size, 3, img_size, img_size]}
    metrics["time_s"] = time.time() - t_start
    metrics["settings"] = {"img_size": img_size, "batch_size": batch_size, "conf_thres": conf_thres,
                           "iou_thres": iou_thres, "max_det": max_det, "multi_label": multi_label}
    return metrics, detections


def evaluate_on_data(predictor, data: str, img_size: int, batch_size: int = 16,
                     conf_thres: float = 0.001, iou_thres: float = 0.6, max_det: int = 300,
                     split: str = "val", progress: bool = False,
                     warn: Callable[[str], None] = lambda m: print(f"warning: {m}", file=sys.stderr)
                     ) -> Dict[str, Any]:
    """Evaluate a predictor (see engine/predict.py) on a split of a data spec (load_data's
    argument); class names come from the data. The report eval.json holds (flat: metrics,
    settings, model and data)."""
    from ..data import load_data

    spec = load_data(data)
    records = getattr(spec, split)
    names = list(spec.names)
    model_names = list(getattr(predictor, "names", []) or [])
    if model_names and len(model_names) != len(names):
        raise EvaluationError(f"{getattr(predictor, 'source', 'the model')} predicts {len(model_names)} "
                              f"classes ({', '.join(model_names)}) but {data} has {len(names)} "
                              f"({', '.join(names)})")
    if model_names and model_names != names:
        diff = [f"{i}: {a!r} vs {b!r}" for i, (a, b) in enumerate(zip(model_names, names)) if a != b]
        warn(f"the model's class names differ from the data's ({'; '.join(diff[:5])}); "
             f"using the data's names")
    if not records:
        raise EvaluationError(f"{data}: the {split} split has no usable images")
    metrics, _ = evaluate_model(predictor, records, names, img_size, batch_size, conf_thres=conf_thres,
                                iou_thres=iou_thres, max_det=max_det, progress=progress)
    report: Dict[str, Any] = {
        "map50_95": metrics["map50_95"], "map50": metrics["map50"],
        "model": getattr(predictor, "source", ""), "backend": getattr(predictor, "backend", ""),
        "data": data, "data_source": getattr(spec, "source", data), "split": split, "names": names,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    report.update({k: v for k, v in metrics.items() if k not in report})
    return report

"""``infer_cfg.yml``: what a deployment needs to know about an exported model.

Written beside ``model.pdmodel`` / ``model.onnx`` (the way PaddleDetection's exporter
writes its own): input name, layout and size, the pre-processing the model was trained
with, class names, thresholds and the output layout. The predictors in ``runtime.py``
read it; so can any C++ or Python deployment without importing this package.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence

import yaml

CFG_NAME = "infer_cfg.yml"
FORMAT = "ppyolo_slim-export"
FORMAT_VERSION = 1

RAW_LAYOUT = ("[B, N, 5+nc] float32 per anchor box: cx, cy, w, h (pixels of the letterboxed "
              "input), objectness (sigmoid), nc class probabilities (sigmoid); score = obj * cls "
              "(the ultralytics YOLOv5 output layout)")
NMS_LAYOUT = ("[K, 7] float32, one row per kept box of the whole batch: batch_index, x1, y1, x2, y2 "
              "(pixels of the letterboxed input), score (obj * cls), class_id; sorted by batch "
              "index, then score (best first). Best class per box (not multi-label), per-class "
              "NMS, at most max_det boxes per class and image.")


class InferCfgError(ValueError):
    """An infer_cfg.yml that cannot be used; the message names the file."""


def build_infer_cfg(*, names: Sequence[str], img_size: int, batch: Optional[int], stride: int,
                    anchors: Sequence[Sequence[float]], num_boxes: int, paddle_output: str,
                    onnx_file: Optional[str], onnx_outputs: Optional[Dict[str, str]],
                    opset: Optional[int], conf_thres: float, iou_thres: float, max_det: int,
                    nms_in_onnx: bool, source: str, model_file: str = "model.pdmodel") -> Dict[str, Any]:
    nc = len(names)
    shape: List[Any] = [batch if batch else -1, 3, img_size, img_size]
    cfg: Dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "arch": "YOLOv5",
        "source_weights": source,
        "model_file": model_file,                      # model.json from Paddle 3 (compat.py)
        "params_file": "model.pdiparams",
        "onnx_file": onnx_file,
        "opset": opset,
        "img_size": int(img_size),
        "batch": int(batch) if batch else None,       # None: any batch (dynamic)
        "dynamic_batch": not batch,
        "stride": int(stride),
        "nc": nc,
        "label_list": list(names),
        "anchors": [list(map(float, a)) for a in anchors],
        "input": {"name": "images", "layout": "NCHW", "dtype": "float32", "shape": shape},
        "preprocess": {
            "color": "RGB",
            "letterbox": {"size": int(img_size), "keep_ratio": True, "centered": True,
                          "pad_value": 114, "scaleup": True},
            "scale": "1/255",                          # x = rgb_uint8 / 255.0, no mean/std
            "mean": [0.0, 0.0, 0.0],
            "std": [1.0, 1.0, 1.0],
        },
        "output": {
            "paddle": {"name": paddle_output, "kind": "raw", "shape": [shape[0], int(num_boxes), nc + 5]},
        },
        "layouts": {"raw": RAW_LAYOUT, "nms": NMS_LAYOUT if nms_in_onnx else None},
        "postprocess": {
            "conf_thres": float(conf_thres),
            "iou_thres": float(iou_thres),
            "max_det": int(max_det),
            "multi_label": False,
            "nms_in_onnx": bool(nms_in_onnx),
        },
        "draw_threshold": float(conf_thres),
    }
    if onnx_outputs:
        cfg["output"]["onnx"] = {   # in the graph's output order
            name: {"kind": kind, "shape": [shape[0], int(num_boxes), nc + 5] if kind == "raw" else [-1, 7]}
            for name, kind in onnx_outputs.items()}
    return cfg


class _Dumper(yaml.SafeDumper):
    """Short lists of numbers on one line ([1, 3, 320, 320]); everything else block style."""


def _represent_list(dumper, data):
    flow = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in data) and len(data) <= 8
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def dump_infer_cfg(cfg: Dict[str, Any]) -> bytes:
    head = ("# ppyolo_slim export: how to feed the exported model and read its output.\n"
            "# Written by tools/export.py; read by ppyolo_slim.export.runtime.\n")
    return (head + yaml.dump(cfg, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)).encode()


def read_infer_cfg(folder_or_file: str) -> Dict[str, Any]:
    path = folder_or_file
    if os.path.isdir(path):
        path = os.path.join(path, CFG_NAME)
    if not os.path.isfile(path):
        raise InferCfgError(f"{path}: no such file (an export folder written by tools/export.py "
                            f"holds model.pdmodel or model.json, model.pdiparams and {CFG_NAME})")
    try:
        with open(path, "r", encoding="utf-8") as f:
            cfg = yaml.safe_load(f)
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:
        raise InferCfgError(f"{path}: not readable as YAML ({e})") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise InferCfgError(f"{path}: not a {FORMAT} file (format: "
                            f"{cfg.get('format') if isinstance(cfg, dict) else None!r})")
    for key, typ in (("img_size", int), ("label_list", list), ("nc", int)):
        if not isinstance(cfg.get(key), typ):
            raise InferCfgError(f"{path}: '{key}' must be {typ.__name__}, got {cfg.get(key)!r}")
    if len(cfg["label_list"]) != cfg["nc"]:
        raise InferCfgError(f"{path}: nc is {cfg['nc']} but label_list has {len(cfg['label_list'])} names")
    return cfg

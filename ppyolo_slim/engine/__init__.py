"""Training, loss, postprocess, evaluation, prediction.

Names are resolved lazily so ``import ppyolo_slim.engine`` pulls in neither paddle nor
pycocotools; the NMS / evaluation path works with the ONNX backend alone.
"""
from importlib import import_module

_LAZY = {
    "non_max_suppression": "postprocess", "scale_boxes": "postprocess", "clip_boxes": "postprocess",
    "xywh2xyxy": "postprocess", "box_iou": "postprocess", "nms": "postprocess",
    "coco_evaluate": "evaluate", "evaluate_model": "evaluate", "format_table": "evaluate",
    "EvaluationError": "evaluate",
    "draw_detections": "draw",
    "Predictor": "predict", "DygraphPredictor": "predict", "load_predictor": "predict",
    "infer_images": "predict", "predict_image": "predict", "PredictorUnavailable": "predict",
    "ComputeLoss": "loss",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

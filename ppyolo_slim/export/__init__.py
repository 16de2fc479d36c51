"""Export (paddle.jit.save, paddle2onnx) and the predictors of exported models.

Names resolve lazily: ``from ppyolo_slim.export import OnnxPredictor`` needs onnxruntime
only, not the exporter's dependencies.
"""
from importlib import import_module

_LAZY = {
    "export_model": "exporter", "export_layer": "exporter", "ExportError": "exporter",
    "check_export": "check", "ExportCheckError": "check", "DEFAULT_TOL": "check",
    "OnnxPredictor": "runtime", "PaddleInferencePredictor": "runtime", "ExportedModelError": "runtime",
    "latency_ms": "runtime",
    "read_infer_cfg": "inference_cfg", "InferCfgError": "inference_cfg",
    "nms_model": "onnx_graph", "OnnxExportError": "onnx_graph",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

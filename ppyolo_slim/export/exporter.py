"""Export a YOLOv5 checkpoint: Paddle inference model (paddle.jit.save), ``infer_cfg.yml``,
``model.onnx`` (paddle2onnx 1.3.1), the ONNX Runtime / Paddle Inference check against
dygraph, and ``export_report.json``.

Everything is written into a temporary folder beside the destination and moved there
only after the check passed, so a failed export leaves nothing at the final path (a new
folder appears in one rename; into an existing folder each file is replaced atomically).
"""
from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
from typing import Any, Callable, Dict, Optional

import numpy as np

from ..compat import MODEL_FILES, saved_model_file, saved_output_name
from ..utils.io import dumps
from .check import DEFAULT_TOL, ExportCheckError, check_export
from .inference_cfg import CFG_NAME, build_infer_cfg, dump_infer_cfg
from .onnx_graph import (MIN_NMS_OPSET, NMS_OUTPUT, RAW_OUTPUT, OnnxExportError, append_nms,
                         check_and_serialise, finalize, paddle_to_onnx)
from .runtime import ONNX_FILE, PADDLE_PARAMS

REPORT_NAME = "export_report.json"
# checked with paddle2onnx 1.3.1: opsets 7-10 abort on this model (Resize), 20+ are refused
MIN_OPSET, MAX_OPSET = 11, 19
# every file an export may write; a re-export into the same folder removes the ones it did not write
KNOWN_FILES = (*MODEL_FILES, PADDLE_PARAMS, PADDLE_PARAMS + ".info", ONNX_FILE, CFG_NAME, REPORT_NAME)


class ExportError(RuntimeError):
    """An export that cannot be done as asked; the message says why."""


def _fresh_copy(model):
    """A CPU twin of ``model`` in eval mode, built from its own layer list and shapes.
    Exporting a twin keeps the caller's model untouched (to_static rewrites a Layer's
    forward, and Detect caches its grids per input size)."""
    import paddle
    from ..model.yolo import YOLOv5
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    twin = YOLOv5(model.net, {k: v.shape for k, v in state.items()})
    twin.set_state_dict(state)
    twin.eval()
    return twin


def _float64_twin(model, img_size: int) -> Callable[[np.ndarray], np.ndarray]:
    """The model in float64, as a function of float64 images: the check measures the
    float32 rounding noise of this model against it (check.py)."""
    from ..model.yolo import float64_twin
    return float64_twin(model, img_size)


def _paddle_output_name(model_file: str) -> str:
    """The fetch target of a saved inference program (what Paddle Inference names the output)."""
    name = saved_output_name(model_file)
    if not name:
        raise ExportError(f"{model_file}: the saved program has no output (fetch op)")
    return name


def _versions() -> Dict[str, str]:
    import onnx
    import onnxruntime
    import paddle
    import paddle2onnx
    from .. import __version__
    return {"ppyolo_slim": __version__, "paddlepaddle": paddle.__version__, "paddle2onnx": paddle2onnx.__version__,
            "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def _check_args(img_size: int, batch: Optional[int], opset: int, nms: bool, onnx: bool) -> None:
    if not isinstance(img_size, (int, np.integer)) or img_size < 32 or img_size % 32:
        raise ExportError(f"--img-size must be a positive multiple of 32 (the largest stride), got {img_size}")
    if batch is not None and batch < 1:
        raise ExportError(f"--batch must be >= 1, got {batch} (or use --dynamic-batch)")
    if onnx and not MIN_OPSET <= opset <= MAX_OPSET:
        # paddle2onnx aborts the whole process (SIGABRT) on an opset it cannot do: refuse first
        raise ExportError(f"--opset {opset}: this model exports with opsets {MIN_OPSET}..{MAX_OPSET} "
                          f"(paddle2onnx 1.3.1; 13 is the default)")
    if nms and not onnx:
        raise ExportError("--nms puts NMS into the ONNX file; it cannot be combined with --no-onnx")
    if nms and opset < MIN_NMS_OPSET:
        raise ExportError(f"--nms needs --opset {MIN_NMS_OPSET} or newer (NonMaxSuppression, GatherND), "
                          f"got {opset}")


def _write_onnx(model_file, params_file, path, meta, names, img_size, batch, strides, opset, nms,
                conf_thres, iou_thres, max_det, source) -> Dict[str, str]:
    """paddle2onnx, then ultralytics-style names and metadata, then NMS if asked.
    Returns {output name: 'raw' | 'nms'} in the graph's output order."""
    record = {"raw_output": RAW_OUTPUT, "nms_output": NMS_OUTPUT if nms else None, "img_size": img_size,
              "batch": batch, "nc": len(names), "anchors": meta.anchors, "strides": strides,
              "conf_thres": conf_thres, "iou_thres": iou_thres, "max_det": max_det,
              "source": os.path.basename(source) if source else ""}
    try:
        onnx_model = finalize(paddle_to_onnx(model_file, params_file, opset), names=names,
                              img_size=img_size, batch=batch, stride=max(strides), record=record)
        if nms:
            append_nms(onnx_model, len(names), conf_thres, iou_thres, max_det)
        data = check_and_serialise(onnx_model)
    except (OnnxExportError, ValueError) as e:
        raise ExportError(str(e)) from None
    with open(path, "wb") as f:
        f.write(data)
    return {NMS_OUTPUT: "nms", RAW_OUTPUT: "raw"} if nms else {RAW_OUTPUT: "raw"}


def _publish(tmp: str, output: str) -> None:
    written = set(os.listdir(tmp))
    if not os.path.exists(output):
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)   # mkdtemp made it 0700
        os.rename(tmp, output)
        return
    for name in sorted(written, key=lambda n: n == REPORT_NAME):   # the report last: it vouches for the rest
        os.replace(os.path.join(tmp, name), os.path.join(output, name))
    for name in KNOWN_FILES:
        if name not in written and os.path.isfile(os.path.join(output, name)):
            os.unlink(os.path.join(output, name))   # e.g. an older model.onnx after --no-onnx


def export_layer(model, meta, output: str, img_size: Optional[int] = None, batch: Optional[int] = 1,
                 opset: int = 13, nms: bool = False, onnx: bool = True, check: bool = True,
                 conf_thres: float = 0.25, iou_thres: float = 0.45, max_det: int = 300,
                 tol: float = DEFAULT_TOL, source: str = "",
                 log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Export a YOLOv5 Layer with its ModelMeta into the folder ``output``.

    ``batch``: a fixed batch, or None for a dynamic batch axis. ``nms``: append NMS to the
    ONNX graph (outputs ``detections`` [K,7] and ``output0``). ``check``: run the ONNX and
    Paddle Inference outputs against dygraph and fail beyond ``tol`` (see check.py).
    Returns the report also written to ``export_report.json``."""
    import paddle
    prev = paddle.get_device()
    paddle.set_device("cpu")   # export and reference on CPU: the exported files are device-free
    try:
        return _export(model, meta, output, img_size, batch, opset, nms, onnx, check, conf_thres,
                       iou_thres, max_det, tol, source, log)
    finally:
        paddle.set_device(prev)


def _export(model, meta, output, img_size, batch, opset, nms, onnx, check, conf_thres, iou_thres,
            max_det, tol, source, log) -> Dict[str, Any]:
    import paddle
    from paddle.static import InputSpec
    from ..engine.predict import DygraphPredictor
    from ..model.flops import gflops
    from ..model.yolo import count_parameters

    img_size = int(img_size or meta.img_size)
    _check_args(img_size, batch, opset, nms, onnx)
    output = os.path.abspath(output)
    if os.path.exists(output) and not os.path.isdir(output):
        raise ExportError(f"--output {output} is a file; give a folder")
    parent = os.path.dirname(output)
    os.makedirs(parent, exist_ok=True)
    names = list(meta.names)
    nc = len(names)
    if nc != model.nc:
        raise ExportError(f"{source or 'model'}: metadata names {nc} classes, the model has nc={model.nc}")
    strides = [int(s) for s in model.detect.stride]
    num_boxes = model.detect.na * sum((img_size // s) ** 2 for s in strides)
    timings: Dict[str, float] = {}
    t_all = time.time()
    reference = _fresh_copy(model)   # eager CPU twin: the check's reference, FLOPs, parameters
    log(f"exporting {source or 'model'}: nc={nc}, {count_parameters(reference):,} parameters, "
        f"{img_size}x{img_size}, batch {batch or 'dynamic'} -> {output}")

    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(output)}.export-{os.getpid()}-", dir=parent)
    try:
        t = time.time()
        twin = _fresh_copy(model)
        spec = [InputSpec([batch or None, 3, img_size, img_size], "float32", name="images")]
        try:
            static = paddle.jit.to_static(twin, input_spec=spec, full_graph=True)
            paddle.jit.save(static, os.path.join(tmp, "model"))
        except Exception as e:
            raise ExportError(f"paddle.jit.save could not trace the model ({type(e).__name__}: "
                              f"{str(e).strip().splitlines()[-1] if str(e).strip() else e})") from None
        timings["jit_save_s"] = time.time() - t
        model_file, params_file = os.path.join(tmp, saved_model_file()), os.path.join(tmp, PADDLE_PARAMS)
        paddle_out = _paddle_output_name(model_file)
        log(f"paddle.jit.save: {os.path.basename(model_file)} + {PADDLE_PARAMS} "
            f"({os.path.getsize(params_file) / 1e6:.1f} MB) in {timings['jit_save_s']:.1f} s")

        onnx_outputs = None
        if onnx:
            t = time.time()
            onnx_outputs = _write_onnx(model_file, params_file, os.path.join(tmp, ONNX_FILE), meta, names,
                                       img_size, batch, strides, opset, nms, conf_thres, iou_thres, max_det,
                                       source)
            timings["onnx_s"] = time.time() - t
            log(f"paddle2onnx, opset {opset}: {ONNX_FILE} "
                f"({os.path.getsize(os.path.join(tmp, ONNX_FILE)) / 1e6:.1f} MB), outputs "
                f"{', '.join(onnx_outputs)} in {timings['onnx_s']:.1f} s")

        cfg = build_infer_cfg(names=names, img_size=img_size, batch=batch, stride=max(strides),
                              anchors=meta.anchors, num_boxes=num_boxes, paddle_output=paddle_out,
                              onnx_file=ONNX_FILE if onnx else None, onnx_outputs=onnx_outputs,
                              opset=opset if onnx else None, conf_thres=conf_thres, iou_thres=iou_thres,
                              max_det=max_det, nms_in_onnx=nms, source=os.path.basename(source) if source else "",
                              model_file=os.path.basename(model_file))
        with open(os.path.join(tmp, CFG_NAME), "wb") as f:
            f.write(dump_infer_cfg(cfg))

        checked: Dict[str, Any] = {"skipped": True}
        if check:
            t = time.time()
            checked = check_export(tmp, DygraphPredictor(reference, names=names),
                                   reference64=_float64_twin(model, img_size), tol=tol, onnx=onnx, log=log)
            timings["check_s"] = time.time() - t
        timings["total_s"] = time.time() - t_all
        sizes = {n: os.path.getsize(os.path.join(tmp, n)) for n in sorted(os.listdir(tmp))}
        report = {
            "output": output, "source": source, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "img_size": img_size, "batch": batch, "dynamic_batch": batch is None, "opset": opset if onnx else None,
            "nms_in_onnx": nms, "nc": nc, "names": names, "num_boxes": num_boxes,
            "parameters": count_parameters(reference), "gflops": round(gflops(reference, img_size), 4),
            "paddle_output": paddle_out,
            "onnx_outputs": {k: ([batch or "batch", num_boxes, nc + 5] if v == "raw" else ["num_detections", 7])
                             for k, v in (onnx_outputs or {}).items()},
            "check": checked, "sizes_bytes": sizes, "timings_s": {k: round(v, 3) for k, v in timings.items()},
            "versions": _versions(), "made_by": getattr(meta, "made_by", {}),
        }
        with open(os.path.join(tmp, REPORT_NAME), "w", encoding="utf-8") as f:
            f.write(dumps(report))
        _publish(tmp, output)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    log(f"export {'checked and ' if check else ''}written in {time.time() - t_all:.1f} s -> {output}")
    return report


def export_model(weights: str, output: str, img_size: Optional[int] = None, batch: Optional[int] = 1,
                 **kw) -> Dict[str, Any]:
    """Export a ``.pdparams`` checkpoint (original, pruned or converted from ultralytics:
    the widths come from the file's shapes). Keyword arguments as ``export_layer``."""
    from .. import load_model
    model = load_model(weights)
    return export_layer(model, model.meta, output, img_size=img_size, batch=batch,
                        source=os.path.abspath(weights), **kw)


__all__ = ["export_model", "export_layer", "ExportError", "ExportCheckError", "KNOWN_FILES", "REPORT_NAME"]

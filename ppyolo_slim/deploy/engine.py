"""Build a serialized TensorRT engine (``.engine`` + ``.engine.json`` sidecar) on a GPU machine.

TensorRT 10/11 API: ``Builder.create_network`` (explicit batch is the only mode),
``build_serialized_network``, named I/O tensors, an optimisation profile for a dynamic
batch, ``set_memory_pool_limit`` for the workspace, TF32 cleared unless asked for. FP16 is
the strongly typed FP16 graph on both majors; INT8 from a tools/quant.py folder
(``int8_from``) is explicit Q/DQ in a strongly typed graph, on both majors; INT8 with the
calibrator (TensorRT 10 only) uses builder flags on a weakly typed network, calibrating at
the profile's opt batch, with the box decode pinned to FP32 (see trt_compat.precision_plan).

NEVER RUN on the machines this was written on (no GPU, no TensorRT): see deploy/README.md.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from ppyolo_slim.utils.io import atomic_write_bytes, write_json

from .builder import BuildOptions, NMSOptions, build_network, load_checkpoint
from .trt_compat import precision_plan, require_tensorrt_and_gpu, trt_major

SIDECAR_FORMAT = "ppyolo-slim-trt/1"


@dataclass
class EngineOptions:
    img_size: Tuple[int, int] = (640, 640)
    batch: int = 1                                   # fixed batch (also the profile's opt when dynamic)
    dynamic: Optional[Tuple[int, int, int]] = None   # (min, opt, max) batch: dynamic batch with a profile
    fp16: bool = False
    int8: bool = False
    strongly_typed: Optional[bool] = None            # None: only on TensorRT 11+
    workspace_gib: float = 4.0
    nms: Optional[NMSOptions] = None
    calib_dir: Optional[str] = None
    calib_cache: Optional[str] = None
    calib_batch: int = 8
    calib_images: int = 512
    int8_from: Optional[str] = None  # a tools/quant.py output folder: explicit Q/DQ with its scales
    bn_as_scale: bool = False
    tf32: bool = False           # TensorRT enables TF32 by default; off, so that "fp32" is FP32
    verbose: bool = False
    extra: Dict[str, Any] = field(default_factory=dict)


def sidecar_path(engine_path: str) -> str:
    return engine_path + ".json"


def build_engine(weights: str, engine_path: str, o: EngineOptions, log=print) -> Dict[str, Any]:
    """Build and write the engine and its sidecar atomically; returns the sidecar dict."""
    trt, gpu = require_tensorrt_and_gpu()
    plan = precision_plan(trt, o.fp16, o.int8, o.strongly_typed, int8_qdq=o.int8_from is not None)
    log(f"TensorRT {trt.__version__}, {gpu}; precision {plan['precision']}"
        + (" (strongly typed FP16 graph)" if plan["fp16_graph"] else "")
        + (f" (explicit Q/DQ, scales of {o.int8_from})" if o.int8_from else ""))
    scales = None
    if o.int8_from:
        from .qdq_check import int8_weights
        from .qdq_scales import load_qdq_scales
        scales = load_qdq_scales(o.int8_from)
        state, meta, weights = int8_weights(scales, weights)
    else:
        state, meta = load_checkpoint(weights)

    logger = trt.Logger(trt.Logger.VERBOSE if o.verbose else trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")          # registers EfficientNMS_TRT
    builder = trt.Builder(logger)
    flags = 0
    if plan["strongly_typed"] and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(o.workspace_gib * (1 << 30)))
    if not o.tf32:      # TF32 rounds conv inputs to 10-bit mantissas: a Paddle comparison would fail
        config.clear_flag(trt.BuilderFlag.TF32)

    dyn = o.dynamic
    bopts = BuildOptions(img_size=o.img_size, batch=o.batch, dynamic_batch=dyn is not None,
                         fp16_graph=plan["fp16_graph"], bn_as_scale=o.bn_as_scale, nms=o.nms, int8=scales)
    built = build_network(network, trt, state, meta, bopts)
    h, w = built.input_shape[2:]

    profile = None
    if dyn is not None:
        lo, opt, hi = dyn
        if not 1 <= lo <= opt <= hi:
            raise ValueError(f"--dynamic-batch needs 1 <= min <= opt <= max, got {dyn}")
        profile = builder.create_optimization_profile()
        profile.set_shape(built.input_name, (lo, 3, h, w), (opt, 3, h, w), (hi, 3, h, w))
        config.add_optimization_profile(profile)

    if plan["fp16_graph"] and not getattr(builder, "platform_has_fast_fp16", True):   # gone in TensorRT 11
        log("warning: this GPU has no fast FP16; the engine may not be faster than FP32")
    if plan["fp16_flag"]:      # INT8 on TensorRT 10 only: FP16 as the fallback of layers left unquantized
        config.set_flag(trt.BuilderFlag.FP16)
    calibrator = None
    if plan["int8_flag"]:
        from .calibrator import pin_float32
        calibrator = _int8_calibrator(trt, o, (h, w), dyn, log)
        pin_float32(network, config, trt, built.decode_layers)    # pixel boxes never on an 8-bit grid
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = calibrator
        if profile is not None:
            config.set_calibration_profile(profile)

    t0 = time.time()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT could not build the engine (its log above says why)")
    atomic_write_bytes(engine_path, bytes(memoryview(serialized)))
    side = {
        "format": SIDECAR_FORMAT, "engine": os.path.basename(engine_path),
        "weights": os.path.abspath(weights), "tensorrt_version": str(trt.__version__),
        "tensorrt_major": trt_major(trt), "gpu": gpu, "precision": plan["precision"],
        "strongly_typed": plan["strongly_typed"], "tf32": bool(o.tf32), "img_size": [h, w],
        "input": {"name": built.input_name, "shape": list(built.input_shape), "dtype": "float32"},
        "outputs": [{"name": n, "shape": list(s)} for n, s in built.outputs],
        "batch": {"min": dyn[0], "opt": dyn[1], "max": dyn[2]} if dyn else
                 {"min": o.batch, "opt": o.batch, "max": o.batch},
        "nc": built.nc, "names": built.names, "anchors": meta.anchors,
        "nms": None if o.nms is None else dict(vars(o.nms), backend_used=built.nms_backend),
        "layers": built.num_layers, "int8": built.int8,
        "build_seconds": round(time.time() - t0, 1), "made": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **o.extra,
    }
    write_json(sidecar_path(engine_path), side)
    del calibrator, built       # the weights TensorRT pointed at may go now
    return side


def _int8_calibrator(trt, o: EngineOptions, hw, dyn, log):
    from .calibrator import CalibrationImages, make_entropy_calibrator
    from .device import get_backend
    cache = o.calib_cache
    if not o.calib_dir and not (cache and os.path.isfile(cache)):
        raise ValueError("--int8 needs --calib-dir (a folder of representative images) or an existing --calib-cache")
    batch = dyn[1] if dyn is not None else o.batch   # TensorRT calibrates at the profile's opt shape
    if o.calib_batch != batch:
        log(f"calibrating with batch {batch}, the engine's {'opt' if dyn else 'fixed'} batch "
            f"(not --calib-batch {o.calib_batch}): TensorRT calibrates at the profile's opt shape")
    images = CalibrationImages(o.calib_dir, hw, batch, o.calib_images) if o.calib_dir else _NoImages(batch)
    return make_entropy_calibrator(trt, images, cache or "", get_backend(), log)


class _NoImages:
    """Calibration from the cache alone: TensorRT reads the cache and asks for no batch."""

    def __init__(self, batch):
        self.batch = batch

    def __len__(self):
        return 0

    def __iter__(self):
        return iter(())

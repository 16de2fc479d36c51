"""``trt_build.py --check``: the hand-built layer graph, run on the CPU, against the Paddle model.

The builder emits into a :class:`numpy_net.NumpyNetwork` (the same calls it makes on a
GPU), the stand-in executes them with TensorRT's layer semantics, and the output is
compared with ``ppyolo_slim.load_model(weights)`` on the same input. Two comparisons:

1. **exact**: the graph built with float64 weights (no float32 rounding of the folded BN)
   and run in float64, against the Paddle model rebuilt in float64. Both sides compute the
   same function in double precision, so they agree to ~1e-12 of the value; any layer that
   differs (rounding mode, eps, an anchor) shows up many orders of magnitude above
   ``EXACT_RTOL``, whatever the size of the model's activations.
2. **float32**: the graph as TensorRT gets it (float32 weights) against the float32 Paddle
   model, allowed max(atol, ``NOISE_FACTOR`` x the model's own float32 noise), the noise being
   max |Paddle float32 - Paddle float64| on the same input, for boxes and scores apart (as
   ppyolo_slim/export/check.py measures it). A fixed bound cannot work: the converted
   ultralytics fixture rounds by 0.035 px on a 702 px box side in Paddle alone.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from . import numpy_net
from .builder import BuildOptions, NMSOptions, build_network, load_checkpoint


@dataclass
class CheckReport:
    weights: str
    img_size: Tuple[int, int]
    batch: int
    output_shape: Tuple[int, ...]
    max_abs_diff: float
    worst: Dict[str, Any]          # where the largest difference is, in terms of the output
    tolerance: str
    passed: bool
    layers: int
    seconds_paddle: float
    seconds_numpy: float
    channels: Dict[str, int] = field(default_factory=dict)   # conv name -> output channels (from the weights)
    exact_max_rel_diff: float = float("nan")   # float64 graph vs Paddle in float64
    float32_noise: Dict[str, float] = field(default_factory=dict)   # Paddle float32 vs float64
    allowed: Dict[str, float] = field(default_factory=dict)
    fp16: Optional[Dict[str, float]] = None
    nms: Optional[Dict[str, Any]] = None

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


EXACT_RTOL = 1e-10     # float64 vs float64: measured 7e-16..9e-13 relative (deploy/README.md)
NOISE_FACTOR = 4.0     # float32 graph vs Paddle float32: measured 0.95..1.22 x the noise (deploy/README.md)


def float32_noise(ref32: np.ndarray, ref64: np.ndarray) -> Dict[str, float]:
    """How far float32 rounding alone moves this model: boxes (px) and scores apart."""
    from ppyolo_slim.export.check import _maxdiff
    box, score = _maxdiff(ref32, ref64)
    return {"box_px": box, "score": score}


def allowed(noise: Dict[str, float], atol: float = 1e-4, factor: float = NOISE_FACTOR) -> Dict[str, float]:
    return {k: max(atol, factor * v) for k, v in noise.items()}


def within_tolerance(got: np.ndarray, ref: np.ndarray, limit: Dict[str, float]) -> bool:
    """|got - ref| within ``limit`` (boxes: the first 4 fields, scores: the rest); NaN fails."""
    from ppyolo_slim.export.check import _maxdiff
    box, score = _maxdiff(got, ref)
    return bool(box <= limit["box_px"] and score <= limit["score"])


def exact_rel_diff(got: np.ndarray, ref: np.ndarray) -> float:
    d = np.abs(got.astype(np.float64) - ref.astype(np.float64)) / np.maximum(np.abs(ref), 1.0)
    return float(np.nan_to_num(d, nan=np.inf).max())


def check_input(img_size: Tuple[int, int], batch: int, seed: int = 0,
                image: Optional[str] = None) -> np.ndarray:
    """The input both sides see: a letterboxed image (repeated over the batch) or seeded noise in [0, 1]."""
    h, w = img_size
    if image:
        from .calibrator import load_letterboxed
        x = load_letterboxed(image, (h, w))[None]
        return np.ascontiguousarray(np.repeat(x, batch, 0))
    return np.random.default_rng(seed).uniform(0, 1, (batch, 3, h, w)).astype(np.float32)


def _describe(idx: Tuple[int, ...], nc: int, anchors_per_level: Sequence[int]) -> Dict[str, Any]:
    b, n, c = (int(v) for v in idx)
    level, start = 0, 0
    for lv, cnt in enumerate(anchors_per_level):
        if n < start + cnt:
            level = lv
            break
        start += cnt
    field_name = ["cx", "cy", "w", "h", "obj"][c] if c < 5 else f"cls{c - 5}"
    return {"batch": b, "row": n, "level": level, "field": field_name}


def run_paddle(weights: str, x: np.ndarray) -> np.ndarray:
    import paddle
    import ppyolo_slim
    model = ppyolo_slim.load_model(weights)
    with paddle.no_grad():
        return model(paddle.to_tensor(x)).numpy()


def run_paddle_float64(weights: str, x: np.ndarray) -> np.ndarray:
    """The same Paddle model rebuilt in float64 (weights, anchors, grids), on float64 input."""
    import ppyolo_slim
    from ppyolo_slim.model.yolo import float64_twin
    h, w = x.shape[2:]
    return float64_twin(ppyolo_slim.load_model(weights), h, w)(x)


def run_standin(state, meta, opts: BuildOptions, x: np.ndarray, float64: bool = True,
                strongly_typed: bool = False, raw64: bool = False) -> Tuple[Dict[str, np.ndarray], Any, Any]:
    flags = (1 << numpy_net.NetworkDefinitionCreationFlag.STRONGLY_TYPED.value) if strongly_typed else 0
    network = numpy_net.create_network(flags, float64=float64)
    built = build_network(network, numpy_net, state, meta, opts)
    return network.run({built.input_name: x}, raw=raw64), built, network


def check_against_paddle(weights: str, img_size=320, batch: int = 1, seed: int = 0,
                         image: Optional[str] = None, atol: float = 1e-4, fp16: bool = False,
                         nms: Optional[NMSOptions] = None, bn_as_scale: bool = False) -> CheckReport:
    """Build on the stand-in, run both on the same input, compare; see the module docstring."""
    state, meta = load_checkpoint(weights)
    h, w = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    opts = BuildOptions(img_size=(h, w), batch=batch, bn_as_scale=bn_as_scale)
    x = check_input((h, w), batch, seed, image)

    t0 = time.perf_counter()
    ref = run_paddle(weights, x)
    ref64 = run_paddle_float64(weights, x)
    t1 = time.perf_counter()
    outs, built, network = run_standin(state, meta, opts, x)
    t2 = time.perf_counter()
    got = outs["output"]
    if got.shape != ref.shape:
        raise AssertionError(f"the TensorRT graph gives {got.shape}, the Paddle model {ref.shape}")
    exact = run_standin(state, meta, replace(opts, float64_weights=True), x, raw64=True)[0]["output"]
    exact_rel = exact_rel_diff(exact, ref64)
    noise = float32_noise(ref, ref64)
    limit = allowed(noise, atol)
    d = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    idx = np.unravel_index(int(d.argmax()), d.shape)
    per_level = [3 * (h // s) * (w // s) for s in (8, 16, 32)]
    worst = _describe(idx, meta.nc, per_level)
    worst.update(paddle=float(ref[idx]), trt=float(got[idx]))
    channels = {}
    from ppyolo_slim.model.channels import resolve
    from .builder import netspec_for
    for r in resolve(netspec_for(meta), {k: v.shape for k, v in state.items()}):
        for cs in r.convs.values():
            channels[cs.name] = cs.c2
    passed = exact_rel <= EXACT_RTOL and within_tolerance(got, ref, limit)
    report = CheckReport(
        weights=weights, img_size=(h, w), batch=batch, output_shape=tuple(got.shape),
        max_abs_diff=float(d.max()), worst=worst,
        tolerance=(f"float64 graph vs Paddle float64: relative diff <= {EXACT_RTOL:g}; float32: boxes "
                   f"<= {limit['box_px']:.3g} px, scores <= {limit['score']:.3g} (max({atol:g}, "
                   f"{NOISE_FACTOR:g} x Paddle's float32 noise))"),
        passed=bool(passed), layers=network.num_layers,
        seconds_paddle=t1 - t0, seconds_numpy=t2 - t1, channels=channels,
        exact_max_rel_diff=exact_rel, float32_noise=noise, allowed=limit)

    if fp16:   # the strongly typed FP16 graph engine.py builds on TensorRT 10 and 11, emulated
        o16 = BuildOptions(img_size=(h, w), batch=batch, fp16_graph=True)
        got16 = run_standin(state, meta, o16, x, strongly_typed=True)[0]["output"]
        rel = np.abs(got16.astype(np.float64) - ref) / np.maximum(np.abs(ref), 1.0)
        report.fp16 = dict(float32_noise(got16, ref), max_abs_diff=float(np.abs(got16 - ref).max()),
                           max_rel_diff=float(rel.max()))
    if nms is not None:
        on = BuildOptions(img_size=(h, w), batch=batch, nms=nms)
        res, nbuilt, _ = run_standin(state, meta, on, x)
        from .trt_runtime import nms_detections
        dets = nms_detections(res, batch, nms.max_output_boxes)
        report.nms = {"backend": nbuilt.nms_backend, "num_detections": [len(d) for d in dets],
                      "max_output_boxes": nms.max_output_boxes}
    return report

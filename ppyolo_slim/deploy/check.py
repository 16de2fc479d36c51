"""``trt_build.py --check``: the hand-built layer graph, run on the CPU, against the Paddle model.

The builder emits into a :class:`numpy_net.NumpyNetwork` (the same calls it makes on a
GPU), the stand-in executes them with TensorRT's layer semantics, and the output is
compared with ``ppyolo_slim.load_model(weights)`` on the same input.

Tolerance: max |trt - paddle| < 1e-4, or, for values so large that 1e-4 is near what float32
can tell apart, 16 float32 spacings of the value (``ulps``). The stand-in runs in float64 by
default, so the difference measured is Paddle's own float32 rounding, accumulated over ~60
layers: on a trained model a decoded box side of 372 px came out exactly 4 spacings
(1.2e-4 px) off. A wrong layer shows up as 1e-2 or more (tests/test_deploy_build.py).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
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
    fp16: Optional[Dict[str, float]] = None
    nms: Optional[Dict[str, Any]] = None

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


ULPS = 16.0


def within_tolerance(got: np.ndarray, ref: np.ndarray, atol: float = 1e-4, ulps: float = ULPS) -> np.ndarray:
    """Elementwise: |got - ref| <= max(atol, ulps * float32 spacing at |ref|)."""
    spacing = np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
    return np.abs(got.astype(np.float64) - ref.astype(np.float64)) <= np.maximum(atol, ulps * spacing)


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


def run_standin(state, meta, opts: BuildOptions, x: np.ndarray, float64: bool = True,
                strongly_typed: bool = False) -> Tuple[Dict[str, np.ndarray], Any, Any]:
    flags = (1 << numpy_net.NetworkDefinitionCreationFlag.STRONGLY_TYPED.value) if strongly_typed else 0
    network = numpy_net.create_network(flags, float64=float64)
    built = build_network(network, numpy_net, state, meta, opts)
    return network.run({built.input_name: x}), built, network


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
    t1 = time.perf_counter()
    outs, built, network = run_standin(state, meta, opts, x)
    t2 = time.perf_counter()
    got = outs["output"]
    if got.shape != ref.shape:
        raise AssertionError(f"the TensorRT graph gives {got.shape}, the Paddle model {ref.shape}")
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
    report = CheckReport(
        weights=weights, img_size=(h, w), batch=batch, output_shape=tuple(got.shape),
        max_abs_diff=float(d.max()), worst=worst,
        tolerance=f"|diff| <= max({atol:g}, {ULPS:g} float32 ulps of the value)",
        passed=bool(within_tolerance(got, ref, atol).all()), layers=network.num_layers,
        seconds_paddle=t1 - t0, seconds_numpy=t2 - t1, channels=channels)

    if fp16:   # the strongly typed FP16 graph (TensorRT 11's way to FP16), emulated: informational
        o16 = BuildOptions(img_size=(h, w), batch=batch, fp16_graph=True)
        got16 = run_standin(state, meta, o16, x, strongly_typed=True)[0]["output"]
        rel = np.abs(got16.astype(np.float64) - ref) / np.maximum(np.abs(ref), 1.0)
        report.fp16 = {"max_abs_diff": float(np.abs(got16 - ref).max()), "max_rel_diff": float(rel.max())}
    if nms is not None:
        on = BuildOptions(img_size=(h, w), batch=batch, nms=nms)
        res = run_standin(state, meta, on, x)[0]
        report.nms = {"num_detections": res["num_detections"].reshape(-1).tolist(),
                      "max_output_boxes": nms.max_output_boxes}
    return report

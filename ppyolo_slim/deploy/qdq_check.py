"""``trt_build.py --check --int8-from DIR``: the explicit-INT8 layer graph, run on the CPU,
against onnxruntime running the folder's ``model_int8.onnx``.

The builder's INT8 network (Q/DQ on conv inputs and kernels, with the ONNX's scales and
integer kernels) runs on the NumPy stand-in, whose Q/DQ follow TensorRT's documented rule
(numpy_quant.py). The reference is onnxruntime, on the same input, twice:

1. **same placement** (the judged comparison): ``model_int8.onnx`` with its Q/DQ kept only on
   the edges into Convs (``quant_onnx.conv_edges_only``), i.e. the file's own Q/DQ nodes,
   scales and integer kernels where TensorRT's placement puts them, run with no graph
   optimisation (ONNX QuantizeLinear semantics, computed by onnxruntime). Both sides then
   hold the same integers everywhere but where a value lies within float32 rounding of a .5
   (the accumulation order differs), which moves one activation by one step. Allowed: max
   |diff| <= ``STRICT_FRACTION`` of how far INT8 moves the output from FP32 (max |INT8 -
   FP32| of the same graph), boxes and scores apart, plus a float32 floor. Measured on the
   tiny PTQ model (8 val images + 4 noise, 64 px): 9.2e-5 px and 9.3e-8 against 0.48 px and
   0.002: no integer differed. A 10 % wrong scale on one conv's input is far outside
   (tests/test_deploy_qdq.py).
2. **the file as written**, with onnxruntime's default optimisations (the QLinear kernels it
   deploys). paddle2onnx also quantizes the SiLU (its input, the sigmoid at 1/255 on uint8
   and the product), adds and concats, which TensorRT's placement leaves float (a uint8
   sigmoid grid has no symmetric INT8 equivalent). So this differs by about the file's own
   extra rounding: measured 1.02 px at the 99th percentile (the file vs FP32: 1.03 px).
   Allowed, as quant.check_int8 allows two INT8 runtimes: ``CHECK_FACTOR`` x the file's own
   INT8-vs-FP32 difference at the median and 99th percentile, plus its float floors.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Tuple

import numpy as np

from . import numpy_net
from .builder import BuildOptions, build_network, load_checkpoint
from .qdq_scales import QDQScales, ScalesError, load_qdq_scales

STRICT_FRACTION = 0.05             # of max |INT8 - FP32|: one flipped step is far less (module docstring)
STRICT_FLOOR = {"box_px": 1e-3, "score": 1e-5}      # float32 accumulation order
FILE_FLOOR = {"box_px": 0.05, "score": 1e-3}        # as quant.check_int8's


def int8_weights(scales: QDQScales, weights: Optional[str] = None):
    """(state, meta, path) of the weights the folder was quantized from: --weights, else the
    report's; a QAT checkpoint's float weights."""
    path = weights or scales.weights
    if not path:
        raise ScalesError(f"{os.path.dirname(scales.source)}/quant_report.json names no weights; pass --weights")
    state, meta = load_checkpoint(path)
    if any("._layer." in k or "_fake_quant_" in k for k in state):
        from ppyolo_slim.slim.quant import float_state
        state = float_state(state)
    return state, meta, path


def onnx_input_hw(path: str) -> Optional[Tuple[int, int]]:
    import onnx
    dims = onnx.load(path).graph.input[0].type.tensor_type.shape.dim
    hw = [d.dim_value for d in dims[2:]]
    return (hw[0], hw[1]) if len(hw) == 2 and all(hw) else None


def run_int8_standin(state, meta, scales: Optional[QDQScales], x: np.ndarray):
    """The strongly typed FP32 graph (with Q/DQ when ``scales``) on the stand-in: (output, BuiltNetwork)."""
    flags = 1 << numpy_net.NetworkDefinitionCreationFlag.STRONGLY_TYPED.value
    network = numpy_net.create_network(flags)
    built = build_network(network, numpy_net, state, meta,
                          BuildOptions(img_size=x.shape[2:], batch=x.shape[0], int8=scales))
    return network.run({built.input_name: x})["output"], built


def _ort(model_bytes: bytes, x: np.ndarray, optimize: bool) -> np.ndarray:
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def onnx_references(onnx_path: str, x: np.ndarray) -> Dict[str, np.ndarray]:
    """onnxruntime on the file with its Q/DQ at TensorRT's placement, and on the file as written."""
    import onnx
    from ppyolo_slim.slim.quant_onnx import conv_edges_only
    m = onnx.load(onnx_path)
    conv_edges_only(m)
    with open(onnx_path, "rb") as f:
        data = f.read()
    return {"same_placement": _ort(m.SerializeToString(), x, optimize=False), "file": _ort(data, x, optimize=True)}


def compare(got: np.ndarray, refs: Dict[str, np.ndarray], fp32: np.ndarray) -> Dict[str, Any]:
    """The two comparisons of the module docstring, with their allowances and verdicts."""
    from ppyolo_slim.slim.quant import CHECK_FACTOR, CHECK_QUANTILES, _quantiles
    if got.shape != refs["file"].shape:
        raise ScalesError(f"the INT8 graph gives {list(got.shape)}, model_int8.onnx {list(refs['file'].shape)}")
    same, file_ = _quantiles(got, refs["same_placement"]), _quantiles(got, refs["file"])
    int8_vs_fp32, file_vs_fp32 = _quantiles(got, fp32), _quantiles(refs["file"], fp32)
    failures, allowed_same, allowed_file = [], {}, {}
    for part in ("box_px", "score"):
        allowed_same[part] = STRICT_FRACTION * int8_vs_fp32[part]["max"] + STRICT_FLOOR[part]
        if not same[part]["max"] <= allowed_same[part]:     # NaN fails
            failures.append(f"same placement {part} max {same[part]['max']:.3g} > {allowed_same[part]:.3g}")
        for q in CHECK_QUANTILES:
            k = f"q{q}"
            allowed_file[f"{part} {k}"] = lim = CHECK_FACTOR * file_vs_fp32[part][k] + FILE_FLOOR[part]
            if not file_[part][k] <= lim:
                failures.append(f"file {part} {k} {file_[part][k]:.3g} > {lim:.3g}")
    return {"same_placement": same, "file": file_, "int8_vs_fp32": int8_vs_fp32, "file_vs_fp32": file_vs_fp32,
            "allowed_same_placement": allowed_same, "allowed_file": allowed_file,
            "failures": failures, "passed": not failures}


def check_int8_against_onnxruntime(folder: str, weights: Optional[str] = None, batch: int = 2, seed: int = 0,
                                   image: Optional[str] = None, x: Optional[np.ndarray] = None) -> Dict[str, Any]:
    """Build the INT8 graph from ``folder`` on the stand-in and compare it with onnxruntime."""
    from .check import check_input
    scales = load_qdq_scales(folder)
    state, meta, wpath = int8_weights(scales, weights)
    hw = onnx_input_hw(scales.source) or (scales.img_size, scales.img_size)
    if x is None:
        x = check_input(hw, batch, seed, image)
    got, built = run_int8_standin(state, meta, scales, x)
    fp32, _ = run_int8_standin(state, meta, None, x)
    rep = compare(got, onnx_references(scales.source, x), fp32)
    rep.update({"folder": folder, "weights": wpath, "img_size": list(hw), "batch": int(x.shape[0]),
                "layers": built.num_layers, "int8": built.int8})
    return rep

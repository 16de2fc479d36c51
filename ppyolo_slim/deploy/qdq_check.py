"""``trt_build.py --check --int8-from DIR``: the explicit-INT8 layer graph, run on the CPU,
against onnxruntime running the folder's ``model_int8.onnx``.

The builder's INT8 network (Q/DQ on conv inputs and kernels, with the ONNX's scales and
integer kernels) runs on the NumPy stand-in, whose Q/DQ follow TensorRT's documented rule
(numpy_quant.py). The reference is onnxruntime on the same input: ``model_int8.onnx`` with its
Q/DQ kept only on the edges into Convs (``quant_onnx.conv_edges_only``: the file's own Q/DQ
nodes, scales and integer kernels, placed where TensorRT's placement puts them), run without
graph optimisation (ONNX QuantizeLinear semantics), with every conv input's float tensor and
its integers as extra outputs; and the file as written, with onnxruntime's default
optimisations (the QLinear kernels it deploys). Judged:

1. **per layer, exact**: onnxruntime's float tensor into each conv input's QuantizeLinear,
   quantized by the stand-in's rule with the network's own scale constant, gives
   onnxruntime's integers. Measured: 0 of 8.7 M values differ (tiny PTQ model, 160 px, 8
   images). Allowed: ``TIE_FRACTION`` of the values one step apart (a division rounded the
   other way at a .5), none further. This is where a wrong scale fails.
2. **part by part**: the network run again with every conv input's Q passing on
   onnxruntime's integers instead of its own (``NumpyNetwork.run(overrides=)``), so each part
   between two Qs starts from the same integers on both sides. Each conv input's integers the
   stand-in then computes must be onnxruntime's, but for at most ``SEGMENT_TIES`` values (or
   ``SEGMENT_TIE_FRACTION`` of them) one step apart: the float convs sum in another order than
   onnxruntime's, and a value within float32 rounding of a .5 can round the other way. And the
   output (the float Detect convs and the decode, from the same integers) must match to
   float32 rounding (``SEGMENT_OUTPUT``). Measured: 5 of 8.7 M integers one step apart (160 px),
   2 of 1.4 M or none (64 px); outputs 9.2e-5 px, 1e-7. A wrong layer anywhere makes many
   integers differ right after it. Without the forcing, one such tie travels on and can grow
   (at 160 px on a random-weight model: 3 values at model.1 become up to 7 steps on 20 % of the
   head's values: random weights amplify it), which is why the free run is judged only by 3.
3. **outputs** of the free run, against the same placement and the file as written, as
   quant.check_int8 allows two INT8 runtimes: ``CHECK_FACTOR`` x how far INT8 moves that output from FP32 at the median and the
   99th percentile, plus its float floors. The file as written also quantizes what TensorRT's
   placement leaves float (SiLU input, the sigmoid at 1/255 on uint8, the product, adds and
   concats), so it differs by about its own extra rounding.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Tuple

import numpy as np

from . import numpy_net
from .builder import BuildOptions, build_network, load_checkpoint
from .qdq_scales import QDQScales, ScalesError, load_qdq_scales

TIE_FRACTION = 1e-5                 # per layer: measured 0
SEGMENT_TIES, SEGMENT_TIE_FRACTION = 8, 1e-4     # per conv input, one step: measured 0 to 3 values
SEGMENT_OUTPUT = {"box_px": 1e-3, "score": 1e-5}  # float32 rounding of the float head and decode
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


def run_int8_standin(state, meta, scales: Optional[QDQScales], x: np.ndarray,
                     forced: Optional[Dict[str, np.ndarray]] = None):
    """The strongly typed FP32 graph (with Q/DQ when ``scales``) on the stand-in: (output,
    BuiltNetwork, {conv: the int8 tensor its input Q makes}, {conv: that Q's scale}).
    ``forced`` ({conv: int8 tensor}): what each conv input's Q passes on instead of its own."""
    flags = 1 << numpy_net.NetworkDefinitionCreationFlag.STRONGLY_TYPED.value
    network = numpy_net.create_network(flags)
    built = build_network(network, numpy_net, state, meta,
                          BuildOptions(img_size=x.shape[2:], batch=x.shape[0], int8=scales))
    probes, qscale = {}, {}
    for layer in network._layers:            # the conv inputs' integers, as extra outputs
        if isinstance(layer, numpy_net.IQuantizeLayer) and layer.name.endswith(".input.quantize"):
            conv = layer.name[:-len(".input.quantize")]
            t = layer.get_output(0)
            t.name = probes[conv] = layer.name
            network.mark_output(t)
            qscale[conv] = np.asarray(layer._inputs[1]._producer.weights, np.float32).reshape(())
    overrides = {probes[c]: v for c, v in (forced or {}).items()}
    outs = network.run({built.input_name: x}, overrides=overrides)
    return outs["output"], built, {c: outs[n] for c, n in probes.items()}, qscale


def _ort(model_bytes: bytes, x: np.ndarray, optimize: bool, names=None):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    return sess.run(names, {sess.get_inputs()[0].name: x})


def onnx_references(scales: QDQScales, onnx_convs: Dict[str, str], x: np.ndarray) -> Dict[str, Any]:
    """onnxruntime on the file with its Q/DQ at TensorRT's placement (with each quantized conv
    input's float tensor and integers, as int8 zero point 0), and on the file as written."""
    import onnx
    from onnx import TensorProto, helper
    from ppyolo_slim.slim.quant_onnx import _Graph, conv_edges_only
    m = onnx.load(scales.source)
    conv_edges_only(m)
    G = _Graph(m)
    by_name = {n.name or n.output[0]: n for n in G.g.node if n.op_type == "Conv"}
    quant = {c.onnx_name: c for c in scales.convs if c.quantized}
    taps = {}
    for conv, oname in onnx_convs.items():
        if oname not in quant:
            continue
        q = G.prod[G.prod[by_name[oname].input[0]].input[0]]
        zp = quant[oname].input_zero_point
        taps[conv] = (q.input[0], q.output[0], zp)
        m.graph.output.extend([helper.make_tensor_value_info(q.input[0], TensorProto.FLOAT, None),
                               helper.make_tensor_value_info(q.output[0], TensorProto.UINT8 if zp else
                                                             TensorProto.INT8, None)])
    names = [m.graph.output[0].name] + sorted({n for f, i, _ in taps.values() for n in (f, i)})
    got = dict(zip(names, _ort(m.SerializeToString(), x, optimize=False, names=names)))
    with open(scales.source, "rb") as fh:
        data = fh.read()
    return {"same_placement": got[names[0]], "file": _ort(data, x, optimize=True)[0],
            "q_in": {c: got[f] for c, (f, _, _) in taps.items()},
            "q_out": {c: got[i].astype(np.int16) - zp for c, (_, i, zp) in taps.items()}}


def _int_diff(a: np.ndarray, b: np.ndarray) -> Dict[str, Any]:
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return {"values": int(d.size), "differ": int(np.count_nonzero(d)), "max_steps": int(d.max(initial=0))}


def compare(got: np.ndarray, refs: Dict[str, Any], fp32: np.ndarray, probes: Dict[str, np.ndarray],
            qscale: Dict[str, np.ndarray], forced: Tuple[np.ndarray, Dict[str, np.ndarray]]) -> Dict[str, Any]:
    """The three judgements of the module docstring, with what was measured and allowed.
    ``forced``: (output, conv-input integers) of the run whose Qs pass on onnxruntime's integers."""
    from ppyolo_slim.slim.quant import CHECK_FACTOR, CHECK_QUANTILES, _quantiles
    from .numpy_quant import quantize_int8
    if got.shape != refs["file"].shape:
        raise ScalesError(f"the INT8 graph gives {list(got.shape)}, model_int8.onnx {list(refs['file'].shape)}")
    failures = []
    missing = sorted(set(refs["q_out"]) ^ set(probes))
    if missing:
        failures.append(f"conv inputs quantized on one side only: {missing[:5]}")
    per_layer = {c: _int_diff(quantize_int8(refs["q_in"][c], qscale[c]), refs["q_out"][c])
                 for c in probes if c in refs["q_out"]}
    for c, d in per_layer.items():
        if d["max_steps"] > 1 or d["differ"] > TIE_FRACTION * d["values"]:
            failures.append(f"per layer: {c}'s input quantizes to other integers than onnxruntime's "
                            f"({d['differ']} of {d['values']}, up to {d['max_steps']} steps): a wrong scale")
    network = {c: _int_diff(probes[c], refs["q_out"][c]) for c in probes if c in refs["q_out"]}
    first = next((c for c, d in network.items() if d["differ"]), None)     # network (emission) order
    f_out, f_probes = forced
    segments = {c: _int_diff(f_probes[c], refs["q_out"][c]) for c in f_probes if c in refs["q_out"]}
    for c, d in segments.items():
        if d["max_steps"] > 1 or d["differ"] > max(SEGMENT_TIES, SEGMENT_TIE_FRACTION * d["values"]):
            failures.append(f"segment: {c}'s input integers, computed from onnxruntime's integers upstream, "
                            f"differ from onnxruntime's in {d['differ']} of {d['values']} values, up to "
                            f"{d['max_steps']} steps: the layers before it compute something else")
    tail = _quantiles(f_out, refs["same_placement"])      # Detect convs + decode from the same integers
    for part in ("box_px", "score"):
        if not tail[part]["max"] <= SEGMENT_OUTPUT[part]:
            failures.append(f"segment: output {part} max {tail[part]['max']:.3g} > {SEGMENT_OUTPUT[part]:.3g} "
                            "from the same integers: the head or decode computes something else")
    outputs = {}
    for key in ("same_placement", "file"):
        diff, effect = _quantiles(got, refs[key]), _quantiles(refs[key], fp32)
        allowed = {}
        for part in ("box_px", "score"):
            for q in CHECK_QUANTILES:
                k = f"q{q}"
                allowed[f"{part} {k}"] = lim = CHECK_FACTOR * effect[part][k] + FILE_FLOOR[part]
                if not diff[part][k] <= lim:      # NaN fails
                    failures.append(f"{key} output {part} {k} {diff[part][k]:.3g} > {lim:.3g}")
        outputs[key] = {"diff": diff, "int8_vs_fp32": effect, "allowed": allowed}
    total = {k: sum(d[k] for d in network.values()) for k in ("values", "differ")}
    return {"per_layer": {k: sum(d[k] for d in per_layer.values()) for k in ("values", "differ")},
            "segments": {"values": sum(d["values"] for d in segments.values()),
                         "differ": sum(d["differ"] for d in segments.values()),
                         "max_steps": max((d["max_steps"] for d in segments.values()), default=0),
                         "worst": max(segments, key=lambda c: segments[c]["differ"], default=None),
                         "output": tail},
            "first_divergence": None if first is None else dict(network[first], conv=first),
            "network_integers": dict(total, max_steps=max((d["max_steps"] for d in network.values()), default=0)),
            "outputs": outputs, "int8_vs_own_fp32": _quantiles(got, fp32),
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
    got, built, probes, qscale = run_int8_standin(state, meta, scales, x)
    fp32 = run_int8_standin(state, meta, None, x)[0]
    refs = onnx_references(scales, built.int8["onnx_convs"], x)
    forced = run_int8_standin(state, meta, scales, x, forced=refs["q_out"])
    rep = compare(got, refs, fp32, probes, qscale, (forced[0], forced[2]))
    rep.update({"folder": folder, "weights": wpath, "img_size": list(hw), "batch": int(x.shape[0]),
                "layers": built.num_layers, "int8": built.int8})
    return rep

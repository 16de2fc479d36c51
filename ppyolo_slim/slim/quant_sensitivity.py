"""Which parts of the INT8 model lose accuracy: val mAP of ``model_int8.onnx`` variants in
onnxruntime, each with one part put back in float.

* each quantized conv alone (its input and weights float),
* the SiLU: its input (the conv output), its sigmoid, its output quantization,
* the Detect convs, and the box decode (quantized as paddle2onnx would, for comparison).

A part "pays" to keep in float when its variant gains clearly more mAP than the run-to-run
noise of calibration; the report lists the gains, best first.
"""
from __future__ import annotations

import copy
import os
from typing import Any, Callable, Dict, List, Optional

import numpy as np


def _float_conv(model, conv_name: str) -> int:
    """Make one Conv float: its input and weight read the tensors before their Q/DQ."""
    from .quant_onnx import _Graph
    G = _Graph(model)
    conv = next(n for n in G.g.node if n.op_type == "Conv" and n.output[0] == conv_name)
    changed = 0
    for idx in (0, 1):
        dq = G.prod.get(conv.input[idx])
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        q = G.prod.get(dq.input[0])
        if q is not None and q.op_type == "QuantizeLinear":
            conv.input[idx] = q.input[0]
            changed += 1
    return changed


def _float_pairs(model, pick: Callable[[Any, Any, Any], bool]) -> int:
    """Remove the activation Q/DQ pairs for which ``pick(G, q, dq)`` holds."""
    from .quant_onnx import _Graph
    G = _Graph(model)
    return G.remove_pairs([(q, dq) for q, dq in G.qdq_pairs() if pick(G, q, dq)])


def _users(G, dq):
    return {u.op_type for u in G.cons.get(dq.output[0], [])}


def variants(model) -> Dict[str, Any]:
    """name -> ONNX model with that part float."""
    from .quant_onnx import _Graph, head_convs
    out: Dict[str, Any] = {}
    G = _Graph(model)
    heads = set(head_convs(model))
    for n in G.g.node:
        if n.op_type == "Conv" and n.output[0] not in heads:
            m = copy.deepcopy(model)
            if _float_conv(m, n.output[0]):
                out[f"conv:{n.output[0]}"] = m
    m = copy.deepcopy(model)
    out["silu_input (conv outputs)"] = m if _float_pairs(m, lambda G, q, dq: G.prod.get(q.input[0]) is not None
                                                         and G.prod[q.input[0]].op_type == "Conv") else None
    m = copy.deepcopy(model)
    out["silu_sigmoid"] = m if _float_pairs(m, lambda G, q, dq: G.prod.get(q.input[0]) is not None
                                            and G.prod[q.input[0]].op_type == "Sigmoid") else None
    m = copy.deepcopy(model)
    out["silu_output (conv inputs)"] = m if _float_pairs(m, lambda G, q, dq: "Conv" in _users(G, dq)) else None
    m = copy.deepcopy(model)
    if sum(_float_conv(m, h) for h in heads):
        out["detect_convs"] = m
    return {k: v for k, v in out.items() if v is not None}


CONV_LAYERS_KEY = "ppyolo_slim_conv_layers"   # metadata of a Paddle 3 model_int8.onnx (quant_pir.qdq_onnx)


def onnx_conv_layers(model) -> Dict[str, str]:
    """ONNX conv output name -> layer, from the metadata the Paddle 3 route writes (its ONNX
    conv names are paddle2onnx's, not the Paddle program's); {} when absent."""
    import json
    for p in model.metadata_props:
        if p.key == CONV_LAYERS_KEY:
            return dict(json.loads(p.value))
    return {}


def layer_names(fp32_dir: Optional[str]) -> Dict[str, str]:
    """ONNX conv output name (conv2d_12.tmp_0) -> the model's layer (model.4.m.0.cv1), by the
    order of the convs in the saved program and their weights' structured names."""
    if not fp32_dir or not os.path.isfile(os.path.join(fp32_dir, "model.pdmodel")):
        return {}   # a Paddle 3 (PIR) folder: the INT8 ONNX names its convs itself (onnx_conv_layers)
    from .quant_program import CONV_OPS, _args, _read, structured_names
    names = structured_names(fp32_dir)
    out = {}
    for op in _read(fp32_dir).blocks[0].ops:
        if op.type in CONV_OPS:
            w = _args(op, "Filter")[0]
            s = names.get(w, w)
            out[_args(op, "Output", True)[0]] = s[:-len(".weight")] if s.endswith(".weight") else s
    return out


def sensitivity(int8_onnx: str, fp32_onnx: str, data: str, img_size: int, names_by_conv: Dict[str, str],
                decode_int8_onnx: Optional[str] = None, limit: Optional[int] = None,
                log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Val mAP@0.5:0.95 of FP32, INT8 and each variant; ``gain`` = variant - INT8."""
    import onnx
    from ..data import load_data
    from ..engine.evaluate import evaluate_model
    from ..export.runtime import OnnxPredictor
    spec = load_data(data, verbose=False)
    recs = spec.val[:limit] if limit else spec.val

    def score(model_or_path) -> float:
        import tempfile
        path = model_or_path
        tmp = None
        if not isinstance(model_or_path, str):
            fd, tmp = tempfile.mkstemp(suffix=".onnx")
            os.close(fd)
            onnx.save(model_or_path, tmp)
            path = tmp
        try:
            pred = OnnxPredictor(path, device="cpu")
            pred.names = list(spec.names)
            m, _ = evaluate_model(pred, recs, spec.names, img_size, 16)
            return float(m["map50_95"])
        finally:
            if tmp:
                os.unlink(tmp)
    base = onnx.load(int8_onnx)
    names_by_conv = {**onnx_conv_layers(base), **names_by_conv}
    res: Dict[str, Any] = {"fp32": score(fp32_onnx), "int8": score(int8_onnx), "images": len(recs)}
    if decode_int8_onnx:
        res["decode_in_int8"] = score(decode_int8_onnx)
    rows: List[Dict[str, Any]] = []
    for name, m in variants(base).items():
        v = score(m)
        label = name
        if name.startswith("conv:"):
            label = "conv " + names_by_conv.get(name[5:], name[5:])
        rows.append({"float_part": label, "map50_95": v, "gain": v - res["int8"]})
    rows.sort(key=lambda r: -r["gain"])
    res["float_parts"] = rows
    log(f"sensitivity: FP32 {res['fp32']:.4f}, INT8 {res['int8']:.4f}"
        + (f", decode in INT8 {res['decode_in_int8']:.4f}" if decode_int8_onnx else "")
        + "; largest gains from keeping a part float: "
        + ", ".join(f"{r['float_part']} {r['gain']:+.4f}" for r in rows[:5]))
    return res

"""Graph edits on paddle2onnx's QDQ model (``deploy_backend='onnxruntime'``), and what the
result quantizes.

paddle2onnx 1.3.1 places Q/DQ pairs by its own op list, with the scales PaddleSlim
collected for every tensor. Measured on this project's YOLOv5n (Paddle 2.6.2, paddle2onnx
1.3.1, onnxruntime 1.2x, x86 with AVX-512 VNNI), three things need fixing:

* activations are written as int8 with zero point 0. onnxruntime's x86 QDQ fusion takes
  uint8 activations (U8S8): with int8 only 1 of the 60 convs became a QLinearConv and the
  INT8 model ran slower than FP32. Symmetric int8 (scale s, zero point 0) and uint8 with
  zero point 128 give the same values on the same grid, so the change is exact.
* the box decode (sigmoid, grid and anchor arithmetic after the Detect convs) gets Q/DQ
  pairs: scores and pixel boxes on an 8-bit grid. Measured: boxes off by up to 70 px and
  objectness rounded to 0. They are removed; the decode runs in float.
* SiLU is exported as Sigmoid and Mul between a DQ and a Q, i.e. in float: four passes over
  each activation. A Q/DQ on the Sigmoid output (range [0, 1], fixed scale 1/255) lets
  onnxruntime run QLinearSigmoid and QLinearMul.
"""
from __future__ import annotations

from collections import Counter
from typing import Dict, Iterable, List, Optional, Set

import numpy as np

from ..utils.graph import reachable

ACT_ZP_NAME = "ppyolo_slim_act_zero_point_u8"
SIGMOID_SCALE_NAME = "ppyolo_slim_sigmoid_scale"
SIGMOID_ZP_NAME = "ppyolo_slim_sigmoid_zero_point"


class _Graph:
    def __init__(self, model):
        self.model, self.g = model, model.graph
        self.refresh()

    def refresh(self):
        self.prod = {o: n for n in self.g.node for o in n.output}
        self.cons: Dict[str, list] = {}
        for n in self.g.node:
            for i in n.input:
                self.cons.setdefault(i, []).append(n)
        self.init = {t.name for t in self.g.initializer}

    def is_const(self, name: str) -> bool:
        return name in self.init or (name in self.prod and self.prod[name].op_type == "Constant")

    def qdq_pairs(self):
        """(Q, DQ) pairs of activations: a QuantizeLinear of a computed tensor and the DQ it feeds."""
        for dq in self.g.node:
            if dq.op_type != "DequantizeLinear":
                continue
            q = self.prod.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear" and not self.is_const(q.input[0]):
                yield q, dq

    def remove_pairs(self, pairs: Iterable) -> int:
        """Bypass each (Q, DQ): DQ's consumers read Q's float input."""
        rename, drop = {}, set()
        for q, dq in pairs:
            rename[dq.output[0]] = q.input[0]
            drop.add(id(dq))
        for q in {id(q): q for q, _ in pairs}.values():
            if all(id(u) in drop for u in self.cons.get(q.output[0], [])):
                drop.add(id(q))
        self.bypass(drop, rename, "a graph output is a DequantizeLinear; cannot remove it")
        return len(rename)

    def bypass(self, drop: Set[int], rename: Dict[str, str], output_error: str) -> None:
        """Drop the nodes whose ids are in ``drop``; every tensor ``t`` in ``rename`` is read
        as ``rename[t]`` instead. Renaming a graph output raises ValueError(output_error)."""
        if {o.name for o in self.g.output} & set(rename):
            raise ValueError(output_error)
        keep = [n for n in self.g.node if id(n) not in drop]
        for n in keep:
            n.input[:] = [rename.get(i, i) for i in n.input]
        del self.g.node[:]
        self.g.node.extend(keep)
        self.refresh()


def activations_to_uint8(model) -> int:
    """Activation Q/DQ pairs from int8 (zero point 0) to uint8 (zero point 128): the same values."""
    from onnx import numpy_helper
    G = _Graph(model)
    pairs = list(G.qdq_pairs())
    for q, dq in pairs:
        for n in (q, dq):
            zp = _const_value(G, n.input[2]) if len(n.input) > 2 else np.zeros((), np.int8)
            if zp.dtype != np.int8 or np.any(zp != 0) or zp.size != 1:
                raise ValueError(f"{n.name or n.output[0]}: expected a per-tensor int8 zero point 0 "
                                 f"(symmetric PaddleSlim quantization), got {zp.dtype} {zp.ravel()[:4]}")
    if pairs and ACT_ZP_NAME not in G.init:
        model.graph.initializer.append(numpy_helper.from_array(np.array(128, np.uint8), ACT_ZP_NAME))
    for q, dq in pairs:
        for n in (q, dq):
            if len(n.input) > 2:
                n.input[2] = ACT_ZP_NAME
            else:
                n.input.append(ACT_ZP_NAME)
    return len(pairs)


def const_array(G: _Graph, name: str) -> Optional[np.ndarray]:
    """The value of a constant tensor (initializer, Constant, or Reshape/Identity of those)."""
    from onnx import numpy_helper
    for t in G.g.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    n = G.prod.get(name)
    if n is None:
        return None
    if n.op_type == "Constant":
        return numpy_helper.to_array(n.attribute[0].t)
    if n.op_type == "Identity":
        return const_array(G, n.input[0])
    if n.op_type == "Reshape":
        x, shape = const_array(G, n.input[0]), const_array(G, n.input[1])
        if x is None or shape is None:
            return None
        return x.reshape([int(s) if s != 0 else x.shape[i] for i, s in enumerate(shape)])
    return None


def _const_value(G: _Graph, name: str) -> np.ndarray:
    v = const_array(G, name)
    if v is None:
        raise ValueError(f"{name!r} is not a constant tensor")
    return v


def _conv_producer(G: _Graph, name: str):
    """The Conv that makes ``name`` directly or through one Q/DQ pair, else None."""
    n = G.prod.get(name)
    if n is not None and n.op_type == "DequantizeLinear":
        q = G.prod.get(n.input[0])
        n = G.prod.get(q.input[0]) if q is not None and q.op_type == "QuantizeLinear" else None
    return n if n is not None and n.op_type == "Conv" else None


def head_convs(model) -> List[str]:
    """Output names of the Detect convs: the convs that no SiLU (Sigmoid + Mul of the same
    tensor) follows."""
    G = _Graph(model)
    heads = []
    for n in G.g.node:
        if n.op_type != "Conv":
            continue
        outs = [n.output[0]] + [dq.output[0] for q in G.cons.get(n.output[0], []) if q.op_type == "QuantizeLinear"
                                for dq in G.cons.get(q.output[0], []) if dq.op_type == "DequantizeLinear"]
        users = {u.op_type for o in outs for u in G.cons.get(o, [])}
        if not {"Sigmoid", "Mul"} <= users:
            heads.append(n.output[0])
    return heads


def float_decode(model, head_outputs_float: bool = True) -> int:
    """Remove every activation Q/DQ pair downstream of the Detect convs (the decode); with
    ``head_outputs_float`` also the pair on the Detect convs' own outputs (the logits)."""
    G = _Graph(model)
    heads = head_convs(model)
    seen = reachable(heads, lambda t: (o for u in G.cons.get(t, []) for o in u.output))
    pairs = [(q, dq) for q, dq in G.qdq_pairs() if q.input[0] in seen
             and (head_outputs_float or q.input[0] not in heads)]
    return G.remove_pairs(pairs)


def quantize_sigmoid_outputs(model) -> int:
    """A uint8 Q/DQ (scale 1/255, zero point 0) on the Sigmoid of each SiLU whose input is
    quantized: sigmoid's range is [0, 1], so no calibration is needed."""
    from onnx import helper, numpy_helper
    G = _Graph(model)
    if SIGMOID_SCALE_NAME not in G.init:
        model.graph.initializer.extend([
            numpy_helper.from_array(np.array(1.0 / 255.0, np.float32), SIGMOID_SCALE_NAME),
            numpy_helper.from_array(np.array(0, np.uint8), SIGMOID_ZP_NAME)])
    new_nodes, count = [], 0
    for n in G.g.node:
        new_nodes.append(n)
        if n.op_type != "Sigmoid":
            continue
        src = G.prod.get(n.input[0])
        users = G.cons.get(n.output[0], [])
        if src is None or src.op_type != "DequantizeLinear" or not users or \
                any(u.op_type != "Mul" or src.output[0] not in u.input for u in users):
            continue
        out = n.output[0]
        q_out, dq_out = out + "_q", out + "_dq"
        new_nodes.append(helper.make_node("QuantizeLinear", [out, SIGMOID_SCALE_NAME, SIGMOID_ZP_NAME], [q_out]))
        new_nodes.append(helper.make_node("DequantizeLinear", [q_out, SIGMOID_SCALE_NAME, SIGMOID_ZP_NAME],
                                          [dq_out]))
        for u in users:
            u.input[:] = [dq_out if i == out else i for i in u.input]
        count += 1
    del G.g.node[:]
    G.g.node.extend(new_nodes)
    return count


def keep_conv_inputs_only(model) -> int:
    """Remove every activation Q/DQ pair except those feeding a Conv: what the Paddle
    fake-quantized program quantizes (a conv's input and weights)."""
    G = _Graph(model)
    pairs = [(q, dq) for q, dq in G.qdq_pairs()
             if not any(u.op_type == "Conv" for u in G.cons.get(dq.output[0], []))]
    return G.remove_pairs(pairs)


def conv_edges_only(model) -> int:
    """Q/DQ left only on the edges into Convs, TensorRT's explicit-quantization placement (what
    deploy/builder.py emits): a non-Conv reader of a DQ reads the float tensor before its Q,
    and pairs that feed no Conv go. Returns how many inputs were rewired."""
    G = _Graph(model)
    n = 0
    for q, dq in list(G.qdq_pairs()):
        for u in G.cons.get(dq.output[0], []):
            if u.op_type != "Conv":
                u.input[:] = [q.input[0] if i == dq.output[0] else i for i in u.input]
                n += 1
    G.refresh()
    keep_conv_inputs_only(model)
    return n


def quantized_op_counts(model) -> Dict[str, Dict[str, int]]:
    """Per op type: how many nodes read a quantized (DQ) input, and how many there are."""
    G = _Graph(model)
    total = Counter(n.op_type for n in G.g.node if n.op_type not in ("Constant", "QuantizeLinear",
                                                                        "DequantizeLinear"))
    quant = Counter(n.op_type for n in G.g.node if n.op_type in total and any(
        G.prod.get(i) is not None and G.prod[i].op_type == "DequantizeLinear" for i in n.input))
    return {k: {"quantized_inputs": int(quant.get(k, 0)), "nodes": int(v)} for k, v in sorted(total.items())}


def ort_fused_op_counts(onnx_bytes: bytes) -> Dict[str, int]:
    """The node types onnxruntime's CPU provider runs after its graph optimizations (QLinearConv
    etc. show what really runs in INT8)."""
    import os
    import tempfile
    import onnx
    import onnxruntime as ort
    with tempfile.TemporaryDirectory() as d:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.optimized_model_filepath = os.path.join(d, "opt.onnx")
        ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"])
        m = onnx.load(so.optimized_model_filepath)
    return dict(sorted(Counter(n.op_type for n in m.graph.node).items()))


def float_conv_inputs(model) -> int:
    """A Conv with float weights (kept float) reads its input before the shared Q/DQ pair, as
    quant_program.float_conv_inputs does in the Paddle program."""
    G = _Graph(model)
    n = 0
    for c in G.g.node:
        if c.op_type != "Conv":
            continue
        w = G.prod.get(c.input[1])
        dq = G.prod.get(c.input[0])
        if (w is not None and w.op_type == "DequantizeLinear") or dq is None or dq.op_type != "DequantizeLinear":
            continue
        q = G.prod.get(dq.input[0])
        if q is not None and q.op_type == "QuantizeLinear":
            c.input[0] = q.input[0]
            n += 1
    return n

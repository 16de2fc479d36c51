"""The INT8 scales PaddleSlim computed, read from a ``tools/quant.py`` output folder.

Source: ``model_int8.onnx``, the QDQ model paddle2onnx wrote from PaddleSlim's quantized
program (and that ``tools/quant.py`` checked in onnxruntime against Paddle's INT8 model).
Each Conv there reads
  input 0: DequantizeLinear(QuantizeLinear(x)), a per-tensor activation scale, zero point
           0 (int8) or 128 (uint8, which quant_onnx.activations_to_uint8 makes of int8 0: the
           same grid, so it is int8 zero point 0 for TensorRT);
  input 1: DequantizeLinear(QuantizeLinear(W)), per-channel scales on axis 0, zero point 0;
or float tensors where the layer stays float (the Detect convs by default).

The builder finds each of its convs there by kernel shape, stride, padding and weights: its
own BN-folded kernel must quantize to the ONNX conv's integers (``QDQScales.take``).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

ONNX_INT8 = "model_int8.onnx"       # = ppyolo_slim.slim.quant.ONNX_INT8 (not imported: that pulls in paddle)
REPORT = "quant_report.json"


class ScalesError(ValueError):
    """A quantization folder that does not hold usable scales; the message names the file."""


@dataclass
class ConvQuant:
    """One ONNX Conv: its geometry and, when quantized, its scales and integer weights."""
    onnx_name: str
    weight_shape: Tuple[int, ...]
    strides: Tuple[int, ...]
    pads: Tuple[int, ...]
    input_scale: Optional[float] = None            # per tensor
    input_zero_point: int = 0                      # as the ONNX writes it: 0 (int8) or 128 (uint8)
    weight_scales: Optional[np.ndarray] = None     # [out channels], axis 0
    weight_q: Optional[np.ndarray] = field(default=None, repr=False)   # int8, = round(W / s)
    weight_float: Optional[np.ndarray] = field(default=None, repr=False)   # a float conv's kernel

    @property
    def quantized(self) -> bool:
        return self.weight_scales is not None


@dataclass
class QDQScales:
    source: str                     # the ONNX file
    convs: List[ConvQuant]
    method: Optional[str] = None    # ptq / qat, from quant_report.json
    weights: Optional[str] = None   # the FP32 (or QAT) weights the folder was made from
    img_size: Optional[int] = None
    used: Dict[str, str] = field(default_factory=dict)    # builder conv name -> ONNX conv name

    def take(self, name: str, kernel: np.ndarray, stride: int, pad: int) -> Tuple[ConvQuant, int]:
        """The ONNX conv that is the builder's conv ``name`` (BN-folded ``kernel``), and how many
        of the kernel's values quantize one step off the ONNX's integers.

        Matched by geometry and weights, not by position (Paddle's passes reorder the program):
        our kernel must quantize, with that conv's scales, to its integers within one step (float
        rounding of the BN fold can land a value on the other side of a .5), or for a float
        conv equal its kernel to float32 rounding."""
        geometry = (tuple(kernel.shape), (stride, stride), (pad,) * 4)
        best, best_steps = None, np.inf
        for c in self.convs:
            if c.onnx_name in self.used.values() or (c.weight_shape, c.strides, c.pads) != geometry:
                continue
            steps = _distance(c, kernel)
            if steps < best_steps:
                best, best_steps = c, steps
        if best is None:
            raise ScalesError(f"{self.source}: no Conv left with the kernel {list(kernel.shape)}, stride {stride}, "
                              f"pad {pad} of the network's {name}: the ONNX was made from another model")
        if best_steps > 1:
            raise ScalesError(f"{self.source}: no Conv has the weights of the network's {name} (the nearest, "
                              f"{best.onnx_name}, is {best_steps:.3g} quantization steps off): the folder was "
                              "quantized from other weights (a QAT run's? pass those with --weights)")
        self.used[name] = best.onnx_name
        if not best.quantized:
            return best, 0
        mine = np.clip(np.rint(kernel.astype(np.float32) / best.weight_scales.reshape(-1, 1, 1, 1)), -128, 127)
        return best, int(np.count_nonzero(mine != best.weight_q))

    def finish(self) -> None:
        if len(self.used) != len(self.convs):
            raise ScalesError(f"{self.source}: {len(self.convs)} Conv nodes, the network has {len(self.used)} convs")


def _distance(c: ConvQuant, kernel: np.ndarray) -> float:
    """Quantized: max |round(kernel / s) - q| in steps; float: max relative difference x 1e-3
    (anything above float32 rounding counts as more than one step)."""
    if c.quantized:
        mine = np.clip(np.rint(kernel.astype(np.float32) / c.weight_scales.reshape(-1, 1, 1, 1)), -128, 127)
        return float(np.abs(mine - c.weight_q.astype(np.float32)).max())
    d = np.abs(kernel.astype(np.float64) - c.weight_float) / np.maximum(np.abs(c.weight_float), 1e-3)
    return float(d.max()) * 1e3


def _const(values: Dict[str, np.ndarray], prod, name: str, where: str) -> np.ndarray:
    if name in values:
        return values[name]
    n = prod.get(name)
    if n is not None and n.op_type == "Constant":
        from onnx import numpy_helper
        return numpy_helper.to_array(n.attribute[0].t)
    raise ScalesError(f"{where}: {name!r} is not a constant (scales and zero points must be)")


def _qdq_source(prod, values, name: str, where: str):
    """(float input of Q, scale, zero point, axis) when ``name`` is DQ(Q(x)); None when float."""
    from onnx import helper
    dq = prod.get(name)
    if dq is None or dq.op_type != "DequantizeLinear":
        return None
    q = prod.get(dq.input[0])
    if q is None or q.op_type != "QuantizeLinear":
        raise ScalesError(f"{where}: DequantizeLinear {dq.name or dq.output[0]} is not fed by a QuantizeLinear")
    scale = _const(values, prod, dq.input[1], where).astype(np.float32)
    zp = _const(values, prod, dq.input[2], where) if len(dq.input) > 2 else np.zeros(scale.shape, np.int8)
    qscale = _const(values, prod, q.input[1], where).astype(np.float32)
    if qscale.shape != scale.shape or np.any(qscale != scale):
        raise ScalesError(f"{where}: QuantizeLinear and DequantizeLinear of {name!r} have different scales")
    axis = next((helper.get_attribute_value(a) for a in dq.attribute if a.name == "axis"), 1)
    return q.input[0], scale, zp, int(axis)


def _symmetric(zp: np.ndarray, where: str) -> None:
    """TensorRT has symmetric INT8 only: int8 zero point 0, or uint8 128 (the same grid shifted)."""
    ok = (zp.dtype == np.int8 and np.all(zp == 0)) or (zp.dtype == np.uint8 and np.all(zp == 128))
    if not ok:
        raise ScalesError(f"{where}: zero point {zp.dtype} {zp.ravel()[:4]} is not symmetric INT8 "
                          "(int8 0 or uint8 128); TensorRT supports only symmetric INT8")


def read_onnx_scales(path: str) -> List[ConvQuant]:
    """Every Conv of a QDQ ONNX with its scales, in the file's order."""
    import onnx
    from onnx import helper, numpy_helper
    if not os.path.isfile(path):
        raise ScalesError(f"{path}: not found; expected the QDQ ONNX that tools/quant.py writes ({ONNX_INT8})")
    try:
        m = onnx.load(path)
    except Exception as e:      # a truncated or foreign file
        raise ScalesError(f"{path}: cannot be read as ONNX ({type(e).__name__}: {e})") from None
    g = m.graph
    values = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    prod = {o: n for n in g.node for o in n.output}
    cons: Dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            cons.setdefault(i, []).append(n)
    convs = []
    for n in g.node:
        if n.op_type != "Conv":
            continue
        where = f"{path}: Conv {n.name or n.output[0]}"
        att = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if att.get("group", 1) != 1 or any(d != 1 for d in att.get("dilations", [1, 1])):
            raise ScalesError(f"{where}: groups or dilation are not what the builder emits")
        if any(u.op_type == "BatchNormalization" for u in cons.get(n.output[0], [])):
            raise ScalesError(f"{where} feeds a BatchNormalization: its weight scales are of the unfolded "
                              "kernel, while the builder folds BN into it (not supported)")
        x, w = _qdq_source(prod, values, n.input[0], where), _qdq_source(prod, values, n.input[1], where)
        wname = w[0] if w else n.input[1]
        wf = _const(values, prod, wname, where + " weight")
        c = ConvQuant(n.name or n.output[0], tuple(wf.shape), tuple(att.get("strides", (1, 1))),
                      tuple(att.get("pads", (0, 0, 0, 0))))
        if w is None:
            c.weight_float = wf.astype(np.float64)
        else:
            _, s, zp, axis = w
            _symmetric(zp, where + " weight")
            if axis != 0 or s.shape != (wf.shape[0],):
                raise ScalesError(f"{where}: weight scales {list(s.shape)} on axis {axis}; expected per-channel "
                                  f"scales on axis 0, one per output channel ({wf.shape[0]})")
            c.weight_scales = s
            c.weight_q = np.clip(np.rint(wf.astype(np.float32) / s.reshape(-1, 1, 1, 1)), -128, 127).astype(np.int8)
        if x is not None:
            _, s, zp, _ = x
            _symmetric(zp, where + " input")
            if s.size != 1:
                raise ScalesError(f"{where}: input scale has {s.size} values; expected one (per tensor)")
            if w is None:
                raise ScalesError(f"{where}: quantized input but float weights (not what tools/quant.py writes)")
            c.input_scale = float(s.reshape(()))
            c.input_zero_point = int(zp.reshape(-1)[0])
        elif w is not None:
            raise ScalesError(f"{where}: quantized weights but a float input (not what tools/quant.py writes)")
        convs.append(c)
    if not convs:
        raise ScalesError(f"{path}: no Conv node")
    if not any(c.quantized for c in convs):
        raise ScalesError(f"{path}: no Conv has QuantizeLinear/DequantizeLinear inputs, so the file holds no "
                          "INT8 scales (expected per-channel weight and per-tensor input scales from PaddleSlim)")
    return convs


def load_qdq_scales(folder: str) -> QDQScales:
    """The scales of a tools/quant.py output folder (``model_int8.onnx``, ``quant_report.json``)."""
    if not os.path.isdir(folder):
        raise ScalesError(f"{folder}: no such folder (expected a tools/quant.py --output folder)")
    onnx_path = os.path.join(folder, ONNX_INT8)
    rep_path = os.path.join(folder, REPORT)
    if not os.path.isfile(onnx_path):
        raise ScalesError(f"{onnx_path}: not found; {folder} is no tools/quant.py output folder "
                          f"(it writes {ONNX_INT8}, the QDQ ONNX whose scales the INT8 network takes)")
    report = {}
    if os.path.isfile(rep_path):
        try:
            with open(rep_path, encoding="utf-8") as f:
                report = json.load(f)
        except (OSError, ValueError) as e:
            raise ScalesError(f"{rep_path}: not readable JSON ({e})") from None
    return QDQScales(onnx_path, read_onnx_scales(onnx_path), report.get("method"), report.get("weights"),
                     report.get("img_size"))

"""Edits of PaddleSlim's quantized inference program (``quant_post_static`` with
``onnx_format=True``, or QAT's ``save_quantized_model``).

PaddleSlim puts an "observer" quantize/dequantize pair on each conv's raw output, for
deployment backends (paddle.static.quantization.quant_config: observers "only count the
calibration boundary scale and do not participate in the fake quantization"). In the saved
program they do run, on the tensor *before* the bias add / BatchNorm that follows the conv;
paddle2onnx then folds that bias or BN into the ONNX Conv and applies the same scale to the
folded output (checked: ``conv2d_0.tmp_0@scale`` 2.789 became the ONNX Conv's output scale
2.789/127), so the ONNX quantizes another tensor than Paddle, with a wrong range: boxes
moved by up to 95 px. Removing the observers leaves what the quantization is about: each
conv's input and weights.
"""
from __future__ import annotations

import os
from typing import Dict, List, Set, Tuple

from ..utils.graph import reachable

CONV_OPS = ("conv2d", "depthwise_conv2d")


def _read(model_dir: str):
    from paddle.base.proto import framework_pb2
    with open(os.path.join(model_dir, "model.pdmodel"), "rb") as f:
        return framework_pb2.ProgramDesc.FromString(f.read())


def _write(model_dir: str, prog) -> None:
    path = os.path.join(model_dir, "model.pdmodel")
    with open(path + ".tmp", "wb") as f:
        f.write(prog.SerializeToString())
    os.replace(path + ".tmp", path)


def _args(op, key: str, outputs: bool = False) -> List[str]:
    for v in (op.outputs if outputs else op.inputs):
        if v.parameter == key:
            return list(v.arguments)
    return []


def _downstream_of_heads(ops) -> Set[str]:
    """Every tensor computed from the output of a conv after which no conv follows (the
    Detect convs): the logits and the box decode."""
    consumers: Dict[str, list] = {}
    for op in ops:
        for v in op.inputs:
            for a in v.arguments:
                consumers.setdefault(a, []).append(op)
    reaches_conv: Dict[str, bool] = {}

    def reaches(var: str, depth: int = 0) -> bool:   # does any conv consume var, transitively?
        if var in reaches_conv:
            return reaches_conv[var]
        reaches_conv[var] = False
        hit = False
        for op in consumers.get(var, []):
            if op.type in CONV_OPS or any(reaches(a) for v in op.outputs for a in v.arguments):
                hit = True
                break
        reaches_conv[var] = hit
        return hit
    heads = [_args(op, "Output", True)[0] for op in ops if op.type in CONV_OPS]
    heads = [h for h in heads if not reaches(h)]
    return reachable(heads, lambda v: (a for op in consumers.get(v, []) for o in op.outputs for a in o.arguments))


def remove_pairs(model_dir: str, observers: bool = True, decode: bool = True) -> Dict[str, int]:
    """Remove quantize/dequantize pairs from ``model_dir/model.pdmodel`` (in place; the
    parameters file is unchanged): ``observers``, the pairs on raw conv outputs (see the
    module doc); ``decode``, every pair on the Detect convs' outputs and the box decode, so
    scores and pixel boxes stay float."""
    prog = _read(model_dir)
    block = prog.blocks[0]
    ops = list(block.ops)
    made_by = {a: op.type for op in ops for o in op.outputs for a in o.arguments}
    after_heads = _downstream_of_heads(ops) if decode else set()
    # decode ops: any op reading a decode tensor; a pair feeding only those (the anchor grid,
    # the exponent of the wh power) is part of the decode too
    readers: Dict[str, list] = {}
    for op in ops:
        for v in op.inputs:
            for a in v.arguments:
                readers.setdefault(a, []).append(op)
    decode_ids = {id(op) for op in ops if any(a in after_heads for v in op.inputs for a in v.arguments)}
    grown = True
    while grown:   # ops whose outputs only the decode reads (the anchor slice, the pow exponent)
        grown = False
        for op in ops:
            outs = [a for o in op.outputs for a in o.arguments if readers.get(a)]   # not XShape
            if id(op) in decode_ids or op.type in CONV_OPS or op.type == "fetch" or not outs:
                continue
            if all(id(r) in decode_ids for a in outs for r in readers[a]):
                decode_ids.add(id(op))
                grown = True
    decode_ops = [op for op in ops if id(op) in decode_ids]
    decode_inputs = {a for op in decode_ops for v in op.inputs for a in v.arguments}
    rename: Dict[str, str] = {}
    drop: Set[int] = set()
    counts = {"observers": 0, "decode": 0}
    for i, op in enumerate(ops):
        if op.type != "quantize_linear":
            continue
        x = _args(op, "X")[0]
        y = _args(op, "Y", True)[0]
        dq = [j for j, o in enumerate(ops) if o.type == "dequantize_linear" and _args(o, "X") == [y]]
        if len(dq) != 1:
            continue
        dq_out = _args(ops[dq[0]], "Y", True)[0]
        feeds_decode_only = dq_out in decode_inputs and all(
            any(r is d for d in decode_ops) for r in readers.get(dq_out, []))
        kind = ("observers" if observers and made_by.get(x) in CONV_OPS else
                "decode" if decode and (x in after_heads or feeds_decode_only or id(op) in decode_ids) else None)
        if kind is None:
            continue
        rename[_args(ops[dq[0]], "Y", True)[0]] = x
        drop.update((i, dq[0]))
        counts[kind] += 1
    keep = [op for i, op in enumerate(ops) if i not in drop]
    for op in keep:
        for v in op.inputs:
            v.arguments[:] = [rename.get(a, a) for a in v.arguments]
    del block.ops[:]
    block.ops.extend(keep)
    _write(model_dir, prog)
    return counts


def quantized_convs(model_dir: str) -> Tuple[List[str], List[str]]:
    """(weights of convs with a quantized input and weights, weights of float convs) by
    parameter name, in program order."""
    ops = list(_read(model_dir).blocks[0].ops)
    made_by = {a: op.type for op in ops for o in op.outputs for a in o.arguments}
    q, fl = [], []
    for op in ops:
        if op.type not in CONV_OPS:
            continue
        inp = {v.parameter: list(v.arguments) for v in op.inputs}
        filt, x = inp["Filter"][0], inp["Input"][0]
        quant = made_by.get(filt) == "dequantize_linear" and made_by.get(x) == "dequantize_linear"
        (q if quant else fl).append(filt.split(".quantized")[0])
    return q, fl


def structured_names(model_dir: str) -> Dict[str, str]:
    """Parameter name (conv2d_120.w_0) -> structured name (model.0.conv.weight), from the
    ``model.pdiparams.info`` that paddle.jit.save writes."""
    import pickle
    path = os.path.join(model_dir, "model.pdiparams.info")
    if not os.path.isfile(path):
        return {}
    with open(path, "rb") as f:
        info = pickle.load(f)
    return {k: v.get("structured_name", k) for k, v in info.items() if isinstance(v, dict)}


def float_conv_inputs(model_dir: str) -> int:
    """A conv left float (weights not quantized: quant.float_layers) reads its input before
    the quantize/dequantize pair that other consumers of the same tensor share; otherwise
    only its weights would be float. Returns how many convs were rewired."""
    prog = _read(model_dir)
    ops = list(prog.blocks[0].ops)
    made_by = {a: op for op in ops for o in op.outputs for a in o.arguments}
    n = 0
    for op in ops:
        if op.type not in CONV_OPS:
            continue
        f = made_by.get(_args(op, "Filter")[0])
        x = _args(op, "Input")[0]
        dq = made_by.get(x)
        if (f is not None and f.type == "dequantize_linear") or dq is None or dq.type != "dequantize_linear":
            continue
        q = made_by.get(_args(dq, "X")[0])
        if q is None or q.type != "quantize_linear":
            continue
        for v in op.inputs:
            if v.parameter == "Input":
                v.arguments[:] = [_args(q, "X")[0]]
        n += 1
    _write(model_dir, prog)
    return n

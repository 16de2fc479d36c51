"""INT8 on Paddle 3 (PIR): calibration with ``paddle.quantization``, a fake-quantized Paddle
program, and the QDQ ONNX built from the same scales.

Why not the Paddle 2.6 route (slim/quant.py: PaddleSlim ``quant_post_static`` / QAT export,
ProgramDesc edits, paddle2onnx's QDQ output)? Measured on Paddle 3.3.1 / paddle2onnx 2.1.0:

* Paddle 3.3 cannot trace this model into the old IR (compat.int8_unsupported), so PaddleSlim's
  static PTQ has no ``model.pdmodel`` to read;
* ``paddle.quantization``'s ``convert`` + ``paddle.jit.save`` writes ``quantize_linear`` /
  ``dequantize_linear`` ops, but (1) their PIR forward creates a buffer of the input's shape,
  which fails for a dynamic batch ("Each value of attribute 'shape' is expected to be no less
  than 0", nn/quant/format.py); (2) Paddle 3.3.1's PIR executor (``paddle.jit.load``, static
  ``Executor`` and Paddle Inference alike) runs ``dequantize_linear`` as a quantize: 20, 40,
  120 with scale 2 come out as 127, 127, 127 instead of 0.31, 0.63, 1.89; (3) Paddle
  Inference deletes the pairs anyway (``delete_quant_dequant_linear_op_pass`` runs even with
  ``switch_ir_optim(False)``), so the program runs in float;
* paddle2onnx 2.1.0 converts ``quantize_linear`` / ``dequantize_linear`` only as FP8 (opset 19;
  "Only support e4m3 or e5m2 now" for 8-bit integers), and has no mapper for the fused
  fake-quant ops.

So here: ``paddle.quantization.PTQ`` with a ``QuantConfig`` wraps every quantized conv
(``QuantedConv2D``) with our observers (PaddleSlim's calibration algorithms: abs_max, avg, hist,
KL, mse); each SiLU, written ``x * sigmoid(x)``, gets observers on its input and its sigmoid
(``QuantSilu``). The calibrated scales make a plan (``ConvPlan``) from which both outputs are
built:

* the Paddle INT8 model: weights on their per-channel INT8 grid, activations through
  ``fake_quantize_dequantize_moving_average_abs_max`` with the calibrated scale (``is_test``:
  the scale is used, not updated), the op Paddle's own QAT quanter runs, which the PIR executor
  and Paddle Inference run as written; saved by ``paddle.jit.save`` (``model.json``);
* ``model_int8.onnx``: paddle2onnx's float ONNX of the same BN-folded model, with
  QuantizeLinear/DequantizeLinear inserted at the same tensors (uint8 activations, zero point
  128; int8 per-channel weights; int32 biases on the input x weight scale grid), in the form
  paddle2onnx 1.3.1 writes on Paddle 2.6 (deploy/qdq_scales.py reads either), which
  onnxruntime fuses into QLinearConv / QLinearSigmoid / QLinearMul.

The decode after the Detect convs is never quantized; convs named in ``quant.float_layers``
(default: the Detect convs) get no QuantedConv2D, so they read their input in float.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddle import _C_ops
from paddle.quantization import PTQ, QuantConfig
from paddle.quantization.base_observer import BaseObserver
from paddle.quantization.factory import ObserverFactory

from .quant_base import float_convs
from .quant_onnx import _Graph, const_array

BITS = 8
QMAX = 2 ** (BITS - 1) - 1        # 127: Paddle's scale is the abs max, the grid step scale / 127
HIST_BINS = 2048                  # PaddleSlim's (PostTrainingQuantization._histogram_bins)
PIR_ALGOS = ("abs_max", "avg", "hist", "KL", "mse")


# ------------------------------------------------------------------------------ observers

class ActivationObserver(ObserverFactory):
    """Per-tensor activation observer with PaddleSlim 2.6's calibration algorithms (the same
    formulas as ``paddle.static.quantization.PostTrainingQuantization``): ``abs_max``; ``avg``
    (mean over batches of the mean per-sample abs max); ``hist`` (the ``hist_percent``
    quantile of a 2048-bin histogram of |x|); ``KL`` (``cal_kl_threshold`` on that histogram);
    ``mse`` (the scale among 0.30, 0.32, ... 1.00 x the batch abs max with the least
    quantization MSE, best over all batches)."""

    def __init__(self, algo: str = "hist", hist_percent: float = 0.9999):
        super().__init__(algo=algo, hist_percent=hist_percent)

    def _get_class(self):
        return ActivationObserverLayer


class ActivationObserverLayer(BaseObserver):
    def __init__(self, layer, algo: str = "hist", hist_percent: float = 0.9999):
        super().__init__()
        if algo not in PIR_ALGOS:
            raise ValueError(f"unknown calibration algorithm {algo!r}")
        self.algo, self.hist_percent = algo, float(hist_percent)
        self._min, self._max = np.inf, 0.0
        self._edges: Optional[np.ndarray] = None   # set by start_histogram (second pass)
        self._hist: Optional[np.ndarray] = None
        self._avgs: List[float] = []
        self._best_loss, self._best_scale = np.inf, None
        self._threshold: Optional[float] = None

    def needs_second_pass(self) -> bool:
        return self.algo in ("hist", "KL")

    def start_histogram(self) -> None:
        lo, hi = (self._min, self._max) if np.isfinite(self._min) else (0.0, 0.0)
        self._hist, self._edges = np.histogram([], bins=HIST_BINS, range=(lo, hi))

    def forward(self, x):
        if not paddle.in_dynamic_mode():      # observers only run eagerly, on calibration data
            return x
        v = np.asarray(x.numpy(), np.float32)
        a = np.abs(v)
        if a.size == 0:
            return x
        if self.algo in ("hist", "KL"):
            if self._edges is None:
                self._min, self._max = min(self._min, float(a.min())), max(self._max, float(a.max()))
            else:
                self._hist += np.histogram(a, bins=self._edges)[0]
        elif self.algo == "abs_max":
            self._max = max(self._max, float(a.max()))
        elif self.algo == "avg":
            self._avgs.append(float(np.mean(a.reshape(a.shape[0], -1).max(axis=1))))
        else:   # mse
            flat = v.ravel()
            amax = float(a.max()) or 1e-8
            s = 0.3
            while s <= 1.0:
                scale = s * amax
                s += 0.02
                qdq = np.clip(np.round(flat / scale * QMAX), -QMAX - 1, QMAX) / QMAX * scale
                loss = float(((flat - qdq) ** 2).mean())
                if loss <= self._best_loss:
                    self._best_loss, self._best_scale = loss, scale
        return x

    def cal_thresholds(self) -> None:
        if self.algo == "abs_max":
            t = self._max
        elif self.algo == "avg":
            t = float(np.mean(self._avgs)) if self._avgs else 0.0
        elif self.algo == "mse":
            t = self._best_scale or 0.0
        else:
            if self._hist is None or self._hist.sum() == 0:
                t = self._max if np.isfinite(self._max) else 0.0
            elif self.algo == "KL":
                from paddle.static.quantization.cal_kl_threshold import cal_kl_threshold
                t = float(cal_kl_threshold(self._hist, self._edges[1] - self._edges[0], BITS))
            else:   # hist: PostTrainingQuantization._get_hist_scaling_factor
                cum = np.cumsum(self._hist / float(self._hist.sum()))
                idx = int(np.searchsorted(cum, self.hist_percent)) + 1
                t = (idx - 0.5) * float(self._edges[1] - self._edges[0])
        self._threshold = float(t) if t > 0 else 1e-8

    def threshold(self) -> float:
        if self._threshold is None:
            self.cal_thresholds()
        return self._threshold

    def scales(self):
        return paddle.to_tensor([self.threshold()], dtype="float32")

    def zero_points(self):
        return paddle.zeros([1], dtype="float32")

    def quant_axis(self):
        return -1

    def bit_length(self):
        return BITS


class ChannelAbsMaxObserver(ObserverFactory):
    """Per-output-channel abs max of a conv weight (PaddleSlim's ``channel_wise_abs_max``)."""

    def __init__(self):
        super().__init__()

    def _get_class(self):
        return ChannelAbsMaxObserverLayer


class ChannelAbsMaxObserverLayer(BaseObserver):
    def __init__(self, layer):
        super().__init__()
        self._max: Optional[np.ndarray] = None

    def forward(self, w):
        if paddle.in_dynamic_mode():
            m = np.abs(w.numpy()).reshape(w.shape[0], -1).max(axis=1)
            self._max = m if self._max is None else np.maximum(self._max, m)
        return w

    def cal_thresholds(self) -> None:
        pass

    def channel_max(self) -> np.ndarray:
        return np.where(self._max > 0, self._max, 1e-8).astype(np.float32)

    def scales(self):
        return paddle.to_tensor(self.channel_max())

    def zero_points(self):
        return paddle.zeros([len(self._max)], dtype="float32")

    def quant_axis(self):
        return 0

    def bit_length(self):
        return BITS


# ------------------------------------------------------------------------------ layers

class QuantSilu(nn.Layer):
    """SiLU as ``x * sigmoid(x)`` with a quanter on its input and one on its sigmoid (the
    tensors PaddleSlim 2.6 quantizes around ``sigmoid`` and ``elementwise_mul``)."""

    def __init__(self, input_quanter: nn.Layer, sigmoid_quanter: nn.Layer):
        super().__init__()
        self.input_quanter = input_quanter
        self.sigmoid_quanter = sigmoid_quanter

    def forward(self, x):
        x = self.input_quanter(x)
        return x * self.sigmoid_quanter(F.sigmoid(x))


class FakeQuantDequant(nn.Layer):
    """Symmetric INT8 quantize-dequantize with a fixed scale (abs max ``scale``; grid scale/127):
    ``fake_quantize_dequantize_moving_average_abs_max`` in test mode, the op of Paddle's own
    ``FakeQuanterWithAbsMaxObserver`` at inference, the same op eagerly and in the saved program.
    Rounding half to even (round_type 0), as onnxruntime's QuantizeLinear."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = self.create_parameter(
            [1], dtype="float32", attr=paddle.ParamAttr(
                name=paddle.utils.unique_name.generate("int8_scale"), trainable=False,
                initializer=nn.initializer.Constant(float(scale))))
        self.scale.stop_gradient = True

    def forward(self, x):
        return _C_ops.fake_quantize_dequantize_moving_average_abs_max(
            x, self.scale, None, None, 0.9, BITS, True, 0)[0]


def quantize_weight(w: np.ndarray, channel_max: np.ndarray):
    """(int8 values, the float32 weights they stand for), per output channel, half to even."""
    s = channel_max.astype(np.float32).reshape([-1] + [1] * (w.ndim - 1))
    q = np.clip(np.round(w / s * QMAX), -QMAX, QMAX).astype(np.int8)
    return q, (q.astype(np.float32) * s / QMAX).astype(np.float32)


# ------------------------------------------------------------------------------ the plan

@dataclasses.dataclass
class ConvPlan:
    """One conv of the model: its weight's parameter name (the ONNX Conv's weight), the scales
    (abs max) of what is quantized around it, None where that tensor stays float."""
    layer: str
    weight_name: str
    weight_key: bytes = b""                     # the float weights' bytes: finds the ONNX Conv
    weight_q: Optional[np.ndarray] = None       # int8 [Cout, Cin/g, k, k]
    weight_max: Optional[np.ndarray] = None     # per output channel
    input_max: Optional[float] = None           # the conv's input
    output_max: Optional[float] = None          # the conv's output (= the SiLU's input)
    sigmoid_max: Optional[float] = None         # the SiLU's sigmoid
    onnx_output: Optional[str] = None           # set by qdq_onnx: the ONNX Conv's output name

    @property
    def quantized(self) -> bool:
        return self.weight_q is not None and self.input_max is not None


def conv_layers(model) -> Dict[str, nn.Conv2D]:
    return {n: l for n, l in model.named_sublayers() if isinstance(l, nn.Conv2D)}


def prepare_ptq(model, algo: str, hist_percent: float, float_layers: Sequence[str]):
    """In place on a BN-folded eval model: observers on every SiLU and, through
    ``paddle.quantization.PTQ``, on every conv not in ``float_layers``. Returns the model."""
    from ..model.blocks import Conv
    floats = float_convs(list(conv_layers(model)), float_layers)
    act = ActivationObserver(algo, hist_percent)
    for layer in model.sublayers():
        if isinstance(layer, Conv) and isinstance(layer.act, nn.Silu):
            layer.act = QuantSilu(act._instance(layer), act._instance(layer))
    quantized = [l for n, l in conv_layers(model).items() if n not in floats]
    cfg = QuantConfig(activation=None, weight=None)
    if quantized:
        cfg.add_layer_config(quantized, activation=act, weight=ChannelAbsMaxObserver())
    model.eval()
    return PTQ(cfg).quantize(model, inplace=True)


def calibrate(model, batches: Sequence[np.ndarray]) -> None:
    """Run the calibration batches (twice when an observer builds a histogram)."""
    obs = [l for l in model.sublayers() if isinstance(l, ActivationObserverLayer)]
    with paddle.no_grad():
        for b in batches:
            model(paddle.to_tensor(b))
        if any(o.needs_second_pass() for o in obs):
            for o in obs:
                if o.needs_second_pass():
                    o.start_histogram()
            for b in batches:
                model(paddle.to_tensor(b))
    for o in obs:
        o.cal_thresholds()


def _quanted_conv_type():
    from paddle.nn.quant.qat.conv import QuantedConv2D
    return QuantedConv2D


def plan_from_ptq(model) -> List[ConvPlan]:
    """The plan of a calibrated model (prepare_ptq + calibrate), in forward order of the layers."""
    from ..model.blocks import Conv
    QuantedConv2D = _quanted_conv_type()
    silu_of = {}
    for name, layer in model.named_sublayers():
        if isinstance(layer, Conv) and isinstance(layer.act, QuantSilu):
            silu_of[name + ".conv"] = layer.act
    plans = []
    for name, layer in model.named_sublayers():
        if not isinstance(layer, (nn.Conv2D, QuantedConv2D)):
            continue
        p = ConvPlan(layer=name, weight_name=layer.weight.name,
                     weight_key=np.ascontiguousarray(layer.weight.numpy(), np.float32).tobytes())
        if isinstance(layer, QuantedConv2D) and layer.activation_quanter is not None:
            p.weight_max = layer.weight_quanter.channel_max() if layer.weight_quanter is not None and \
                layer.weight_quanter._max is not None else np.abs(layer.weight.numpy()).reshape(
                    layer.weight.shape[0], -1).max(axis=1)
            p.weight_max = np.where(p.weight_max > 0, p.weight_max, 1e-8).astype(np.float32)
            p.weight_q, _ = quantize_weight(layer.weight.numpy(), p.weight_max)
            p.input_max = layer.activation_quanter.threshold()
        silu = silu_of.get(name)
        if silu is not None:
            p.output_max = silu.input_quanter.threshold()
            p.sigmoid_max = silu.sigmoid_quanter.threshold()
        plans.append(p)
    return plans


def plan_from_qat(model) -> List[ConvPlan]:
    """The plan of a model wrapped by PaddleSlim's dygraph QAT (slim/quant.py wrap_for_qat, BN
    folded): each ``QuantizedConv2D``'s input scale (moving average), the per-channel abs max of
    its weights (what its channel-wise fake quant computes at every step) and its output scale
    (``MovingAverageAbsMaxScale``, the observer PaddleSlim puts after it); convs left float
    (``skip_quant``) stay float. SiLUs are not quantized in QAT (PaddleSlim quantizes Conv2D)."""
    from paddle.nn.quant import quant_layers as QL
    plans, inner = [], set()
    detect = f"model.{len(model.model) - 1}."    # a Detect conv's output is the decode's input: float
    for name, layer in model.named_sublayers():
        if isinstance(layer, QL.MAOutputScaleLayer) and isinstance(layer._layer, QL.QuantizedConv2D):
            conv, out_scale = layer._layer, float(layer._ma_output_scale._scale.numpy().reshape(-1)[0])
            out_scale = None if name.startswith(detect) else max(out_scale, 1e-8)
            inner.add(id(conv))
        elif isinstance(layer, QL.QuantizedConv2D) and id(layer) not in inner:
            conv, out_scale = layer, None
        elif isinstance(layer, nn.Conv2D):
            plans.append(ConvPlan(layer=name, weight_name=layer.weight.name,
                                  weight_key=np.ascontiguousarray(layer.weight.numpy(), np.float32).tobytes()))
            continue
        else:
            continue
        w = conv.weight.numpy()
        wmax = np.abs(w).reshape(w.shape[0], -1).max(axis=1)
        wmax = np.where(wmax > 0, wmax, 1e-8).astype(np.float32)
        in_scale = float(conv._fake_quant_input._scale.numpy().reshape(-1)[0])
        plans.append(ConvPlan(layer=name, weight_name=conv.weight.name,
                              weight_key=np.ascontiguousarray(w, np.float32).tobytes(),
                              weight_q=quantize_weight(w, wmax)[0], weight_max=wmax,
                              input_max=max(in_scale, 1e-8), output_max=out_scale))
    return plans


class Int8Conv2D(nn.Layer):
    """A conv of the fake-quantized model: weights on their per-channel INT8 grid (the plan's
    int8 values x scale / 127), input quantize-dequantized, and its output too when the plan
    quantizes the output and no quantized SiLU follows (QAT)."""

    def __init__(self, conv: nn.Conv2D, p: ConvPlan, output: bool):
        super().__init__()
        s = p.weight_max.reshape([-1, 1, 1, 1])
        conv.weight.set_value((p.weight_q.astype(np.float32) * s / QMAX).astype(np.float32))
        self.conv = conv
        self.input_quanter = FakeQuantDequant(p.input_max)
        self.output_quanter = FakeQuantDequant(p.output_max) if output and p.output_max is not None else None

    def forward(self, x):
        y = self.conv(self.input_quanter(x))
        return self.output_quanter(y) if self.output_quanter is not None else y


def fake_quant_model(model, plans: Sequence[ConvPlan]):
    """In place on a BN-folded float model whose conv weights are the plan's: the Paddle INT8
    model (Int8Conv2D, QuantSilu with fixed scales). It computes what ``model_int8.onnx`` does."""
    from ..model.blocks import Conv
    by_layer = {p.layer: p for p in plans}
    convs = conv_layers(model)
    missing = [p.layer for p in plans if p.layer not in convs]
    if missing:
        raise ValueError(f"the plan names convs the model does not have: {missing[:3]}")
    blocks = {n: l for n, l in model.named_sublayers() if isinstance(l, Conv)}
    for name, conv in convs.items():
        p = by_layer.get(name)
        if p is None:
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = blocks.get(parent_name) if attr == "conv" else None
        silu = parent is not None and p.sigmoid_max is not None and p.output_max is not None
        if p.quantized:
            q = Int8Conv2D(conv, p, output=not silu)
            owner = model
            for part in parent_name.split(".") if parent_name else []:
                owner = getattr(owner, part) if not part.isdigit() else owner[int(part)]
            owner._sub_layers[attr] = q
        if silu:
            parent.act = QuantSilu(FakeQuantDequant(p.output_max), FakeQuantDequant(p.sigmoid_max))
    return model


def save_paddle(model, folder: str, img_size: int) -> None:
    """paddle.jit.save of the fake-quantized model, dynamic batch, into ``folder/model``."""
    import os
    from paddle.static import InputSpec
    spec = [InputSpec([None, 3, img_size, img_size], "float32", name="images")]
    static = paddle.jit.to_static(model, input_spec=spec, full_graph=True)
    paddle.jit.save(static, os.path.join(folder, "model"))


def float_onnx(model, folder: str, img_size: int, opset: int) -> bytes:
    """paddle2onnx of the float (BN-folded, explicit SiLU) model: the graph the Q/DQ go into.
    qdq_onnx finds each conv in it again by its weights' values (ConvPlan.weight_key)."""
    import os
    import paddle2onnx
    from .quant_base import explicit_silu
    with explicit_silu():
        save_paddle(model, folder, img_size)
    from ..compat import saved_model_file
    return paddle2onnx.export(os.path.join(folder, saved_model_file()), os.path.join(folder, "model.pdiparams"),
                              save_file=None, opset_version=int(opset), auto_upgrade_opset=False, verbose=False,
                              enable_onnx_checker=True)


# ------------------------------------------------------------------------------ the QDQ ONNX

def _bypass_identities(model) -> None:
    """Identity nodes (but those making a graph output) dropped, their readers reading the
    Identity chain's source."""
    G = _Graph(model)
    outs = {o.name for o in G.g.output}
    ids = [n for n in G.g.node if n.op_type == "Identity" and n.output[0] not in outs]
    rename = {n.output[0]: n.input[0] for n in ids}
    for t in rename:                    # a chain of Identities reads its first input
        while rename[t] in rename:
            rename[t] = rename[rename[t]]
    G.bypass({id(n) for n in ids}, rename, "an Identity is a graph output")


def _fold_bias_adds(model) -> int:
    """Conv followed by Add of a constant [1, C, 1, 1] (paddle2onnx writes a conv's bias so):
    the bias becomes the Conv's third input, as onnxruntime's QLinearConv takes it."""
    from onnx import numpy_helper
    G = _Graph(model)
    drop, rename, n = set(), {}, 0
    for c in list(G.g.node):
        if c.op_type != "Conv" or len(c.input) > 2:
            continue
        users = G.cons.get(c.output[0], [])
        if len(users) != 1 or users[0].op_type != "Add":
            continue
        add = users[0]
        other = add.input[1] if add.input[0] == c.output[0] else add.input[0]
        b, w = const_array(G, other), const_array(G, c.input[1])
        if b is None or w is None or b.size != w.shape[0] or (b.ndim == 4 and b.shape[1] != w.shape[0]):
            continue
        name = c.output[0] + "_bias"
        model.graph.initializer.append(numpy_helper.from_array(b.reshape(-1).astype(np.float32), name))
        c.input.append(name)
        rename[add.output[0]] = c.output[0]
        drop.add(id(add))
        n += 1
    G.bypass(drop, rename, "a conv's bias add is a graph output")
    return n


class _QDQBuilder:
    """Collects the Q/DQ nodes to insert: weight Q/DQs first, each activation pair right after
    the node making its tensor (graph inputs: first of all)."""

    def __init__(self, model):
        from onnx import numpy_helper
        from .quant_onnx import ACT_ZP_NAME
        self.model, self.nodes_after = model, {}
        self.zp = ACT_ZP_NAME
        self.h = numpy_helper
        if ACT_ZP_NAME not in {t.name for t in model.graph.initializer}:
            model.graph.initializer.append(numpy_helper.from_array(np.array(128, np.uint8), ACT_ZP_NAME))
        self.made: Dict[tuple, str] = {}
        self.count = 0

    def _init(self, name: str, value: np.ndarray) -> str:
        self.model.graph.initializer.append(self.h.from_array(value, name))
        return name

    def activation(self, tensor: str, abs_max: float) -> str:
        """The DequantizeLinear output of a uint8 Q/DQ of ``tensor``, placed right after the
        node that makes it (one pair per tensor and scale)."""
        from onnx import helper
        key = (tensor, float(abs_max))
        if key in self.made:
            return self.made[key]
        i = self.count
        self.count += 1
        s = self._init(f"int8_act_scale_{i}", np.array(abs_max / QMAX, np.float32))
        q = helper.make_node("QuantizeLinear", [tensor, s, self.zp], [f"{tensor}_q{i}"], name=f"int8_q_{i}")
        dq = helper.make_node("DequantizeLinear", [q.output[0], s, self.zp], [f"{tensor}_dq{i}"],
                              name=f"int8_dq_{i}")
        self.nodes_after.setdefault(tensor, []).extend([q, dq])
        self.made[key] = dq.output[0]
        return dq.output[0]

    def weight(self, c, p: ConvPlan, bias: Optional[np.ndarray]) -> None:
        """Weights as paddle2onnx writes them: the float kernel (on its INT8 grid, so it
        quantizes to the plan's integers exactly) through QuantizeLinear and DequantizeLinear,
        per output channel; the bias as int32 on the input x weight scale grid."""
        from onnx import helper
        i = self.count
        self.count += 1
        ws = (p.weight_max / QMAX).astype(np.float32)
        wf = self._init(f"{p.weight_name}_int8_grid", (p.weight_q.astype(np.float32) * ws.reshape(-1, 1, 1, 1)))
        wsn = self._init(f"{p.weight_name}_scale", ws)
        wzp = self._init(f"{p.weight_name}_zero_point", np.zeros(len(ws), np.int8))
        q = helper.make_node("QuantizeLinear", [wf, wsn, wzp], [f"{p.weight_name}_q"], axis=0, name=f"int8_wq_{i}")
        dq = helper.make_node("DequantizeLinear", [q.output[0], wsn, wzp], [f"{p.weight_name}_dq"], axis=0,
                              name=f"int8_wdq_{i}")
        new = [q, dq]
        c.input[1] = dq.output[0]
        if bias is not None:
            bs = (np.float32(p.input_max / QMAX) * ws).astype(np.float32)
            bq = np.clip(np.round(bias / bs), -2 ** 31, 2 ** 31 - 1).astype(np.int32)
            bqn = self._init(f"{p.weight_name}_bias_int32", bq)
            bsn = self._init(f"{p.weight_name}_bias_scale", bs)
            bzp = self._init(f"{p.weight_name}_bias_zero_point", np.zeros(len(bs), np.int32))
            bdq = helper.make_node("DequantizeLinear", [bqn, bsn, bzp], [f"{p.weight_name}_bias_dq"], axis=0,
                                   name=f"int8_bdq_{i}")
            new.append(bdq)
            c.input[2] = bdq.output[0]
        self.nodes_after.setdefault("", []).extend(new)

    def finish(self) -> None:
        g = self.model.graph
        nodes = list(self.nodes_after.get("", []))
        for n in g.node:
            nodes.append(n)
            for o in n.output:
                nodes.extend(self.nodes_after.get(o, []))
        pre = [x for t in [i.name for i in g.input] for x in self.nodes_after.get(t, [])]
        nodes = pre + nodes
        while True:   # the float kernels and biases replaced above: their Constants (and Reshapes) go
            used = {i for n in nodes for i in n.input} | {o.name for o in g.output}
            dead = [n for n in nodes if n.op_type in ("Constant", "Reshape") and not any(o in used for o in n.output)]
            if not dead:
                break
            nodes = [n for n in nodes if all(n is not d for d in dead)]
        del g.node[:]
        g.node.extend(nodes)
        used = {i for n in nodes for i in n.input}
        keep = [t for t in g.initializer if t.name in used]
        del g.initializer[:]
        g.initializer.extend(keep)


def qdq_onnx(float_onnx_bytes: bytes, plans: Sequence[ConvPlan]):
    """paddle2onnx's float ONNX with Q/DQ where the plan quantizes: each quantized conv's input
    (uint8, zero point 128), weights (int8 per output channel) and bias (int32); each SiLU's
    input (the conv output) and sigmoid. Returns the onnx model."""
    import onnx
    from .quant_base import QuantError
    model = onnx.load_from_string(float_onnx_bytes)
    _bypass_identities(model)
    _fold_bias_adds(model)
    G = _Graph(model)
    convs: Dict[bytes, list] = {}
    for n in G.g.node:
        if n.op_type == "Conv":
            w = const_array(G, n.input[1])
            if w is not None:
                convs.setdefault(np.ascontiguousarray(w, np.float32).tobytes(), []).append(n)
    B = _QDQBuilder(model)
    for p in plans:
        hit = convs.get(p.weight_key, [])
        if len(hit) != 1:
            raise QuantError(f"the float ONNX has {len(hit)} Conv nodes with the weights of {p.layer}; "
                             f"expected one")
        c = hit[0]
        p.onnx_output = c.output[0]
        if p.quantized:
            w = const_array(G, c.input[1])
            if w is None or w.shape != p.weight_q.shape:
                raise QuantError(f"{p.layer}: the ONNX Conv's weights are not the model's")
            bias = const_array(G, c.input[2]) if len(c.input) > 2 else None
            c.input[0] = B.activation(c.input[0], p.input_max)
            B.weight(c, p, bias)
        if p.output_max is not None:
            y = c.output[0]
            users = G.cons.get(y, [])
            sig = [u for u in users if u.op_type == "Sigmoid"]
            if p.sigmoid_max is not None and (len(sig) != 1 or {u.op_type for u in users} != {"Sigmoid", "Mul"}):
                raise QuantError(f"{p.layer}: no SiLU (Sigmoid and Mul) after the conv in the float ONNX")
            yq = B.activation(y, p.output_max)
            for u in users:
                u.input[:] = [yq if i == y else i for i in u.input]
            if p.sigmoid_max is not None:
                s = sig[0].output[0]
                sq = B.activation(s, p.sigmoid_max)
                for u in G.cons.get(s, []):
                    u.input[:] = [sq if i == s else i for i in u.input]
    B.finish()
    import json
    from .quant_sensitivity import CONV_LAYERS_KEY
    meta = model.metadata_props.add()
    meta.key, meta.value = CONV_LAYERS_KEY, json.dumps({p.onnx_output: p.layer for p in plans if p.onnx_output})
    onnx.checker.check_model(model)
    return model


def quantized_counts(plans: Sequence[ConvPlan]):
    q = [p.layer for p in plans if p.quantized]
    fl = [p.layer for p in plans if not p.quantized]
    return q, fl

"""What both INT8 routes (quant.py on Paddle 2.6, quant_pir.py on Paddle 3) share, in a module
of its own so that neither imports the other back."""
from __future__ import annotations

import contextlib
from typing import Iterator, List, Sequence, Set


class QuantError(RuntimeError):
    """A quantization that cannot be done as asked; the message says why."""


@contextlib.contextmanager
def explicit_silu() -> Iterator[None]:
    """While active, ``nn.Silu`` computes ``x * sigmoid(x)``: paddle.jit.save then writes
    sigmoid and elementwise_mul ops, which PaddleSlim can quantize (it has no ``silu``), so
    the SiLU runs in INT8 in onnxruntime (QLinearSigmoid, QLinearMul)."""
    import paddle
    import paddle.nn.functional as F
    orig = paddle.nn.Silu.forward

    def forward(self, x):   # a def, not a lambda: Paddle 3's to_static cannot read a lambda's source
        return x * F.sigmoid(x)

    paddle.nn.Silu.forward = forward
    try:
        yield
    finally:
        paddle.nn.Silu.forward = orig


def in_float_layers(name: str, float_layers: Sequence[str], detect: str) -> bool:
    """Whether layer ``name`` lies in an entry of ``quant.float_layers``: a structured prefix
    (``model.2.cv1``, ``model.24.m.0``) or ``detect``, the layer ``detect`` (``model.24``)."""
    for f in float_layers:
        f = detect if f == "detect" else f
        if name == f or name.startswith(f + "."):
            return True
    return False


def float_convs(conv_names: Sequence[str], float_layers: Sequence[str]) -> Set[str]:
    """The convs (structured names) ``quant.float_layers`` keeps float; an entry naming no
    conv is a QuantError. Detect is the last ``model.N`` layer."""
    detect = f"model.{max(int(n.split('.')[1]) for n in conv_names if n.startswith('model.'))}"
    unknown: List[str] = [f for f in float_layers
                          if not any(in_float_layers(n, [f], detect) for n in conv_names)]
    if unknown:
        raise QuantError(f"quant.float_layers: no conv named {unknown} in the model "
                         f"(names look like model.2.cv1 or model.24.m.0, or 'detect')")
    return {n for n in conv_names if in_float_layers(n, float_layers, detect)}

"""What both INT8 routes (quant.py on Paddle 2.6, quant_pir.py on Paddle 3) share, in a module
of its own so that neither imports the other back."""
from __future__ import annotations

import contextlib
from typing import Iterator


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

"""The stand-in's IQuantizeLayer and IDequantizeLayer, with the semantics TensorRT documents:

  quantize:   q = clamp(round_half_to_even(x / scale) + zero_point, -128, 127), int8
  dequantize: y = (q - zero_point) * scale

``scale`` (and the optional ``zero_point``, input 2 by ``set_input``) is a build-time constant,
0-D for per-tensor, 1-D of the ``axis`` dimension's size for per-channel. TensorRT supports
only symmetric INT8, so a zero point must be all zeros (it is still applied, as written).
x / scale is computed in float32, as TensorRT's FP32 Q kernels do.
"""
from __future__ import annotations

import numpy as np

from .numpy_core import API_LOG, DataType, ILayer, _compute

INT8_MIN, INT8_MAX = -128, 127


def quantize_int8(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray = None, axis: int = 0) -> np.ndarray:
    """TensorRT's / ONNX QuantizeLinear's INT8 rule on NumPy arrays (``scale`` 0-D or 1-D along ``axis``)."""
    s = _along(np.asarray(scale, np.float32), x.ndim, axis)
    q = np.rint(np.asarray(x, np.float32) / s)          # rint: round half to even
    if zero_point is not None:
        q = q + _along(np.asarray(zero_point, np.float32), x.ndim, axis)
    return np.clip(q, INT8_MIN, INT8_MAX).astype(np.int8)


def dequantize_int8(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray = None, axis: int = 0) -> np.ndarray:
    s = _along(np.asarray(scale, np.float32), q.ndim, axis)
    v = q.astype(np.float32)
    if zero_point is not None:
        v = v - _along(np.asarray(zero_point, np.float32), q.ndim, axis)
    return v * s


def _along(c: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    if c.ndim == 0:
        return c
    shape = [1] * ndim
    shape[axis] = c.size
    return c.reshape(shape)


class _QDQ(ILayer):
    """Shared by Q and DQ: inputs (data, scale[, zero point]), the axis, the scale checks."""
    _IN_TYPES: tuple = ()

    def __init__(self, network, input, scale, to_type):
        super().__init__(network, [input, scale])
        object.__setattr__(self, "axis", 1)       # the builder always sets it
        object.__setattr__(self, "to_type", to_type)

    def set_input(self, index, tensor):
        if index != 2:
            return super().set_input(index, tensor)
        API_LOG.append((self._TRT_CLASS, "set_input", 2, ()))
        while len(self._inputs) <= 2:
            self._inputs.append(None)
        self._inputs[2] = tensor
        self._network._version += 1

    def _infer(self):
        x, scale = self._inputs[0], self._inputs[1]
        zp = self._inputs[2] if len(self._inputs) > 2 else None
        if x.dtype not in self._IN_TYPES:
            raise self._err(f"input is {x.dtype.name}, expected one of {[t.name for t in self._IN_TYPES]}")
        for what, t in (("scale", scale), ("zero point", zp)):
            if t is None:
                continue
            if type(t._producer).__name__ != "IConstantLayer":
                raise self._err(f"the {what} must be a build-time constant (an IConstantLayer)")
            if len(t.shape) > 1:
                raise self._err(f"the {what} must be 0-D (per tensor) or 1-D (per channel), got {t.shape}")
            if len(t.shape) == 1:
                if not 0 <= self.axis < len(x.shape):
                    raise self._err(f"axis {self.axis} is outside the input's {len(x.shape)} dimensions")
                if x.shape[self.axis] >= 0 and t.shape[0] != x.shape[self.axis]:
                    raise self._err(f"per-channel {what} has {t.shape[0]} values, input dimension "
                                    f"{self.axis} has {x.shape[self.axis]}")
        if zp is not None and (zp.dtype != DataType.INT8 or zp.shape != scale.shape):
            raise self._err(f"the zero point must be INT8 and shaped as the scale {scale.shape}")
        if scale.dtype not in (DataType.FLOAT, DataType.HALF):
            raise self._err(f"the scale must be FLOAT or HALF, got {scale.dtype.name}")
        return [(x.shape, self.to_type)]

    def _consts(self, xs):
        self._inferred()
        scale = xs[1]
        zp = xs[2] if len(xs) > 2 else None
        if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            raise self._err(f"scales must be positive and finite, got min {float(np.min(scale)):.3g}")
        if zp is not None and np.any(zp != 0):
            raise self._err("TensorRT supports only symmetric INT8: the zero point must be all zeros")
        return scale, zp


class IQuantizeLayer(_QDQ):
    _TRT_CLASS = "IQuantizeLayer"
    _IN_TYPES = (DataType.FLOAT, DataType.HALF)

    def _infer(self):
        if self.to_type != DataType.INT8:
            raise self._err(f"only INT8 quantization is emulated, to_type is {self.to_type.name}")
        return super()._infer()

    def _run(self, xs):
        scale, zp = self._consts(xs)
        return [quantize_int8(_compute(xs[0]), scale, zp, self.axis)]


class IDequantizeLayer(_QDQ):
    _TRT_CLASS = "IDequantizeLayer"
    _IN_TYPES = (DataType.INT8,)

    def _run(self, xs):
        scale, zp = self._consts(xs)
        return [self._store(dequantize_int8(xs[0], scale, zp, self.axis), self.to_type)]

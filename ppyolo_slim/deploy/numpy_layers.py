"""The stand-in's layers, with TensorRT's documented semantics (see numpy_net.py)."""
from __future__ import annotations

from typing import Tuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .numpy_core import (API_LOG, ActivationType, BoundingBoxFormat, DataType, ElementWiseOperation, GatherMode,
                         ILayer, InterpolationMode, PaddingMode, PoolingType, ResizeCoordinateTransformation,
                         ResizeRoundMode, ResizeSelector, ScaleMode, _as_weights, _compute, _dims, _dtype_of)


def _spatial_out(size: int, k: int, s: int, pre: int, post: int, d: int, mode: "PaddingMode") -> int:
    if size < 0:
        return -1
    span = size + pre + post - d * (k - 1) - 1
    if mode == PaddingMode.EXPLICIT_ROUND_UP:
        return -(-span // s) + 1
    return span // s + 1


class _Windowed(ILayer):
    """Shared by convolution and pooling: stride, padding (symmetric or pre/post), padding mode."""

    def _nd(self) -> int:
        raise NotImplementedError

    def _init_window(self, nd: int):
        for k, v in dict(stride_nd=(1,) * nd, padding_nd=(0,) * nd, pre_padding=(0,) * nd,
                         post_padding=(0,) * nd, padding_mode=PaddingMode.EXPLICIT_ROUND_DOWN).items():
            object.__setattr__(self, k, v)

    def __setattr__(self, key, value):
        super().__setattr__(key, value)
        if key == "padding_nd":     # TensorRT: setting padding sets both pre and post padding
            object.__setattr__(self, "pre_padding", _dims(value))
            object.__setattr__(self, "post_padding", _dims(value))

    def _geometry(self, k: Tuple[int, ...], d: Tuple[int, ...]):
        nd = len(k)
        s = _dims(self.stride_nd, nd, "stride_nd")
        pre = _dims(self.pre_padding, nd, "pre_padding")
        post = _dims(self.post_padding, nd, "post_padding")
        if self.padding_mode not in (PaddingMode.EXPLICIT_ROUND_DOWN, PaddingMode.EXPLICIT_ROUND_UP):
            raise NotImplementedError(f"padding mode {self.padding_mode}")
        return s, pre, post

    def _out_hw(self, hw, k, d):
        s, pre, post = self._geometry(k, d)
        out = tuple(_spatial_out(hw[i], k[i], s[i], pre[i], post[i], d[i], self.padding_mode)
                    for i in range(len(k)))
        if any(o == 0 or (o < 0 and hw[i] >= 0) for i, o in enumerate(out)):
            raise self._err(f"window {k} with stride {s} and padding {pre}/{post} leaves no output "
                            f"for input {hw}")
        return out

    def _windows(self, x: np.ndarray, k, d, fill: float) -> np.ndarray:
        """[N, C, oh, ow, kh, kw] views of the padded input (extra end padding for ROUND_UP)."""
        s, pre, post = self._geometry(k, d)
        oh, ow = self._out_hw(x.shape[2:], k, d)
        need = [(o - 1) * s[i] + d[i] * (k[i] - 1) + 1 for i, o in enumerate((oh, ow))]
        padded_end = [max(post[i], need[i] - x.shape[2 + i] - pre[i]) for i in range(2)]
        x = np.pad(x, ((0, 0), (0, 0), (pre[0], padded_end[0]), (pre[1], padded_end[1])),
                   constant_values=fill)
        span = tuple(d[i] * (k[i] - 1) + 1 for i in range(2))
        win = sliding_window_view(x, span, axis=(2, 3))
        return win[:, :, :(oh - 1) * s[0] + 1:s[0], :(ow - 1) * s[1] + 1:s[1], ::d[0], ::d[1]]


class IConvolutionLayer(_Windowed):
    _TRT_CLASS = "IConvolutionLayer"

    def __init__(self, network, input, num_output_maps, kernel_shape, kernel, bias):
        super().__init__(network, [input])
        k = _dims(kernel_shape, what="kernel_shape")
        self._init_window(len(k))
        object.__setattr__(self, "num_output_maps", int(num_output_maps))
        object.__setattr__(self, "kernel_size_nd", k)
        object.__setattr__(self, "num_groups", 1)
        object.__setattr__(self, "dilation_nd", (1,) * len(k))
        object.__setattr__(self, "kernel", _as_weights(kernel, "kernel", self.name))
        object.__setattr__(self, "bias", _as_weights(bias, "bias", self.name))
        if len(k) != 2:
            raise NotImplementedError("only 2-D convolution is emulated")

    def _on_add(self):
        """As TensorRT at add time: the kernel must fit the input for some group count
        (num_groups is usually set after the layer is added; _check runs the full test)."""
        x = self._in()
        if len(x.shape) == 4 and x.shape[1] > 0 and self.kernel.size:
            full = self.num_output_maps * x.shape[1] * int(np.prod(self.kernel_size_nd))
            g = full // self.kernel.size
            if full % self.kernel.size or g < 1 or x.shape[1] % g:
                self._check()     # raises with the detailed message
        self._check_types()

    def _check(self):
        x = self._in()
        if len(x.shape) != 4:
            raise self._err(f"expects a 4-D NCHW input, got shape {x.shape}")
        c, K, g = x.shape[1], self.num_output_maps, self.num_groups
        k = _dims(self.kernel_size_nd)
        if c < 0:
            raise self._err("the channel dimension must be known at build time")
        if c % g or K % g:
            raise self._err(f"{c} input / {K} output channels do not divide into {g} groups")
        want = K * (c // g) * k[0] * k[1]
        kt = self._kernel_tensor()
        if kt is not None:      # the kernel as input 1 (e.g. a dequantized INT8 kernel): weights left empty
            if self.kernel.size:
                raise self._err("kernel given both as weights and as input 1; leave the weights empty")
            if tuple(kt.shape) != (K, c // g) + k:
                raise self._err(f"kernel input {kt.name!r} has shape {kt.shape}, expected {(K, c // g) + k}")
            if kt.dtype != x.dtype:
                raise self._err(f"kernel input is {kt.dtype.name}, the input is {x.dtype.name}")
        elif self.kernel.size != want:
            raise self._err(f"kernel has {self.kernel.size} weights; {K} maps x {c // g} channels x "
                            f"{k[0]}x{k[1]} need {want} (does the input really have {c} channels?)")
        if self.bias is not None and self.bias.size not in (0, K):
            raise self._err(f"bias has {self.bias.size} values, expected {K}")
        self._check_types()
        return k

    def _kernel_tensor(self):
        return self._inputs[1] if len(self._inputs) > 1 else None

    def set_input(self, index, tensor):
        """TensorRT: input 1 is the kernel (then the kernel weights stay empty); input 2 the bias."""
        if index != 1:
            return super().set_input(index, tensor)
        API_LOG.append((self._TRT_CLASS, "set_input", 2, ()))
        if len(self._inputs) == 1:
            self._inputs.append(tensor)
        self._inputs[1] = tensor
        self._network._version += 1

    def _check_types(self):
        x = self._in()
        if self._network._strongly_typed:
            for what, w in (("kernel", self.kernel), ("bias", self.bias)):
                if w is not None and w.size and _dtype_of(w) != x.dtype:
                    raise self._err(f"strongly typed network: {what} is {_dtype_of(w).name}, "
                                    f"the input is {x.dtype.name}")

    def _infer(self):
        x = self._in()
        k = self._check()
        oh, ow = self._out_hw(x.shape[2:], k, _dims(self.dilation_nd, 2, "dilation_nd"))
        return [((x.shape[0], self.num_output_maps, oh, ow), x.dtype)]

    def _run(self, xs):
        k = self._check()
        x = _compute(xs[0])
        d = _dims(self.dilation_nd, 2)
        K, g = self.num_output_maps, self.num_groups
        c = x.shape[1]
        kernel = xs[1] if self._kernel_tensor() is not None else self.kernel
        w = self._coef(kernel).reshape(K, c // g, k[0], k[1])
        win = self._windows(x, k, d, 0.0)                       # N, C, oh, ow, kh, kw
        n, _, oh, ow = win.shape[:4]
        outs = []
        for gi in range(g):
            wg = w[gi * K // g:(gi + 1) * K // g].reshape(K // g, -1)
            cols = win[:, gi * c // g:(gi + 1) * c // g].transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, -1)
            outs.append((cols @ wg.T).reshape(n, oh, ow, K // g))
        y = np.concatenate(outs, axis=-1).transpose(0, 3, 1, 2)
        if self.bias is not None and self.bias.size:
            y = y + self._coef(self.bias).reshape(1, K, 1, 1)
        return [self._store(y, self._inferred()[0][1])]


class IPoolingLayer(_Windowed):
    _TRT_CLASS = "IPoolingLayer"

    def __init__(self, network, input, type, window_size):
        super().__init__(network, [input])
        w = _dims(window_size, what="window_size")
        if len(w) != 2:
            raise NotImplementedError("only 2-D pooling is emulated")
        self._init_window(2)
        object.__setattr__(self, "type", type)
        object.__setattr__(self, "window_size_nd", w)
        object.__setattr__(self, "average_count_excludes_padding", True)

    def _infer(self):
        x = self._in()
        if len(x.shape) != 4:
            raise self._err(f"expects a 4-D NCHW input, got {x.shape}")
        k = _dims(self.window_size_nd, 2)
        return [((x.shape[0], x.shape[1]) + self._out_hw(x.shape[2:], k, (1, 1)), x.dtype)]

    def _run(self, xs):
        x = _compute(xs[0])
        k = _dims(self.window_size_nd, 2)
        if self.type == PoolingType.MAX:
            y = self._windows(x, k, (1, 1), -np.inf).max(axis=(-2, -1))     # padding never wins
        elif self.type == PoolingType.AVERAGE:
            tot = self._windows(x, k, (1, 1), 0.0).sum(axis=(-2, -1))
            if self.average_count_excludes_padding:
                ones = np.ones((1, 1) + x.shape[2:], x.dtype)
                cnt = self._windows(ones, k, (1, 1), 0.0).sum(axis=(-2, -1))
            else:
                cnt = float(k[0] * k[1])
            y = tot / cnt
        else:
            raise NotImplementedError(f"pooling type {self.type}")
        return [self._store(y, self._inferred()[0][1])]


class IActivationLayer(ILayer):
    _TRT_CLASS = "IActivationLayer"

    def __init__(self, network, input, type):
        super().__init__(network, [input])
        object.__setattr__(self, "type", type)
        object.__setattr__(self, "alpha", 0.0)
        object.__setattr__(self, "beta", 0.0)

    def _infer(self):
        return [(self._in().shape, self._in().dtype)]

    def _run(self, xs):
        x = _compute(xs[0])
        t = self.type
        if t == ActivationType.SIGMOID:
            y = 1.0 / (1.0 + np.exp(-x))
        elif t == ActivationType.RELU:
            y = np.maximum(x, 0)
        elif t == ActivationType.TANH:
            y = np.tanh(x)
        elif t == ActivationType.LEAKY_RELU:
            y = np.where(x >= 0, x, self.alpha * x)
        else:
            raise NotImplementedError(f"activation {t}")
        return [self._store(y, self._inferred()[0][1])]


def _broadcast(a: Tuple[int, ...], b: Tuple[int, ...], err) -> Tuple[int, ...]:
    """TensorRT elementwise broadcasting: equal rank; per dim equal, or one of them 1."""
    if len(a) != len(b):
        raise err(f"inputs of rank {len(a)} {a} and {len(b)} {b}: TensorRT needs equal ranks "
                  "(add a shuffle to reshape the smaller one)")
    out = []
    for x, y in zip(a, b):
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        elif x == -1 or y == -1:
            out.append(max(x, y))
        else:
            raise err(f"shapes {a} and {b} do not broadcast")
    return tuple(out)


class IElementWiseLayer(ILayer):
    _TRT_CLASS = "IElementWiseLayer"
    _OPS = {ElementWiseOperation.SUM: np.add, ElementWiseOperation.PROD: np.multiply,
            ElementWiseOperation.MAX: np.maximum, ElementWiseOperation.MIN: np.minimum,
            ElementWiseOperation.SUB: np.subtract, ElementWiseOperation.DIV: np.divide,
            ElementWiseOperation.POW: np.power}

    def __init__(self, network, input1, input2, op):
        super().__init__(network, [input1, input2])
        object.__setattr__(self, "op", op)

    def _infer(self):
        a, b = self._inputs
        if a.dtype != b.dtype:
            raise self._err(f"input types differ ({a.dtype.name} and {b.dtype.name}); TensorRT "
                            "elementwise layers need equal types")
        return [(_broadcast(a.shape, b.shape, self._err), a.dtype)]

    def _run(self, xs):
        dt = self._inferred()[0][1]
        _broadcast(xs[0].shape, xs[1].shape, self._err)
        y = self._OPS[self.op](_compute(xs[0]), _compute(xs[1]))
        return [self._store(y, dt)]


class IConcatenationLayer(ILayer):
    _TRT_CLASS = "IConcatenationLayer"

    def __init__(self, network, inputs):
        super().__init__(network, inputs)
        nd = len(inputs[0].shape) if inputs else 0
        object.__setattr__(self, "axis", max(nd - 3, 0))   # TensorRT's documented default

    def _infer(self):
        shapes = [t.shape for t in self._inputs]
        ax = self.axis
        ref = shapes[0]
        if not 0 <= ax < len(ref):
            raise self._err(f"axis {ax} is outside rank {len(ref)}")
        for t, s in zip(self._inputs, shapes):
            if len(s) != len(ref) or any(s[i] != ref[i] for i in range(len(ref)) if i != ax):
                raise self._err(f"input {t.name!r} shape {s} does not match {ref} outside axis {ax}")
            if t.dtype != self._inputs[0].dtype:
                raise self._err("inputs of different types")
        tot = -1 if any(s[ax] < 0 for s in shapes) else sum(s[ax] for s in shapes)
        return [(ref[:ax] + (tot,) + ref[ax + 1:], self._inputs[0].dtype)]

    def _run(self, xs):
        self._inferred()
        return [np.concatenate(xs, axis=self.axis)]


class IShuffleLayer(ILayer):
    _TRT_CLASS = "IShuffleLayer"

    def __init__(self, network, input):
        super().__init__(network, [input])
        nd = len(input.shape)
        object.__setattr__(self, "first_transpose", tuple(range(nd)))
        object.__setattr__(self, "reshape_dims", None)
        object.__setattr__(self, "second_transpose", None)
        object.__setattr__(self, "zero_is_placeholder", True)

    def _reshaped(self, shape: Tuple[int, ...]) -> Tuple[int, ...]:
        """reshape_dims with 0 = copy that input dim (zero_is_placeholder) and one -1 = inferred.
        A dynamic (-1) input dim copied by a 0 cancels out, as in TensorRT's shape inference."""
        if self.reshape_dims is None:
            return shape
        spec = list(_dims(self.reshape_dims))
        if spec.count(-1) > 1:
            raise self._err(f"reshape_dims {tuple(spec)} has more than one -1")
        dims, copied = list(spec), set()
        for i, d in enumerate(spec):
            if d == 0 and self.zero_is_placeholder:
                if i >= len(shape):
                    raise self._err(f"reshape 0 at position {i} but the input has rank {len(shape)}")
                dims[i] = shape[i]
                copied.add(i)
        rest_in = [d for i, d in enumerate(shape) if i not in copied]
        if any(d < 0 for d in rest_in):     # a dynamic dim that is not copied: known at run time only
            return tuple(dims)
        vol = int(np.prod(rest_in))
        known = [d for i, d in enumerate(dims) if i not in copied and spec[i] != -1]
        kvol = int(np.prod(known))
        if -1 in spec:
            if kvol == 0 or vol % kvol:
                raise self._err(f"cannot reshape {shape} to {tuple(spec)}")
            dims[spec.index(-1)] = vol // kvol
        elif kvol != vol:
            raise self._err(f"cannot reshape {shape} ({int(np.prod(shape))} values) to {tuple(dims)}")
        return tuple(dims)

    def _perm(self, p, n, what):
        p = tuple(range(n)) if p is None else _dims(p)
        if sorted(p) != list(range(n)):
            raise self._err(f"{what} {p} is not a permutation of {n} axes")
        return p

    def _infer(self):
        x = self._in()
        p1 = self._perm(self.first_transpose, len(x.shape), "first_transpose")
        s = self._reshaped(tuple(x.shape[i] for i in p1))
        p2 = self._perm(self.second_transpose, len(s), "second_transpose")
        return [(tuple(s[i] for i in p2), x.dtype)]

    def _run(self, xs):
        x = xs[0]
        p1 = self._perm(self.first_transpose, x.ndim, "first_transpose")
        x = x.transpose(p1)
        x = x.reshape(self._reshaped(x.shape))
        return [x.transpose(self._perm(self.second_transpose, x.ndim, "second_transpose"))]


class IResizeLayer(ILayer):
    _TRT_CLASS = "IResizeLayer"

    def __init__(self, network, input):
        super().__init__(network, [input])
        for k, v in dict(shape=None, scales=None, resize_mode=InterpolationMode.NEAREST,
                         coordinate_transformation=ResizeCoordinateTransformation.ASYMMETRIC,
                         nearest_rounding=ResizeRoundMode.FLOOR,
                         selector_for_single_pixel=ResizeSelector.FORMULA).items():
            object.__setattr__(self, k, v)

    def _out_shape(self, shape):
        if self.scales is not None:
            sc = list(map(float, self.scales))
            if len(sc) != len(shape):
                raise self._err(f"{len(sc)} scales for a rank-{len(shape)} input")
            return tuple(-1 if d < 0 else int(np.floor(d * s)) for d, s in zip(shape, sc)), sc
        if self.shape is not None:
            out = _dims(self.shape)
            return out, [o / d if d > 0 else 1.0 for o, d in zip(out, shape)]
        raise self._err("neither scales nor shape set")

    def _infer(self):
        return [(self._out_shape(self._in().shape)[0], self._in().dtype)]

    def _src_index(self, n_in: int, n_out: int, scale: float) -> np.ndarray:
        """Input index of each output index: the coordinate transformation's formula (ratio =
        length_original / length_resized, or 1/scale when scales are set), then the rounding."""
        o = np.arange(n_out, dtype=np.float64)
        ct = self.coordinate_transformation
        ratio = 1.0 / scale if self.scales is not None else n_in / n_out
        if n_out == 1 and self.selector_for_single_pixel == ResizeSelector.UPPER:
            return np.zeros(1, np.int64)
        if ct == ResizeCoordinateTransformation.ASYMMETRIC:
            x = o * ratio
        elif ct == ResizeCoordinateTransformation.HALF_PIXEL:
            x = (o + 0.5) * ratio - 0.5
        elif ct == ResizeCoordinateTransformation.ALIGN_CORNERS:
            x = o * (n_in - 1) / (n_out - 1) if n_out > 1 else np.zeros(1)
        else:
            raise NotImplementedError(ct)
        r = self.nearest_rounding
        if r == ResizeRoundMode.FLOOR:
            i = np.floor(x)
        elif r == ResizeRoundMode.CEIL:
            i = np.ceil(x)
        elif r == ResizeRoundMode.HALF_UP:
            i = np.floor(x + 0.5)
        elif r == ResizeRoundMode.HALF_DOWN:
            i = np.ceil(x - 0.5)
        else:
            raise NotImplementedError(r)
        return np.clip(i, 0, n_in - 1).astype(np.int64)

    def _run(self, xs):
        x = xs[0]
        if self.resize_mode != InterpolationMode.NEAREST:
            raise NotImplementedError(f"resize mode {self.resize_mode}")
        out, sc = self._out_shape(x.shape)
        for ax, (n_in, n_out) in enumerate(zip(x.shape, out)):
            if n_in != n_out or sc[ax] != 1.0:
                x = np.take(x, self._src_index(n_in, n_out, sc[ax]), axis=ax)
        return [x]


class IScaleLayer(ILayer):
    """out = (x * scale + shift) ** power, with coefficients per tensor, channel or element."""
    _TRT_CLASS = "IScaleLayer"

    def __init__(self, network, input, mode, shift, scale, power, channel_axis=None):
        super().__init__(network, [input])
        nd = len(input.shape)
        object.__setattr__(self, "mode", mode)
        object.__setattr__(self, "shift", _as_weights(shift, "shift", self.name))
        object.__setattr__(self, "scale", _as_weights(scale, "scale", self.name))
        object.__setattr__(self, "power", _as_weights(power, "power", self.name))
        # ScaleMode.CHANNEL: "the channel dimension is assumed to be the third to last dimension"
        object.__setattr__(self, "channel_axis", nd - 3 if channel_axis is None else int(channel_axis))
        if nd < 3:
            raise self._err(f"the input needs at least 3 dimensions, got {input.shape}")

    def _coef_shape(self, shape):
        ax = self.channel_axis
        if self.mode == ScaleMode.UNIFORM:
            return (1,) * len(shape), 1
        if self.mode == ScaleMode.CHANNEL:
            return tuple(shape[ax] if i == ax else 1 for i in range(len(shape))), shape[ax]
        if self.mode == ScaleMode.ELEMENTWISE:
            tail = shape[ax:]
            return (1,) * ax + tuple(tail), int(np.prod(tail))
        raise NotImplementedError(self.mode)

    def _infer(self):
        x = self._in()
        cs, n = self._coef_shape(x.shape)
        for what in ("shift", "scale", "power"):
            w = getattr(self, what)
            if w is not None and w.size not in (0, n):
                raise self._err(f"{what} has {w.size} values; mode {self.mode.name} on shape {x.shape} needs {n}")
        return [(x.shape, x.dtype)]

    def _run(self, xs):
        x = _compute(xs[0])
        cs, _ = self._coef_shape(x.shape)
        y = x
        if self.scale is not None and self.scale.size:
            y = y * self._coef(self.scale).reshape(cs)
        if self.shift is not None and self.shift.size:
            y = y + self._coef(self.shift).reshape(cs)
        if self.power is not None and self.power.size:
            y = y ** self._coef(self.power).reshape(cs)
        return [self._store(y, self._inferred()[0][1])]


class IConstantLayer(ILayer):
    _TRT_CLASS = "IConstantLayer"

    def __init__(self, network, shape, weights):
        super().__init__(network, [])
        object.__setattr__(self, "shape", _dims(shape))
        object.__setattr__(self, "weights", _as_weights(weights, "weights", self.name))
        if int(np.prod(self.shape)) != self.weights.size:
            raise self._err(f"shape {self.shape} needs {int(np.prod(self.shape))} values, "
                            f"the weights hold {self.weights.size}")

    def _infer(self):
        return [(self.shape, _dtype_of(self.weights))]

    def _run(self, xs):
        return [self._store(self.weights.reshape(self.shape), _dtype_of(self.weights))]


class ICastLayer(ILayer):
    _TRT_CLASS = "ICastLayer"

    def __init__(self, network, input, to_type):
        super().__init__(network, [input])
        object.__setattr__(self, "to_type", to_type)

    def _infer(self):
        return [(self._in().shape, self.to_type)]

    def _run(self, xs):
        return [self._store(xs[0], self.to_type)]




class IGatherLayer(ILayer):
    """GatherMode.DEFAULT: output shape = data.shape[:axis] + indices.shape + data.shape[axis+1:].
    GatherMode.ND (num_elementwise_dims 0): the last dim of indices (q) indexes data's first q
    dims; output shape = indices.shape[:-1] + data.shape[q:]."""
    _TRT_CLASS = "IGatherLayer"

    def __init__(self, network, input, indices, axis, mode=GatherMode.DEFAULT):
        super().__init__(network, [input, indices])
        object.__setattr__(self, "axis", int(axis))
        object.__setattr__(self, "mode", mode)
        object.__setattr__(self, "num_elementwise_dims", 0)

    def _infer(self):
        data, idx = self._inputs
        if idx.dtype not in (DataType.INT32, DataType.INT64):
            raise self._err(f"indices must be INT32 or INT64, got {idx.dtype.name}")
        if self.mode == GatherMode.ND:
            q = idx.shape[-1]
            if self.num_elementwise_dims != 0 or q < 0 or q > len(data.shape):
                raise self._err(f"ND gather of {data.shape} with indices {idx.shape} is not emulated")
            return [(idx.shape[:-1] + data.shape[q:], data.dtype)]
        if self.mode != GatherMode.DEFAULT:
            raise NotImplementedError(f"gather mode {self.mode}")
        ax = self.axis
        return [(data.shape[:ax] + idx.shape + data.shape[ax + 1:], data.dtype)]

    def _run(self, xs):
        data, idx = xs
        self._inferred()
        if self.mode == GatherMode.ND:
            q = idx.shape[-1]
            for d in range(q):
                if np.any(idx[..., d] < 0) or np.any(idx[..., d] >= data.shape[d]):
                    raise self._err(f"ND index out of range for dim {d} of size {data.shape[d]}")
            return [data[tuple(idx[..., d] for d in range(q))]]
        n = data.shape[self.axis]
        if np.any(idx < -n) or np.any(idx >= n):
            raise self._err(f"index out of range for axis {self.axis} of size {n}")
        return [np.take(data, idx, axis=self.axis)]


class INMSLayer(ILayer):
    """add_nms, with the semantics INMSLayer documents (those of ONNX NonMaxSuppression):
    per image and class, boxes with score > ScoreThreshold are candidates (the best
    ``topk_box_limit`` per image over all classes), visited by decreasing score; one is
    selected when its IoU with every box already selected for that class is <= IoUThreshold,
    up to MaxOutputBoxesPerClass. Outputs: SelectedIndices [M, 3] int32 (image, class, box),
    sorted by image, then by decreasing score (ties: box order, then class order; TensorRT
    leaves ties unspecified), and NumOutputBoxes, a 0-D int32. Optional inputs 3 (IoU) and 4
    (score threshold) default to 0."""
    _TRT_CLASS = "INMSLayer"
    _N_OUT = 2

    def __init__(self, network, boxes, scores, max_output_boxes_per_class):
        super().__init__(network, [boxes, scores, max_output_boxes_per_class])
        object.__setattr__(self, "bounding_box_format", BoundingBoxFormat.CORNER_PAIRS)
        object.__setattr__(self, "topk_box_limit", 5000)

    def set_input(self, index, tensor):
        if index not in (3, 4):
            return super().set_input(index, tensor)
        API_LOG.append((self._TRT_CLASS, "set_input", 2, ()))
        while len(self._inputs) <= index:
            self._inputs.append(None)
        self._inputs[index] = tensor
        self._network._version += 1

    def _infer(self):
        boxes, scores = self._inputs[0], self._inputs[1]
        if len(boxes.shape) != 3 or boxes.shape[-1] != 4 or len(scores.shape) != 3:
            raise self._err(f"boxes must be [B, N, 4] and scores [B, N, C], got {boxes.shape}, {scores.shape}")
        if boxes.dtype != scores.dtype:
            raise self._err("boxes and scores must have the same type")
        for t in self._inputs[2:]:
            if t is not None and t.shape != ():
                raise self._err(f"{t.name!r}: the NMS limit and thresholds are 0-D tensors, got {t.shape}")
        if not 0 < self.topk_box_limit <= 5000:
            raise self._err(f"topk_box_limit {self.topk_box_limit} must be in 1..5000")
        return [((-1, 3), DataType.INT32), ((), DataType.INT32)]

    def _run(self, xs):
        self._inferred()
        boxes, scores, per_class = xs[0], xs[1], int(xs[2])
        iou_thr = float(xs[3]) if len(xs) > 3 and xs[3] is not None else 0.0
        score_thr = float(xs[4]) if len(xs) > 4 and xs[4] is not None else 0.0
        from .numpy_plugins import _iou
        b = boxes.astype(np.float64)
        if self.bounding_box_format == BoundingBoxFormat.CENTER_SIZES:
            b = np.concatenate([b[..., :2] - b[..., 2:] / 2, b[..., :2] + b[..., 2:] / 2], -1)
        rows = []
        n_cls = scores.shape[2]
        for i in range(scores.shape[0]):
            s = scores[i].astype(np.float64).reshape(-1)          # index = box * C + class
            cand = np.nonzero(s > score_thr)[0]
            cand = cand[np.argsort(-s[cand], kind="stable")][:self.topk_box_limit]
            kept = {c: [] for c in range(n_cls)}
            for k in cand:
                box, c = int(k // n_cls), int(k % n_cls)
                if len(kept[c]) >= per_class:
                    continue
                if kept[c] and np.any(_iou(b[i, box], b[i, kept[c]]) > iou_thr):
                    continue
                kept[c].append(box)
                rows.append((i, c, box))
        return [np.asarray(rows, np.int32).reshape(-1, 3), np.asarray(len(rows), np.int32)]

"""The YOLOv5 Layer: walks the resolved layer list and wires the blocks."""
from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

import numpy as np
import paddle
import paddle.nn as nn

from ..compat import traced_cell_grid
from .blocks import PADDLE_LAYERS, paddle_layer
from .channels import ResolvedLayer, resolve
from .spec import NetSpec


@paddle_layer("Detect")
class Detect(nn.Layer):
    """1x1 output convs per level; in eval mode also the ultralytics box decode."""

    def __init__(self, r: ResolvedLayer, net: NetSpec):
        super().__init__()
        self.nc, self.no, self.na = net.nc, net.no, net.na
        self.nl = len(r.detect)
        self.stride = [float(s) for s in net.strides]
        self.m = nn.LayerList([nn.Conv2D(ci, co, 1) for ci, co in r.detect])
        # anchors in input pixels, [nl, na, 2]; carried in the checkpoint's metadata
        anchors = np.asarray(net.anchors, dtype="float32").reshape(self.nl, self.na, 2)
        self.register_buffer("anchors", paddle.to_tensor(anchors), persistable=False)
        self._grids = {}

    def init_biases(self, img_size: int = 640):
        """Prior biases as ultralytics' _initialize_biases (8 objects per 640 image, cls 0.6)."""
        for mi, s in zip(self.m, self.stride):
            b = mi.bias.numpy().reshape(self.na, self.no)
            b[:, 4] += math.log(8 / (img_size / s) ** 2)
            b[:, 5:] += math.log(0.6 / (self.nc - 0.99)) if self.nc > 1 else 0.0
            mi.bias.set_value(b.reshape(-1))

    def _grid(self, i: int, ny: int, nx: int):
        key = (i, ny, nx)
        if not paddle.in_dynamic_mode():   # a tensor made while tracing must not be cached
            return traced_cell_grid(ny, nx)   # Paddle 3 traces it as ops (compat.py)
        grid = self._grids.get(key)
        if grid is None:
            yv, xv = np.meshgrid(np.arange(ny, dtype="float32"), np.arange(nx, dtype="float32"),
                                 indexing="ij")
            grid = paddle.to_tensor(np.stack((xv, yv), -1)[None, None] - 0.5)   # [1,1,ny,nx,2]
            self._grids[key] = grid
        return grid

    def forward(self, *xs: paddle.Tensor):
        raw, z = [], []
        for i in range(self.nl):
            x = self.m[i](xs[i])
            bs, _, ny, nx = x.shape
            x = x.reshape([bs, self.na, self.no, ny, nx]).transpose([0, 1, 3, 4, 2])
            raw.append(x)
            if not self.training:
                y = nn.functional.sigmoid(x)
                xy = (y[..., 0:2] * 2 + self._grid(i, ny, nx)) * self.stride[i]
                wh = (y[..., 2:4] * 2) ** 2 * self.anchors[i].reshape([1, self.na, 1, 1, 2])
                y = paddle.concat([xy, wh, y[..., 4:]], axis=-1)
                z.append(y.reshape([bs, self.na * ny * nx, self.no]))
        return raw if self.training else paddle.concat(z, axis=1)


class YOLOv5(nn.Layer):
    """YOLOv5 v6+. Train mode: three raw maps [B, na, ny, nx, 5+nc].
    Eval mode: decoded predictions [B, N, 5+nc] (cx, cy, w, h in input pixels, obj, cls)."""

    def __init__(self, net: NetSpec, shapes: Optional[Mapping[str, Sequence[int]]] = None):
        super().__init__()
        self.net = net
        self.resolved = resolve(net, shapes)
        self.model = nn.LayerList([PADDLE_LAYERS[r.spec.block](r, net) for r in self.resolved])
        if shapes is None:
            self.model[-1].init_biases()

    @property
    def nc(self) -> int:
        return self.net.nc

    @property
    def detect(self) -> Detect:
        return self.model[-1]

    def forward(self, x):
        saved = {-2: x}
        for r, layer in zip(self.resolved, self.model):
            src = r.spec.src
            x = layer(*[saved[s] for s in src])   # varargs so paddle.flops' hooks see tensors
            saved[r.spec.index] = x
        return x


def count_parameters(model: nn.Layer, trainable_only: bool = True) -> int:
    """Trainable parameters, as ultralytics counts them (Paddle lists BN mean/var too)."""
    return int(sum(int(np.prod(p.shape)) for p in model.parameters()
                   if not (trainable_only and p.stop_gradient)))


def float64_twin(model: "YOLOv5", h: int, w: Optional[int] = None):
    """``model`` rebuilt in float64 (weights, anchors, the grids for an ``h`` x ``w`` input), as a
    function of float64 images: the float32 rounding noise of a model is measured against it
    (export and deploy checks). Detect makes anchors and grids in float32; float64 copies avoid
    mixed-dtype ops (which Paddle would promote, warning per op)."""
    w = h if w is None else w
    state = {k: v.numpy().astype(np.float64) for k, v in model.state_dict().items()}
    paddle.set_default_dtype("float64")
    try:
        twin = YOLOv5(model.net, {k: v.shape for k, v in state.items()})
    finally:
        paddle.set_default_dtype("float32")
    twin.set_state_dict(state)
    twin.eval()
    det = twin.detect
    det.anchors = paddle.to_tensor(det.anchors.numpy().astype(np.float64))
    for i, s in enumerate(det.stride):
        key = (i, h // int(s), w // int(s))
        det._grids[key] = det._grid(*key).astype("float64")

    def run(images: np.ndarray) -> np.ndarray:
        with paddle.no_grad():
            return twin(paddle.to_tensor(np.asarray(images, dtype=np.float64))).numpy()
    return run

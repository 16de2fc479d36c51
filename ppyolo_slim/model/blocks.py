"""YOLOv5 blocks in Paddle dygraph, built from resolved channel counts (channels.py).

Sub-layer names mirror ultralytics' (``cv1``, ``m.0.cv2``, ``conv``, ``bn``), so a
state dict converts by renaming BN statistics only. Each block of the layer list registers
``make(resolved_layer, net)`` under its name (``@paddle_layer``); what the block is, its
args and convs, is described in ``block_types.py``.
"""
from __future__ import annotations

import paddle
import paddle.nn as nn

from ..compat import upsample_nearest
from .block_types import registrar
from .channels import ConvSpec, ResolvedLayer
from .spec import NetSpec

# torch BatchNorm momentum 0.03 updates running = 0.97*running + 0.03*batch;
# Paddle's momentum is the weight of the running value.
BN_MOMENTUM = 0.97
BN_EPS = 1e-3

# block name -> make(ResolvedLayer, NetSpec) -> its Paddle layer (YOLOv5 builds the rows with it;
# Detect's registers in yolo.py)
PADDLE_LAYERS = {}
paddle_layer = registrar(PADDLE_LAYERS)


class Conv(nn.Layer):
    """Conv2D (no bias) + BatchNorm + SiLU."""

    def __init__(self, cs: ConvSpec):
        super().__init__()
        self.conv = nn.Conv2D(cs.c1, cs.c2, cs.k, cs.s, cs.p, bias_attr=False)
        self.bn = nn.BatchNorm2D(cs.c2, momentum=BN_MOMENTUM, epsilon=BN_EPS)
        self.act = nn.Silu()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


@paddle_layer("Conv")
def conv_block(r: ResolvedLayer, net: NetSpec) -> Conv:
    return Conv(r.convs[""])


class Bottleneck(nn.Layer):
    def __init__(self, cv1: ConvSpec, cv2: ConvSpec, shortcut: bool):
        super().__init__()
        self.cv1 = Conv(cv1)
        self.cv2 = Conv(cv2)
        self.add = shortcut and cv1.c1 == cv2.c2

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


@paddle_layer("C3")
class C3(nn.Layer):
    def __init__(self, r: ResolvedLayer, net: NetSpec):
        super().__init__()
        self.cv1 = Conv(r.convs["cv1"])
        self.cv2 = Conv(r.convs["cv2"])
        self.cv3 = Conv(r.convs["cv3"])
        self.m = nn.Sequential(*[
            Bottleneck(r.convs[f"m.{j}.cv1"], r.convs[f"m.{j}.cv2"], r.spec.shortcut)
            for j in range(r.bottlenecks)])

    def forward(self, x):
        return self.cv3(paddle.concat([self.m(self.cv1(x)), self.cv2(x)], axis=1))


@paddle_layer("SPPF")
class SPPF(nn.Layer):
    def __init__(self, r: ResolvedLayer, net: NetSpec):
        super().__init__()
        k = r.spec.pool
        self.cv1 = Conv(r.convs["cv1"])
        self.cv2 = Conv(r.convs["cv2"])
        self.m = nn.MaxPool2D(k, 1, k // 2)

    def forward(self, x):
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(paddle.concat([x, y1, y2, self.m(y2)], axis=1))


@paddle_layer("Upsample")
class Upsample(nn.Layer):
    def __init__(self, r: ResolvedLayer, net: NetSpec):
        super().__init__()
        self.scale = r.spec.scale

    def forward(self, x):
        return upsample_nearest(x, int(self.scale))   # traced differently on Paddle 3 (compat.py)


@paddle_layer("Concat")
class Concat(nn.Layer):
    def __init__(self, r: ResolvedLayer, net: NetSpec):
        super().__init__()

    def forward(self, *xs):
        return paddle.concat(xs, axis=1)

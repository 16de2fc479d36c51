"""YOLOv5 blocks in Paddle dygraph, built from resolved channel counts (channels.py).

Sub-layer names mirror ultralytics' (``cv1``, ``m.0.cv2``, ``conv``, ``bn``), so a
state dict converts by renaming BN statistics only.
"""
from __future__ import annotations

import paddle
import paddle.nn as nn

from ..compat import upsample_nearest
from .channels import ConvSpec, ResolvedLayer

# torch BatchNorm momentum 0.03 updates running = 0.97*running + 0.03*batch;
# Paddle's momentum is the weight of the running value.
BN_MOMENTUM = 0.97
BN_EPS = 1e-3


class Conv(nn.Layer):
    """Conv2D (no bias) + BatchNorm + SiLU."""

    def __init__(self, cs: ConvSpec):
        super().__init__()
        self.conv = nn.Conv2D(cs.c1, cs.c2, cs.k, cs.s, cs.p, bias_attr=False)
        self.bn = nn.BatchNorm2D(cs.c2, momentum=BN_MOMENTUM, epsilon=BN_EPS)
        self.act = nn.Silu()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Layer):
    def __init__(self, cv1: ConvSpec, cv2: ConvSpec, shortcut: bool):
        super().__init__()
        self.cv1 = Conv(cv1)
        self.cv2 = Conv(cv2)
        self.add = shortcut and cv1.c1 == cv2.c2

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3(nn.Layer):
    def __init__(self, r: ResolvedLayer):
        super().__init__()
        self.cv1 = Conv(r.convs["cv1"])
        self.cv2 = Conv(r.convs["cv2"])
        self.cv3 = Conv(r.convs["cv3"])
        self.m = nn.Sequential(*[
            Bottleneck(r.convs[f"m.{j}.cv1"], r.convs[f"m.{j}.cv2"], r.spec.shortcut)
            for j in range(r.bottlenecks)])

    def forward(self, x):
        return self.cv3(paddle.concat([self.m(self.cv1(x)), self.cv2(x)], axis=1))


class SPPF(nn.Layer):
    def __init__(self, r: ResolvedLayer):
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


class Upsample(nn.Layer):
    def __init__(self, r: ResolvedLayer):
        super().__init__()
        self.scale = r.spec.scale

    def forward(self, x):
        return upsample_nearest(x, int(self.scale))   # traced differently on Paddle 3 (compat.py)


class Concat(nn.Layer):
    def forward(self, *xs):
        return paddle.concat(xs, axis=1)

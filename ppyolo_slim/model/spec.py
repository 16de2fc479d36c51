"""The one description of the YOLOv5 (v6+) network.

The layer list below is ultralytics' ``models/yolov5*.yaml`` as data: each row is
(from, repeats, block, args). ``expand`` applies the depth and width multiples and
returns ``LayerSpec`` rows with the default channel counts. Both the Paddle model
(``model/yolo.py``) and the TensorRT builder (``ppyolo_slim/deploy/builder.py``) walk this list;
where weights are given, each conv's channel count is read from them instead. What each
block name means (its args, its convs) is described once, in ``block_types.py``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Sequence, Tuple, Union

from .block_types import block_type

From = Union[int, Tuple[int, ...]]

BACKBONE = [
    # from, repeats, block, args
    (-1, 1, "Conv", [64, 6, 2, 2]),     # 0  P1/2
    (-1, 1, "Conv", [128, 3, 2]),       # 1  P2/4
    (-1, 3, "C3", [128]),               # 2
    (-1, 1, "Conv", [256, 3, 2]),       # 3  P3/8
    (-1, 6, "C3", [256]),               # 4
    (-1, 1, "Conv", [512, 3, 2]),       # 5  P4/16
    (-1, 9, "C3", [512]),               # 6
    (-1, 1, "Conv", [1024, 3, 2]),      # 7  P5/32
    (-1, 3, "C3", [1024]),              # 8
    (-1, 1, "SPPF", [1024, 5]),         # 9
]
HEAD = [
    (-1, 1, "Conv", [512, 1, 1]),       # 10
    (-1, 1, "Upsample", [2]),           # 11
    ((-1, 6), 1, "Concat", []),         # 12 cat backbone P4
    (-1, 3, "C3", [512, False]),        # 13
    (-1, 1, "Conv", [256, 1, 1]),       # 14
    (-1, 1, "Upsample", [2]),           # 15
    ((-1, 4), 1, "Concat", []),         # 16 cat backbone P3
    (-1, 3, "C3", [256, False]),        # 17 P3/8 out
    (-1, 1, "Conv", [256, 3, 2]),       # 18
    ((-1, 14), 1, "Concat", []),        # 19 cat head P4
    (-1, 3, "C3", [512, False]),        # 20 P4/16 out
    (-1, 1, "Conv", [512, 3, 2]),       # 21
    ((-1, 10), 1, "Concat", []),        # 22 cat head P5
    (-1, 3, "C3", [1024, False]),       # 23 P5/32 out
    ((17, 20, 23), 1, "Detect", []),    # 24
]

# depth_multiple, width_multiple, as in yolov5{n,s,m,l,x}.yaml
SCALES = {
    "n": (0.33, 0.25),
    "s": (0.33, 0.50),
    "m": (0.67, 0.75),
    "l": (1.00, 1.00),
    "x": (1.33, 1.25),
}

DEFAULT_ANCHORS = [
    [10, 13, 16, 30, 33, 23],        # P3/8
    [30, 61, 62, 45, 59, 119],       # P4/16
    [116, 90, 156, 198, 373, 326],   # P5/32
]
STRIDES = (8, 16, 32)


@dataclass(frozen=True)
class LayerSpec:
    index: int
    src: Tuple[int, ...]   # absolute indices of the inputs (-1 resolved); -2 means the image
    repeats: int           # bottlenecks for C3, else 1
    block: str
    out_channels: int      # default width (before any weights say otherwise); 0 where n/a
    kernel: int = 1
    stride: int = 1
    padding: int = 0
    shortcut: bool = True  # C3 only
    pool: int = 5          # SPPF only
    scale: int = 2         # Upsample only

    @property
    def name(self) -> str:
        return f"model.{self.index}"


@dataclass
class NetSpec:
    layers: List[LayerSpec]
    nc: int
    anchors: List[List[float]]
    depth_multiple: float
    width_multiple: float
    strides: Tuple[int, ...] = STRIDES
    outputs: Tuple[int, ...] = field(default=(17, 20, 23))

    @property
    def na(self) -> int:
        return len(self.anchors[0]) // 2

    @property
    def no(self) -> int:
        return self.nc + 5


def make_divisible(x: float, divisor: int = 8) -> int:
    return int(math.ceil(x / divisor) * divisor)


def scaled_repeats(n: int, depth_multiple: float) -> int:
    return max(round(n * depth_multiple), 1) if n > 1 else n


def expand(nc: int = 80, depth_multiple: float = 0.33, width_multiple: float = 0.25,
           anchors: Sequence[Sequence[float]] = DEFAULT_ANCHORS) -> NetSpec:
    """Resolve the layer list with the multiples, as ultralytics' parse_model does."""
    if nc < 1:
        raise ValueError(f"nc must be >= 1, got {nc}")
    anchors = [list(map(float, a)) for a in anchors]
    if len(anchors) != 3 or any(len(a) != len(anchors[0]) or len(a) % 2 for a in anchors):
        raise ValueError(f"anchors must be 3 rows of equal, even length (w,h pairs), got {anchors}")
    layers = []
    for i, (src, n, block, args) in enumerate(BACKBONE + HEAD):
        srcs = (src,) if isinstance(src, int) else tuple(src)
        srcs = tuple(i + s if s < 0 else s for s in srcs)
        if i == 0:
            srcs = (-2,)
        kind = block_type(block)
        c, kw = kind.layer_spec(args)
        out = make_divisible(c * width_multiple, 8) if c else 0
        n = scaled_repeats(n, depth_multiple) if kind.repeated else 1
        layers.append(LayerSpec(i, srcs, n, block, out, **kw))
    return NetSpec(layers, nc, anchors, depth_multiple, width_multiple)


def expand_scale(scale: str = "n", nc: int = 80, anchors=DEFAULT_ANCHORS) -> NetSpec:
    if scale not in SCALES:
        raise ValueError(f"unknown model scale {scale!r}; expected one of {sorted(SCALES)}")
    gd, gw = SCALES[scale]
    return expand(nc, gd, gw, anchors)

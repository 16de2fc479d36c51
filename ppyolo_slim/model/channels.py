"""Resolve every conv's channel counts: from the multiples, or from the weights.

A pruned checkpoint needs no side file: each conv weight's shape says its channels.
``resolve`` walks the layer list of ``spec.py`` once, tracks the channels each layer
really emits, and checks that every conv's input width matches what feeds it, so a
bad checkpoint fails here with the parameter's name instead of deep inside a forward.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from .spec import LayerSpec, NetSpec


class WeightShapeError(ValueError):
    """Weights whose shapes do not fit the network; the message names the parameter."""


@dataclass(frozen=True)
class ConvSpec:
    """Conv2D(no bias) + BN + SiLU. Weights live at ``{name}.conv.weight`` and ``{name}.bn.*``."""
    name: str
    c1: int
    c2: int
    k: int = 1
    s: int = 1
    p: int = 0


@dataclass
class ResolvedLayer:
    spec: LayerSpec
    out_channels: int
    convs: Dict[str, ConvSpec] = field(default_factory=dict)   # keyed by path inside the block
    bottlenecks: int = 0                                        # C3 only
    detect: List[Tuple[int, int]] = field(default_factory=list) # Detect only: (c_in, c_out) per level

    @property
    def name(self) -> str:
        return self.spec.name


class _Shapes:
    def __init__(self, shapes: Optional[Mapping[str, Sequence[int]]]):
        self.shapes = {k: tuple(int(d) for d in v) for k, v in (shapes or {}).items()}

    def conv(self, name: str, c1: int, default_c2: int, k: int) -> int:
        key = f"{name}.conv.weight"
        if not self.shapes:
            return default_c2
        if key not in self.shapes:
            raise WeightShapeError(f"{key}: missing from the weights (expected a conv of "
                                   f"{c1} input channels, kernel {k}x{k})")
        shape = self.shapes[key]
        if len(shape) != 4 or shape[2:] != (k, k):
            raise WeightShapeError(f"{key}: expected shape [out, {c1}, {k}, {k}], got {list(shape)}")
        if shape[1] != c1:
            raise WeightShapeError(f"{key}: expects {shape[1]} input channels but the layer feeding "
                                   f"it gives {c1} (weights {list(shape)})")
        if shape[0] < 1:
            raise WeightShapeError(f"{key}: has no output channels")
        return shape[0]

    def repeats(self, name: str, default: int) -> int:
        if not self.shapes:
            return default
        pat = re.compile(re.escape(name) + r"\.m\.(\d+)\.cv1\.conv\.weight$")
        idx = sorted(int(m.group(1)) for k in self.shapes if (m := pat.match(k)))
        if idx != list(range(len(idx))) or not idx:
            raise WeightShapeError(f"{name}.m: expected bottlenecks numbered 0..n-1, found {idx}")
        return len(idx)


def resolve(net: NetSpec, shapes: Optional[Mapping[str, Sequence[int]]] = None,
            in_channels: int = 3) -> List[ResolvedLayer]:
    """Channel counts for every conv of ``net``; from ``shapes`` (name -> shape) when given."""
    w = _Shapes(shapes)
    out: List[ResolvedLayer] = []
    ch: Dict[int, int] = {-2: in_channels}

    def conv(name, c1, c2, k=1, s=1, p=None):
        c2 = w.conv(name, c1, c2, k)
        return ConvSpec(name, c1, c2, k, s, k // 2 if p is None else p)

    for L in net.layers:
        c1 = ch[L.src[0]]
        r = ResolvedLayer(L, 0)
        if L.block == "Conv":
            cs = conv(L.name, c1, L.out_channels, L.kernel, L.stride, L.padding)
            r.convs[""] = cs
            r.out_channels = cs.c2
        elif L.block == "C3":
            half = int(L.out_channels * 0.5)
            a = r.convs["cv1"] = conv(f"{L.name}.cv1", c1, half)
            b = r.convs["cv2"] = conv(f"{L.name}.cv2", c1, half)
            r.bottlenecks = w.repeats(L.name, L.repeats)
            c = a.c2
            for j in range(r.bottlenecks):
                m1 = r.convs[f"m.{j}.cv1"] = conv(f"{L.name}.m.{j}.cv1", c, c)
                m2 = r.convs[f"m.{j}.cv2"] = conv(f"{L.name}.m.{j}.cv2", m1.c2, c, 3)
                if L.shortcut and m2.c2 != c:
                    raise WeightShapeError(
                        f"{m2.name}.conv.weight: a residual bottleneck must give back its "
                        f"{c} input channels, the weights give {m2.c2}")
                c = m2.c2
            cv3 = r.convs["cv3"] = conv(f"{L.name}.cv3", c + b.c2, L.out_channels)
            r.out_channels = cv3.c2
        elif L.block == "SPPF":
            a = r.convs["cv1"] = conv(f"{L.name}.cv1", c1, c1 // 2)
            cv2 = r.convs["cv2"] = conv(f"{L.name}.cv2", 4 * a.c2, L.out_channels)
            r.out_channels = cv2.c2
        elif L.block == "Upsample":
            r.out_channels = c1
        elif L.block == "Concat":
            r.out_channels = sum(ch[s] for s in L.src)
        elif L.block == "Detect":
            no = net.na * net.no
            for i, s in enumerate(L.src):
                key = f"{L.name}.m.{i}.weight"
                got = w.shapes.get(key)   # absent: a new head (fine-tuning to another nc)
                want = (no, ch[s], 1, 1)
                if got is not None:
                    if got != want:
                        hint = ""
                        if got[0] != no and got[0] % net.na == 0:
                            hint = f" (the weights are for nc={got[0] // net.na - 5}, the model has nc={net.nc})"
                        raise WeightShapeError(f"{key}: expected shape {list(want)}, got {list(got)}{hint}")
                r.detect.append((ch[s], no))
            r.out_channels = 0
        else:
            raise ValueError(f"{L.name}: unknown block {L.block!r}")
        ch[L.index] = r.out_channels
        out.append(r)
    return out


def infer_nc(shapes: Mapping[str, Sequence[int]], na: int = 3) -> Optional[int]:
    """Number of classes from the first Detect output conv, if present."""
    for k, v in shapes.items():
        if re.match(r"model\.\d+\.m\.0\.weight$", k) and len(v) == 4 and v[2:] == (1, 1):
            if v[0] % na == 0 and v[0] // na > 5:
                return v[0] // na - 5
    return None

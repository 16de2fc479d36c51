"""Resolve every conv's channel counts: from the multiples, or from the weights.

A pruned checkpoint needs no side file: each conv weight's shape says its channels.
``resolve`` walks the layer list of ``spec.py`` once, tracks the channels each layer
really emits (each block's rule is in ``block_types.py``), and checks that every conv's
input width matches what feeds it, so a bad checkpoint fails here with the parameter's
name instead of deep inside a forward.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from .block_types import block_type
from .spec import LayerSpec, NetSpec
from .errors import WeightShapeError  # noqa: F401  (imported from here by many)


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


class WeightShapes:
    """A state dict's shapes (name -> shape), read conv by conv; none: every default holds."""

    def __init__(self, shapes: Optional[Mapping[str, Sequence[int]]]):
        self.shapes = {k: tuple(int(d) for d in v) for k, v in (shapes or {}).items()}

    def conv(self, name: str, c1: int, c2: int, k: int = 1, s: int = 1, p: Optional[int] = None) -> ConvSpec:
        """The conv at ``name`` fed ``c1`` channels: ``c2`` outputs unless the weights say otherwise."""
        c2 = self._out_channels(name, c1, c2, k)
        return ConvSpec(name, c1, c2, k, s, k // 2 if p is None else p)

    def _out_channels(self, name: str, c1: int, default_c2: int, k: int) -> int:
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
    w = WeightShapes(shapes)
    out: List[ResolvedLayer] = []
    ch: Dict[int, int] = {-2: in_channels}
    for L in net.layers:
        r = ResolvedLayer(L, 0)
        r.out_channels = block_type(L.block).resolve(r, [ch[s] for s in L.src], w, net)
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

"""One description per block of the layer list (``spec.py``): what the other modules ask of it.

A ``BlockType`` says how its row's args read (``layer_spec``), which convs it holds and how
their widths follow from the weights (``resolve``), which conv's BN gives the block's output
(``output_conv``, the BN sparsity leaves alone when Detect reads it), which convs sit inside
a residual add (``residual_convs``) and what to check in the ultralytics module of its row
(``check_ultralytics``). Its Paddle layer registers by the same name with
``blocks.paddle_layer`` and its TensorRT emitter with ``deploy.builder.emits``; so a new
block is this description, one Paddle layer and one emitter. Names are ultralytics' class
names: ``convert.py`` compares them with the checkpoint's modules.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

from .errors import WeightShapeError

# Annotations name channels.py's ResolvedLayer and WeightShapes and spec.py's NetSpec without
# importing them: both modules import this one.
Attrs = Callable[[str], Dict[str, Any]]   # path inside the block ("" = the block) -> module attributes
Fail = Callable[[str, str], None]         # (module name, what is wrong) -> raises


class BlockType:
    """The defaults: a block with no args and no convs. A block subclasses it under ``@register``."""
    name = ""
    output_conv: Optional[str] = None   # key in ResolvedLayer.convs; None: the output is no BN's
    repeated = False                     # the row's repeats are the block's own (scaled by depth)

    def layer_spec(self, args: List[Any]) -> Tuple[int, Dict[str, Any]]:
        """(output channels before the width multiple, 0 where n/a; other LayerSpec fields)."""
        return 0, {}

    def resolve(self, r: "ResolvedLayer", c_in: List[int], w: "WeightShapes", net: "NetSpec") -> int:
        """Fill ``r``'s convs from the widths of its inputs and the weights; return the width it emits."""
        raise NotImplementedError(self.name)

    def residual_convs(self, r: "ResolvedLayer") -> List[str]:
        """Conv keys inside a residual add (their channels are tied to the add's input)."""
        return []

    def check_ultralytics(self, r: "ResolvedLayer", attrs: Attrs, fail: Fail) -> None:
        """What the weights' shapes cannot show (kernel, mode, ...); the sub-convs are checked apart."""


BLOCK_TYPES: Dict[str, BlockType] = {}


def register(cls):
    """Class decorator: ``cls()`` becomes the description of blocks named ``cls.name``."""
    BLOCK_TYPES[cls.name] = cls()
    return cls


def block_type(name: str) -> BlockType:
    if name not in BLOCK_TYPES:
        raise ValueError(f"unknown block {name!r}; known: {sorted(BLOCK_TYPES)}")
    return BLOCK_TYPES[name]


def registrar(table: Dict[str, Any]):
    """A decorator by block name that files what it decorates in ``table`` (Paddle layers,
    TensorRT emitters); a name without a description fails at import, not at build time."""
    def by_name(block: str):
        block_type(block)

        def add(fn):
            table[block] = fn
            return fn
        return add
    return by_name


def as_pair(v) -> Tuple[int, ...]:
    """A torch size attribute (int or tuple) as a tuple; () when absent."""
    if isinstance(v, (list, tuple)):
        return tuple(int(x) for x in v)
    return (int(v), int(v)) if isinstance(v, (int, float)) else ()


@register
class ConvType(BlockType):
    """Conv2D + BN + SiLU; its one conv sits at the block's own name (key "")."""
    name, output_conv = "Conv", ""

    def layer_spec(self, args):
        c, k, s = args[0], args[1], args[2]
        return c, dict(kernel=k, stride=s, padding=args[3] if len(args) > 3 else k // 2)

    def resolve(self, r, c_in, w, net):
        L = r.spec
        r.convs[""] = w.conv(L.name, c_in[0], L.out_channels, L.kernel, L.stride, L.padding)
        return r.convs[""].c2


@register
class C3Type(BlockType):
    """cv1 -> bottlenecks (m.j.cv1 1x1, m.j.cv2 3x3, + input when shortcut); cv2 beside them;
    cv3 on the concat of both."""
    name, output_conv, repeated = "C3", "cv3", True

    def layer_spec(self, args):
        return args[0], dict(shortcut=args[1] if len(args) > 1 else True)

    def resolve(self, r, c_in, w, net):
        L = r.spec
        half = int(L.out_channels * 0.5)
        a = r.convs["cv1"] = w.conv(f"{L.name}.cv1", c_in[0], half)
        b = r.convs["cv2"] = w.conv(f"{L.name}.cv2", c_in[0], half)
        r.bottlenecks = w.repeats(L.name, L.repeats)
        c = a.c2
        for j in range(r.bottlenecks):
            m1 = r.convs[f"m.{j}.cv1"] = w.conv(f"{L.name}.m.{j}.cv1", c, c)
            m2 = r.convs[f"m.{j}.cv2"] = w.conv(f"{L.name}.m.{j}.cv2", m1.c2, c, 3)
            if L.shortcut and m2.c2 != c:
                raise WeightShapeError(
                    f"{m2.name}.conv.weight: a residual bottleneck must give back its "
                    f"{c} input channels, the weights give {m2.c2}")
            c = m2.c2
        r.convs["cv3"] = w.conv(f"{L.name}.cv3", c + b.c2, L.out_channels)
        return r.convs["cv3"].c2

    @staticmethod
    def adds(r, j: int) -> bool:
        """Bottleneck j adds its input back (ultralytics: shortcut and equal widths)."""
        return r.spec.shortcut and r.convs[f"m.{j}.cv1"].c1 == r.convs[f"m.{j}.cv2"].c2

    def residual_convs(self, r):
        return [f"m.{j}.{cv}" for j in range(r.bottlenecks) if self.adds(r, j) for cv in ("cv1", "cv2")]

    def check_ultralytics(self, r, attrs, fail):
        for j in range(r.bottlenecks):
            add = attrs(f".m.{j}").get("add")
            if add is not None and bool(add) != r.spec.shortcut:
                fail(f"{r.name}.m.{j}", f"residual add={add}, expected {r.spec.shortcut}")


@register
class SPPFType(BlockType):
    """cv1, three chained k x k max pools (stride 1), cv2 on the concat of the four."""
    name, output_conv = "SPPF", "cv2"

    def layer_spec(self, args):
        return args[0], dict(pool=args[1])

    def resolve(self, r, c_in, w, net):
        L = r.spec
        a = r.convs["cv1"] = w.conv(f"{L.name}.cv1", c_in[0], c_in[0] // 2)
        r.convs["cv2"] = w.conv(f"{L.name}.cv2", 4 * a.c2, L.out_channels)
        return r.convs["cv2"].c2

    def check_ultralytics(self, r, attrs, fail):
        k = as_pair(attrs(".m").get("kernel_size"))
        if k != (r.spec.pool, r.spec.pool):
            fail(r.name + ".m", f"max-pool kernel {k}, expected {r.spec.pool}")


@register
class UpsampleType(BlockType):
    """Nearest-neighbour resize by an integer scale."""
    name = "Upsample"

    def layer_spec(self, args):
        return 0, dict(scale=args[0])

    def resolve(self, r, c_in, w, net):
        return c_in[0]

    def check_ultralytics(self, r, attrs, fail):
        a = attrs("")
        if a.get("mode") != "nearest" or float(a.get("scale_factor") or 0) != float(r.spec.scale):
            fail(r.name, f"Upsample({a.get('scale_factor')}, {a.get('mode')!r}), "
                         f"expected nearest x{r.spec.scale}")


@register
class ConcatType(BlockType):
    """Its inputs stacked along the channels."""
    name = "Concat"

    def resolve(self, r, c_in, w, net):
        return sum(c_in)

    def check_ultralytics(self, r, attrs, fail):
        d = attrs("").get("d", 1)
        if d != 1:
            fail(r.name, f"concatenates along dim {d}, expected 1 (channels)")


@register
class DetectType(BlockType):
    """A 1x1 conv with bias per input level (``m.i``), na * (5 + nc) outputs each; emits no feature map."""
    name = "Detect"

    def resolve(self, r, c_in, w, net):
        no = net.na * net.no
        for i, c in enumerate(c_in):
            key = f"{r.name}.m.{i}.weight"
            got = w.shapes.get(key)   # absent: a new head (fine-tuning to another nc)
            want = (no, c, 1, 1)
            if got is not None and got != want:
                hint = ""
                if got[0] != no and got[0] % net.na == 0:
                    hint = f" (the weights are for nc={got[0] // net.na - 5}, the model has nc={net.nc})"
                raise WeightShapeError(f"{key}: expected shape {list(want)}, got {list(got)}{hint}")
            r.detect.append((c, no))
        return 0

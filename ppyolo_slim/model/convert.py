"""Ultralytics YOLOv5 checkpoints (``.pt``) to ``.pdparams``: names, shapes and layer checks.

``pt_reader`` reads the file without torch and without running code; this module checks the
module tree against our YOLOv5 layer list and renames ultralytics' state dict to ours, which
differs only in BN statistics.
"""
from __future__ import annotations

import collections
import os
import re
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .block_types import as_pair, block_type
from .channels import WeightShapeError, infer_nc, resolve
from .fold import bias_as_batchnorm
from .pt_reader import (ConvertError, Placeholder, attrs_of, class_name, is_module, load_torch_file,
                        module_tree, normalise_keys, pick_model)
from .spec import SCALES, STRIDES, expand, make_divisible, scaled_repeats
from .weights import CheckpointError, ModelMeta, save_weights


# ----------------------------------------------------------------------------- YOLOv5 specifics

_DROP = re.compile(r"(\.num_batches_tracked|\.anchors|\.anchor_grid|\.grid)$")
_BN_EPS = 1e-3   # ultralytics' initialize_weights sets it; our BatchNorm2D uses the same


def _multiples(shapes: Dict[str, tuple], yaml_d: Optional[dict]) -> Tuple[float, float, str]:
    if isinstance(yaml_d, dict) and "depth_multiple" in yaml_d and "width_multiple" in yaml_d:
        return float(yaml_d["depth_multiple"]), float(yaml_d["width_multiple"]), "yaml"
    c0 = shapes.get("model.0.conv.weight", (0,))[0]
    n2 = len({k.split(".")[3] for k in shapes if k.startswith("model.2.m.")})
    n4 = len({k.split(".")[3] for k in shapes if k.startswith("model.4.m.")})
    for gd, gw in SCALES.values():
        if (c0 == make_divisible(64 * gw) and n2 == scaled_repeats(3, gd)
                and n4 == scaled_repeats(6, gd)):
            return gd, gw, "shapes"
    return round(max(n2, 1) / 3, 2), round(c0 / 64, 4), "shapes (no standard scale matched)"


def _names(model: Any, nc: int, override: Optional[List[str]], src: str) -> List[str]:
    if override is not None:
        names = list(override)
    else:
        raw = attrs_of(model).get("names")
        if isinstance(raw, dict):
            if sorted(raw) != list(range(len(raw))):
                raise ConvertError(f"{src}: class names keyed {sorted(raw)[:5]}..., expected 0..n-1")
            names = [str(raw[i]) for i in range(len(raw))]
        elif isinstance(raw, (list, tuple)):
            names = [str(n) for n in raw]
        else:
            names = [f"class{i}" for i in range(nc)]
    if len(names) != nc:
        raise ConvertError(f"{src}: {len(names)} class names for a Detect head of nc={nc}")
    return names


def _anchors(state: Dict[str, np.ndarray], detect: Any, src: str) -> List[List[float]]:
    a = state.get("model.24.anchors")
    if a is None:
        raise ConvertError(f"{src}: model.24.anchors is missing; is this a YOLOv5 Detect head?")
    a = np.asarray(a, np.float32)
    if a.ndim != 3 or a.shape[0] != 3 or a.shape[2] != 2:
        raise ConvertError(f"{src}: model.24.anchors has shape {list(a.shape)}, expected [3, na, 2] "
                           f"(P6 models with 4 output levels are not supported)")
    stride = attrs_of(detect).get("stride")
    stride = np.asarray(STRIDES if stride is None else stride, np.float32).reshape(-1)
    if stride.tolist() != [float(s) for s in STRIDES]:
        raise ConvertError(f"{src}: Detect strides {stride.tolist()}, this model builds {list(STRIDES)}")
    # ultralytics keeps anchors divided by their level's stride; ModelMeta holds pixels
    px = a * stride[:, None, None]
    return [[float(v) for v in row.reshape(-1)] for row in px]


def _check_layers(modules: Dict[str, Placeholder], net, src: str) -> None:
    """Every top-level layer's class and inputs against the layer list, before any shape
    check, so a v5-era or P6 model is named as such rather than by a missing weight."""
    top = [k for k in modules if re.fullmatch(r"model\.\d+", k)]
    if len(top) != len(net.layers):
        raise ConvertError(f"{src}: model: {len(top)} layers, a YOLOv5 v6+ (P5) model has "
                           f"{len(net.layers)} (P6 models are not supported)")
    for L in net.layers:
        m = modules.get(L.name)
        if class_name(m) != L.block:
            raise ConvertError(
                f"{src}: {L.name}: is {getattr(m, '_pt_name', m)}, YOLOv5 v6+ has {L.block} here "
                f"(v5-era Focus/BottleneckCSP/SPP and segmentation heads are not supported)")
        f = attrs_of(m).get("f")
        if L.index > 0 and f is not None:
            srcs = tuple(L.index + s if s < 0 else s for s in ([f] if isinstance(f, int) else f))
            if srcs != L.src:
                raise ConvertError(f"{src}: {L.name}: takes input from {list(srcs)}, the YOLOv5 "
                                   f"layer list says {list(L.src)}")


def _check_modules(modules: Dict[str, Placeholder], resolved, src: str) -> Dict[str, float]:
    """Kernel, stride, padding and activation of every conv, pooling and upsampling against
    the layer list: shapes alone do not show a stride or a LeakyReLU. Returns BN eps by conv."""
    def fail(name, msg):
        raise ConvertError(f"{src}: {name}: {msg}")

    eps: Dict[str, float] = {}
    for r in resolved:
        block_type(r.spec.block).check_ultralytics(
            r, lambda path: attrs_of(modules.get(r.name + path)), fail)
        for cs in r.convs.values():
            eps[cs.name] = _check_conv(modules, cs, fail)
    return eps


def _check_conv(modules, cs, fail) -> float:
    m = modules.get(cs.name)
    if class_name(m) != "Conv":
        fail(cs.name, f"is {getattr(m, '_pt_name', m)}, expected models.common.Conv")
    conv, bn, act = (modules.get(f"{cs.name}.{c}") for c in ("conv", "bn", "act"))
    c = attrs_of(conv)
    want = dict(kernel_size=cs.k, stride=cs.s, padding=cs.p, dilation=1, groups=1)
    for key, w in want.items():
        got, w = as_pair(c.get(key, w)), as_pair(w)
        if got != w:
            fail(cs.name + ".conv", f"{key} {got}, YOLOv5 has {w}")
    if class_name(act) != "SiLU":
        fail(cs.name + ".act", f"activation {getattr(act, '_pt_name', act)}, this model uses SiLU")
    if bn is None:
        return _BN_EPS   # fused conv: no BN
    return float(attrs_of(bn).get("eps", _BN_EPS))


def to_paddle_state(state: Dict[str, np.ndarray], bn_eps: Optional[Dict[str, float]] = None
                    ) -> Tuple[Dict[str, np.ndarray], Dict[str, int]]:
    """Ultralytics names -> ours, float32. BN running stats are renamed; a BN whose eps is
    not 1e-3 gets it folded into its variance (exact); a fused conv (bias, no BN) gets an
    identity BN that carries its bias (exact)."""
    out: Dict[str, np.ndarray] = collections.OrderedDict()
    notes = {"dropped": 0, "eps_adjusted": 0, "unfused": 0}
    for k, v in state.items():
        if _DROP.search(k):
            notes["dropped"] += 1
            continue
        k = re.sub(r"\.running_mean$", "._mean", k)
        k = re.sub(r"\.running_var$", "._variance", k)
        out[k] = np.ascontiguousarray(v, dtype=np.float32)
    out, notes["unfused"] = bias_as_batchnorm(out)
    for name, e in (bn_eps or {}).items():
        key = name + ".bn._variance"
        if key in out and abs(e - _BN_EPS) > 1e-12:
            # x / sqrt(var + e) == x / sqrt((var + e - 1e-3) + 1e-3)
            out[key] = (out[key].astype(np.float64) + e - _BN_EPS).astype(np.float32)
            notes["eps_adjusted"] += 1
    return out, notes


def read_ultralytics(src: str, names: Optional[List[str]] = None, use: str = "auto",
                     img_size: int = 640):
    """(Paddle state dict, ModelMeta, report dict) for an ultralytics YOLOv5 checkpoint, checked
    by building our model from it (strict: every parameter, every shape)."""
    obj = load_torch_file(src)
    try:
        return _read(obj, src, names, use, img_size)
    except (AttributeError, TypeError, KeyError, IndexError) as e:   # odd structure, not a bug of ours
        raise ConvertError(f"{src}: unexpected checkpoint structure ({type(e).__name__}: {e})") from None


def _read(obj, src, names, use, img_size):
    from . import build_model
    model, where = pick_model(obj, use, src)
    yaml_d, detect, modules = None, None, None
    if is_module(model):
        a = model.attrs()
        if set(a.get("_modules") or {}) == {"module"}:      # DataParallel wrapper
            model = a["_modules"]["module"]
            a = model.attrs()
        if "model" in (a.get("_modules") or {}):
            state, modules = module_tree(model)
        else:                                               # the bare nn.Sequential
            state, modules = module_tree(model, "model.")
        yaml_d = a.get("yaml")
        detect = modules.get("model.24")
    else:
        state = normalise_keys(model)
    src_dtype = sorted({str(v.dtype) for k, v in state.items() if k.endswith(".weight")})
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    nc = infer_nc(shapes)
    if nc is None:
        raise ConvertError(f"{src}: no Detect output conv (model.24.m.0.weight) found; not an "
                           f"anchor-based YOLOv5 detection checkpoint (keys start {list(state)[:3]}). "
                           f"Anchor-free YOLOv5u/YOLOv8 files of the ultralytics package differ")
    if attrs_of(detect).get("nc") not in (None, nc):
        raise ConvertError(f"{src}: Detect says nc={attrs_of(detect)['nc']} but its convs are for nc={nc}")
    anchors = _anchors(state, detect, src)
    gd, gw, mult_from = _multiples(shapes, yaml_d)
    net = expand(nc, gd, gw, anchors)
    if modules is not None:
        _check_layers(modules, net, src)
    try:
        resolved = resolve(net, shapes)
    except WeightShapeError as e:
        raise WeightShapeError(f"{src}: {e}") from None
    bn_eps = _check_modules(modules, resolved, src) if modules is not None else None
    paddle_state, notes = to_paddle_state(state, bn_eps)
    meta = ModelMeta(nc=nc, names=_names(model, nc, names, src), depth_multiple=gd, width_multiple=gw,
                     anchors=anchors, img_size=img_size,
                     made_by={"stage": "convert", "source": os.path.abspath(src), "from": where})
    try:
        build_model(meta, paddle_state)
    except (WeightShapeError, CheckpointError) as e:
        raise type(e)(f"{src}: {e}") from None
    report = dict(source=src, used=where, source_dtype=src_dtype, nc=nc, multiples_from=mult_from,
                  tensors=len(paddle_state), values=int(sum(v.size for v in paddle_state.values())),
                  **notes)
    return paddle_state, meta, report


def convert_ultralytics(src: str, dst: str, names: Optional[List[str]] = None, use: str = "auto",
                        img_size: int = 640) -> Dict[str, Any]:
    """Convert ``src`` (ultralytics YOLOv5 ``.pt``) to ``dst`` (``.pdparams``); returns a report."""
    state, meta, report = read_ultralytics(src, names, use, img_size)
    save_weights(dst, state, meta)
    report["destination"] = dst
    return report


def parse_names(arg: Optional[str]) -> Optional[List[str]]:
    """``--names``: a comma list, a .txt file (one per line), or a YAML file with ``names``
    (list or {index: name}, as ultralytics data files have)."""
    if arg is None:
        return None
    if os.path.isfile(arg):
        with open(arg, encoding="utf-8") as f:
            text = f.read()
        if arg.endswith((".yaml", ".yml")):
            import yaml
            d = yaml.safe_load(text)
            raw = d.get("names") if isinstance(d, dict) else None
            if isinstance(raw, dict):
                return [str(raw[i]) for i in sorted(raw)]
            if isinstance(raw, list):
                return [str(n) for n in raw]
            raise ConvertError(f"{arg}: no 'names' list or mapping in this YAML file")
        return [ln.strip() for ln in text.splitlines() if ln.strip()]
    return [n.strip() for n in arg.split(",") if n.strip()]

"""YAML configs with ``_BASE_`` inheritance and ``-o key=value`` overrides.

``DEFAULTS`` is the schema: a key it does not have is an error that names the key and
the file (or the ``-o`` flag) it came from; so is a value of the wrong type.
"""
from __future__ import annotations

import copy
import difflib
import math
import os
from typing import Any, Dict, Iterable, Optional

import yaml


class ConfigError(ValueError):
    pass


# Sections are dicts. A section listed in FREE_FORM may hold any keys.
DEFAULTS: Dict[str, Any] = {
    "model": {
        "scale": "n",              # n/s/m/l/x, or give the multiples below
        "depth_multiple": None,
        "width_multiple": None,
        "anchors": None,           # None: the YOLOv5 defaults (P3/P4/P5)
    },
    "data": "shapes",              # a data YAML (ultralytics), a COCO json spec, or "shapes" (embedded set)
    "img_size": 320,
    "epochs": 30,
    "batch_size": 16,
    "nominal_batch_size": 64,      # gradient accumulation up to this batch, as ultralytics
    "workers": 2,
    "output_dir": "output/train",
    "weights": None,               # initial weights (.pdparams); channels come from them
    "seed": 0,
    "device": "auto",              # auto, cpu, gpu, gpu:N
    "threads": 0,                  # CPU math threads per process; 0: all cores (import paddle sets 1)
    "amp": False,                  # GPU only
    "cache_images": False,
    "optimizer": {
        "type": "SGD",             # SGD (momentum, nesterov), Adam, AdamW
        "lr0": 0.01,
        "lrf": 0.01,               # final LR = lr0 * lrf
        "momentum": 0.937,
        "weight_decay": 0.0005,
        "nesterov": True,
    },
    "schedule": {
        "type": "cosine",          # cosine or linear
        "warmup_epochs": 3.0,
        "warmup_min_iters": 100,   # ultralytics' floor on warmup steps; lower it for short CPU runs
        "warmup_momentum": 0.8,
        "warmup_bias_lr": 0.1,
    },
    "loss": {
        "box": 0.05,
        "obj": 1.0,
        "cls": 0.5,
        "cls_pw": 1.0,
        "obj_pw": 1.0,
        "anchor_t": 4.0,
        "label_smoothing": 0.0,
        "balance": [4.0, 1.0, 0.4],
    },
    "augment": {
        "mosaic": 1.0,             # probability
        "hsv_h": 0.015,
        "hsv_s": 0.7,
        "hsv_v": 0.4,
        "degrees": 0.0,
        "translate": 0.1,
        "scale": 0.5,
        "shear": 0.0,
        "fliplr": 0.5,
        "flipud": 0.0,
    },
    "ema": {"enabled": True, "decay": 0.9999, "tau": 2000},
    "eval": {
        "interval": 1,             # epochs between evaluations
        "conf_thres": 0.001,
        "iou_thres": 0.6,
        "max_det": 300,
        "batch_size": 16,
    },
    "sparsity": {
        "enabled": False,
        "method": "subgradient",   # subgradient, proximal or gradual (slim/sparsity.py)
        "rate": 1.0e-4,            # s: subgradient s*sign(gamma); proximal: |gamma| shrinks lr_t*s a step
        "schedule": "constant",    # constant, linear (to final_rate), cosine (to final_rate)
        "final_rate": 1.0e-5,
        "exclude_detect_inputs": True,   # the BNs feeding Detect keep no penalty
        "bottleneck_rate": None,   # rate for BNs inside residual bottlenecks (None: same rate)
        "flop_weighted": False,    # weight each BN's penalty (gradual: its ranking) by a channel's FLOPs
        "target_ratio": None,      # gradual: share of channels held at zero at the end (None: prune.ratio)
        "ramp": 0.6,               # gradual: share of the epochs over which that share grows (cubic)
        "interval": 5,             # gradual: optimizer steps between re-selections
        "selection": "global",     # gradual: global (one threshold, as the cut) or uniform (the share per layer)
        "steps": None,             # gradual, progressive: shares held in turn, e.g. [0.5, 0.75, 0.875]
    },
    "distill": {
        "enabled": False,
        "teacher": None,           # .pdparams of the teacher (the unpruned model); frozen
        "weight": 1.0,             # output loss weight (teacher-objectness-weighted, as DistillYOLOv3Loss)
    },
    "log": {
        "visualdl": True,
        "interval": 10,            # steps between scalar logs
        "images": 4,               # val images drawn per eval
    },
    "prune": {
        "ratio": 0.875,            # share of prunable channels removed (0.875: 8x fewer)
        "threshold": None,         # or an |gamma| threshold
        "min_channels": 8,         # floor per layer, never zero
        "round_to": 1,             # round kept counts up to a multiple (8 for tensor cores)
        "compensate": True,        # fold removed channels' constant SiLU(beta) into consumers
        "criterion": "bn_scale",   # bn_scale, l1_norm, fpgm
    },
    "export": {
        "opset": 13,
        "dynamic_batch": False,
        "nms": False,
    },
    "quant": {                     # INT8 (ppyolo_slim/slim/quant.py, tools/quant.py)
        "qat": False,              # the trainer wraps the model in PaddleSlim's QAT (tools/quant.py --method qat)
        "algo": "mse",             # PTQ calibration: KL, hist, avg, mse, abs_max (mse measured best: benchmarks/README.md)
        "hist_percent": 0.9999,    # the hist algorithm's percentile
        "calib_images": 64,        # training images for PTQ calibration
        "calib_batch": 8,
        "check_images": 16,        # val images of the onnxruntime vs Paddle INT8 check
        "float_layers": [],        # convs kept float: structured names (model.2.cv1) or 'detect'
        "moving_rate": 0.9,        # QAT activation scales: moving average rate
    },
    "pipeline": {
        "scale": 1.0,              # multiplies epochs of every stage, for real runs
        "finetune_epochs": 10,
        "dense_epochs": None,      # None: 0 if the initial weights know the data's classes, else 30
        "quant": "none",           # none, ptq or qat: INT8 of the fine-tuned model (summary: models.int8)
    },
}
FREE_FORM: set = set()
# Keys whose default is None (meaning "not set"): the type a value must have when it is set.
OPTIONAL: Dict[str, type] = {
    "model.depth_multiple": float, "model.width_multiple": float, "model.anchors": list,
    "weights": str, "prune.threshold": float, "sparsity.bottleneck_rate": float,
    "sparsity.target_ratio": float, "distill.teacher": str, "pipeline.dense_epochs": int,
    "sparsity.steps": list,
}

# What a value must be beyond its type: (test, what it must be). Checked where the value is
# given, so the error names the file or -o flag; a NaN or infinity is never accepted.
def _between(lo, hi, lo_open=False, hi_open=False):
    def ok(v):
        return (v > lo if lo_open else v >= lo) and (hi is None or (v < hi if hi_open else v <= hi))
    what = f"{'>' if lo_open else '>='} {lo}" + ("" if hi is None else f" and {'<' if hi_open else '<='} {hi}")
    return ok, what


_AT_LEAST_0, _AT_LEAST_1, _ABOVE_0 = _between(0, None), _between(1, None), _between(0, None, lo_open=True)
_SHARE, _BELOW_1 = _between(0, 1), _between(0, 1, hi_open=True)
_MULTIPLE_OF_32 = (lambda v: v >= 32 and v % 32 == 0, "a multiple of 32 (the largest stride), at least 32")


def _one_of(*names):
    return (lambda v: v in names, "one of " + ", ".join(names))


RANGES: Dict[str, tuple] = {
    "model.scale": _one_of("n", "s", "m", "l", "x"),
    "model.depth_multiple": _ABOVE_0, "model.width_multiple": _ABOVE_0,
    "model.anchors": (lambda v: len(v) == 3 and len({len(r) for r in v}) == 1 and len(v[0]) % 2 == 0
                      and all(x > 0 for r in v for x in r),
                      "three rows (P3, P4, P5) of the same number of w,h pairs > 0"),
    "img_size": _MULTIPLE_OF_32, "epochs": _AT_LEAST_1, "batch_size": _AT_LEAST_1,
    "nominal_batch_size": _AT_LEAST_1, "workers": _AT_LEAST_0, "threads": _AT_LEAST_0,
    "device": (lambda v: v in ("auto", "cpu", "gpu") or (v.startswith("gpu:") and v[4:].isdigit()),
               "auto, cpu, gpu or gpu:N"),
    "optimizer.type": _one_of("SGD", "Adam", "AdamW"),
    "optimizer.lr0": _ABOVE_0, "optimizer.lrf": _between(0, 1, lo_open=True), "optimizer.momentum": _BELOW_1,
    "optimizer.weight_decay": _AT_LEAST_0,
    "schedule.type": _one_of("cosine", "linear"), "schedule.warmup_epochs": _AT_LEAST_0,
    "schedule.warmup_min_iters": _AT_LEAST_0, "schedule.warmup_momentum": _SHARE,
    "schedule.warmup_bias_lr": _AT_LEAST_0,
    "loss.box": _AT_LEAST_0, "loss.obj": _AT_LEAST_0, "loss.cls": _AT_LEAST_0, "loss.cls_pw": _ABOVE_0,
    "loss.obj_pw": _ABOVE_0, "loss.anchor_t": _between(1, None, lo_open=True), "loss.label_smoothing": _BELOW_1,
    "loss.balance": (lambda v: len(v) == 3 and all(x >= 0 for x in v), "three numbers >= 0 (P3, P4, P5)"),
    "augment.mosaic": _SHARE, "augment.hsv_h": _SHARE, "augment.hsv_s": _SHARE, "augment.hsv_v": _SHARE,
    "augment.degrees": _between(0, 180), "augment.translate": _BELOW_1, "augment.scale": _BELOW_1,
    "augment.shear": _between(0, 90, hi_open=True), "augment.fliplr": _SHARE, "augment.flipud": _SHARE,
    "ema.decay": _between(0, 1, lo_open=True, hi_open=True), "ema.tau": _ABOVE_0,
    "eval.interval": _AT_LEAST_1, "eval.conf_thres": _SHARE, "eval.iou_thres": _SHARE,
    "eval.max_det": _AT_LEAST_1, "eval.batch_size": _AT_LEAST_1,
    "sparsity.rate": _AT_LEAST_0, "sparsity.schedule": _one_of("constant", "linear", "cosine"),
    "sparsity.final_rate": _AT_LEAST_0, "sparsity.bottleneck_rate": _AT_LEAST_0,
    "sparsity.method": _one_of("subgradient", "proximal", "gradual"), "sparsity.target_ratio": _BELOW_1,
    "sparsity.ramp": _SHARE, "sparsity.interval": _AT_LEAST_1,
    "sparsity.selection": _one_of("global", "uniform"),
    "sparsity.steps": (lambda v: len(v) > 0 and all(0 <= x < 1 for x in v), "shares in [0, 1)"),
    "distill.weight": _AT_LEAST_0, "distill.teacher": (lambda v: bool(v.strip()), "a path to a .pdparams file"),
    "log.interval": _AT_LEAST_1, "log.images": _AT_LEAST_0,
    "prune.ratio": _BELOW_1, "prune.threshold": _AT_LEAST_0, "prune.min_channels": _AT_LEAST_1,
    "prune.round_to": _AT_LEAST_1, "prune.criterion": _one_of("bn_scale", "bn_scale_per_flop", "l1_norm", "fpgm"),
    "export.opset": _between(7, None),
    "pipeline.scale": _ABOVE_0, "pipeline.finetune_epochs": _AT_LEAST_1,
    "pipeline.dense_epochs": _AT_LEAST_0,
    "quant.algo": _one_of("KL", "hist", "avg", "mse", "abs_max"), "quant.hist_percent": _between(0, 1, lo_open=True),
    "quant.calib_images": _AT_LEAST_1, "quant.calib_batch": _AT_LEAST_1, "quant.check_images": _AT_LEAST_1,
    "quant.float_layers": (lambda v: all(isinstance(x, str) and x for x in v), "a list of layer names"),
    "quant.moving_rate": _between(0, 1, lo_open=True, hi_open=True),
    "pipeline.quant": _one_of("none", "ptq", "qat"),
}


def _finite(v: Any) -> bool:
    if isinstance(v, float):
        return math.isfinite(v)
    return not isinstance(v, list) or all(_finite(x) for x in v)


def _type_ok(v: Any, want: type) -> bool:
    if isinstance(v, bool):
        return want is bool
    if want is float:
        return isinstance(v, (int, float))
    return isinstance(v, want)


def _items_ok(v: list, default: Any, path: str) -> bool:
    """Lists: numbers where the default holds numbers; anchors: rows of numbers."""
    if path == "model.anchors":
        return all(isinstance(r, list) and r and all(_type_ok(x, float) for x in r) for r in v)
    if isinstance(default, list) and default and all(_type_ok(x, float) for x in default):
        return all(_type_ok(x, float) for x in v)
    return True


def _dotted_keys(schema: Dict[str, Any], prefix: str = "") -> Dict[str, str]:
    """last part -> full dotted key, for every key of the schema (the first one wins)."""
    out: Dict[str, str] = {}
    for k, v in schema.items():
        out.setdefault(k, prefix + k)
        if isinstance(v, dict) and prefix + k not in FREE_FORM:
            for last, full in _dotted_keys(v, prefix + k + ".").items():
                out.setdefault(last, full)
    return out


def _nearest_key(key: str, schema: Dict[str, Any], prefix: str) -> Optional[str]:
    """The known key a typo most likely meant: a sibling first (epoch -> epochs), else a key of
    the same name elsewhere (lr0 -> optimizer.lr0)."""
    near = difflib.get_close_matches(key, [str(k) for k in schema], n=1, cutoff=0.75)
    if near:
        return prefix + near[0]
    everywhere = _dotted_keys(DEFAULTS)
    near = difflib.get_close_matches(key, list(everywhere), n=1, cutoff=0.8)
    return everywhere[near[0]] if near and everywhere[near[0]] != prefix + key else None


def _check(cfg: Dict[str, Any], schema: Dict[str, Any], source: str, prefix: str = "") -> None:
    for k, v in cfg.items():
        path = f"{prefix}{k}"
        if k == "_BASE_":
            continue
        if k not in schema:
            hint = _nearest_key(str(k), schema, prefix)
            raise ConfigError(f"{source}: unknown config key '{path}'"
                              + (f"; did you mean '{hint}'?" if hint else "")
                              + (f"; known keys here: {', '.join(sorted(schema))}" if schema else ""))
        d = schema[k]
        if isinstance(d, dict) and path not in FREE_FORM:
            if not isinstance(v, dict):
                raise ConfigError(f"{source}: '{path}' must be a mapping of keys, got {v!r}")
            _check(v, d, source, path + ".")
        else:
            want = type(d) if d is not None else OPTIONAL.get(path)
            if want is None or (v is None and d is None):
                continue
            if v is None:
                raise ConfigError(f"{source}: '{path}' must be {want.__name__}, got null")
            if not _type_ok(v, want) or (want is list and not _items_ok(v, d, path)):
                what = "a list of numbers" if want is list else want.__name__
                if path == "model.anchors":
                    what = "a list of rows of numbers (w,h pairs in pixels)"
                raise ConfigError(f"{source}: '{path}' must be {what}, got {v!r}")
            if not _finite(v):
                what = "finite numbers" if isinstance(v, list) else "a finite number"
                raise ConfigError(f"{source}: '{path}' must be {what}, got {v!r}")
            ok, what = RANGES.get(path, (None, None))
            if ok is not None and not ok(v):
                raise ConfigError(f"{source}: '{path}' must be {what}, got {v!r}")


def _merge(base: Dict[str, Any], over: Dict[str, Any]) -> Dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if k == "_BASE_":
            continue
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _read_yaml(path: str) -> Dict[str, Any]:
    try:
        with open(path, "r", encoding="utf-8") as f:
            d = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: a config must be a mapping, got {type(d).__name__}")
    return d


# keys that did nothing and were removed; the config.yml saved with older runs still holds them
RETIRED = ("resume",)

# the checkout: ppyolo_slim/, configs/ and deploy/ sit in it (realpath: a symlinked
# ppyolo_slim still finds its checkout)
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))


def _without_retired(d: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in d.items() if k not in RETIRED}


def resolve_config_path(path: str) -> str:
    """``path`` if it exists; a relative path that does not exist from the current folder but
    does from the repo root (``-c configs/sparse.yml`` run from elsewhere) resolves there."""
    if os.path.isabs(path) or os.path.exists(path):
        return path
    in_repo = os.path.join(REPO_ROOT, path)
    if os.path.exists(in_repo):
        return in_repo
    raise ConfigError(f"{path}: config file not found (looked in {os.getcwd()} and in {REPO_ROOT})")


def _load_file(path: str, seen: tuple = ()) -> Dict[str, Any]:
    path = os.path.abspath(path)
    if path in seen:
        raise ConfigError(f"{path}: _BASE_ cycle through {' -> '.join(seen)}")
    d = _without_retired(_read_yaml(path))
    _check(d, DEFAULTS, path)
    bases = d.get("_BASE_", [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: _BASE_ must be a file name or a list of them")
    merged: Dict[str, Any] = {}
    for b in bases:
        merged = _merge(merged, _load_file(os.path.join(os.path.dirname(path), b), seen + (path,)))
    return _merge(merged, d)


def parse_override(item: str) -> Dict[str, Any]:
    """'optimizer.lr0=0.001' -> {'optimizer': {'lr0': 0.001}} (value parsed as YAML)."""
    if "=" not in item:
        raise ConfigError(f"-o {item}: expected key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise ConfigError(f"-o {item}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"-o {item}: value is not valid YAML ({e})") from None
    out: Dict[str, Any] = {}
    cur = out
    parts = key.split(".")
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value
    return out


class Config(dict):
    """A dict with attribute access (cfg.optimizer.lr0) and where it came from."""

    def __getattr__(self, k):
        try:
            v = self[k]
        except KeyError:
            raise AttributeError(k) from None
        return Config(v) if isinstance(v, dict) and not isinstance(v, Config) else v

    def __setattr__(self, k, v):
        self[k] = v

    def to_dict(self) -> Dict[str, Any]:
        return copy.deepcopy(dict(self))


def load_config(path: Optional[str] = None, overrides: Iterable[str] = ()) -> Config:
    """DEFAULTS <- path (with its _BASE_ chain) <- each ``-o key=value``."""
    cfg = copy.deepcopy(DEFAULTS)
    if path:
        path = resolve_config_path(path)
        cfg = _merge(cfg, _load_file(path))
    c = Config(_resolve_shipped(_apply_overrides(cfg, overrides)))
    c["_source"] = os.path.abspath(path) if path else None
    return c


def _resolve_shipped(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """``weights`` and ``distill.teacher`` that name a file shipped in the repo (``weights/...``)
    resolve from the repo root when run from another folder, as config paths do."""
    def fix(p):
        if isinstance(p, str) and not os.path.isabs(p) and not os.path.exists(p) \
                and os.path.isfile(os.path.join(REPO_ROOT, p)):
            return os.path.join(REPO_ROOT, p)
        return p
    cfg["weights"] = fix(cfg.get("weights"))
    if isinstance(cfg.get("distill"), dict):
        cfg["distill"]["teacher"] = fix(cfg["distill"].get("teacher"))
    return cfg


def _apply_overrides(cfg: Dict[str, Any], overrides: Iterable[str]) -> Dict[str, Any]:
    for item in overrides or ():
        o = parse_override(item)
        if "_BASE_" in o:
            raise ConfigError(f"-o {item}: _BASE_ works inside a config file only; give the file with -c")
        _check(o, DEFAULTS, f"-o {item}")
        cfg = _merge(cfg, o)
    return cfg


def dump_config(cfg: Dict[str, Any], path: str) -> None:
    from .utils.io import atomic_write_bytes
    d = {k: v for k, v in cfg.items() if not k.startswith("_")}
    atomic_write_bytes(path, yaml.safe_dump(d, sort_keys=False).encode())


def config_from_dict(d: Dict[str, Any], source: str, overrides: Iterable[str] = ()) -> Config:
    """A config saved with a run (a plain dict), checked like a file, then ``-o`` overrides."""
    d = _without_retired({k: v for k, v in d.items() if not k.startswith("_")})
    _check(d, DEFAULTS, source)
    c = Config(_resolve_shipped(_apply_overrides(_merge(copy.deepcopy(DEFAULTS), d), overrides)))
    c["_source"] = source
    return c

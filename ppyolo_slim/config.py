"""YAML configs with ``_BASE_`` inheritance and ``-o key=value`` overrides.

``DEFAULTS`` is the schema: a key it does not have is an error that names the key and
the file (or the ``-o`` flag) it came from; so is a value of the wrong type or range.
The sections of the slimming components and of evaluation are declared next to their code
(``settings.py``: ``PruneConfig``, ``SparsityConfig``, ...); ``DEFAULTS`` composes them with
the keys declared here, which the trainer and the tools read as a dict.
"""
from __future__ import annotations

import copy
import difflib
import os
from typing import Any, Dict, Iterable, Optional

import yaml

from . import settings
from .settings import ABOVE_0, AT_LEAST_0, AT_LEAST_1, BELOW_1, SHARE, between, one_of


class ConfigError(ValueError):
    pass


# Sections are dicts. A section listed in FREE_FORM may hold any keys. SECTION: a section
# declared by its component (settings.SECTIONS), placed here in the saved config.yml.
SECTION = object()
_CORE: Dict[str, Any] = {
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
    "cpu_ops": "auto",             # CPU training: SiLU/conv custom ops that build here (engine/cpu_ops); none
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
    "eval": SECTION,
    "sparsity": SECTION,
    "distill": SECTION,
    "log": {
        "visualdl": True,
        "interval": 10,            # steps between scalar logs
        "images": 4,               # val images drawn per eval
    },
    "prune": SECTION,
    "export": {
        "opset": 13,
        "dynamic_batch": False,
        "nms": False,
    },
    "quant": SECTION,
    "pipeline": {
        "scale": 1.0,              # multiplies epochs of every stage, for real runs
        "finetune_epochs": 10,
        "dense_epochs": None,      # None: 0 if the initial weights know the data's classes, else 30
        "quant": "none",           # none, ptq or qat: INT8 of the fine-tuned model (summary: models.int8)
    },
}
FREE_FORM: set = set()
# Keys whose default is None (meaning "not set"): the type a value must have when it is set.
_CORE_OPTIONAL: Dict[str, type] = {
    "model.depth_multiple": float, "model.width_multiple": float, "model.anchors": list,
    "weights": str, "pipeline.dense_epochs": int,
}

# What a value must be beyond its type: (test, what it must be). Checked where the value is
# given, so the error names the file or -o flag; a NaN or infinity is never accepted.
_MULTIPLE_OF_32 = (lambda v: v >= 32 and v % 32 == 0, "a multiple of 32 (the largest stride), at least 32")

_CORE_RANGES: Dict[str, tuple] = {
    "model.scale": one_of("n", "s", "m", "l", "x"),
    "model.depth_multiple": ABOVE_0, "model.width_multiple": ABOVE_0,
    "model.anchors": (lambda v: len(v) == 3 and len({len(r) for r in v}) == 1 and len(v[0]) % 2 == 0
                      and all(x > 0 for r in v for x in r),
                      "three rows (P3, P4, P5) of the same number of w,h pairs > 0"),
    "img_size": _MULTIPLE_OF_32, "epochs": AT_LEAST_1, "batch_size": AT_LEAST_1,
    "nominal_batch_size": AT_LEAST_1, "workers": AT_LEAST_0, "threads": AT_LEAST_0,
    "cpu_ops": one_of("auto", "none"),
    "device": (lambda v: v in ("auto", "cpu", "gpu") or (v.startswith("gpu:") and v[4:].isdigit()),
               "auto, cpu, gpu or gpu:N"),
    "optimizer.type": one_of("SGD", "Adam", "AdamW"),
    "optimizer.lr0": ABOVE_0, "optimizer.lrf": between(0, 1, lo_open=True), "optimizer.momentum": BELOW_1,
    "optimizer.weight_decay": AT_LEAST_0,
    "schedule.type": one_of("cosine", "linear"), "schedule.warmup_epochs": AT_LEAST_0,
    "schedule.warmup_min_iters": AT_LEAST_0, "schedule.warmup_momentum": SHARE,
    "schedule.warmup_bias_lr": AT_LEAST_0,
    "loss.box": AT_LEAST_0, "loss.obj": AT_LEAST_0, "loss.cls": AT_LEAST_0, "loss.cls_pw": ABOVE_0,
    "loss.obj_pw": ABOVE_0, "loss.anchor_t": between(1, None, lo_open=True), "loss.label_smoothing": BELOW_1,
    "loss.balance": (lambda v: len(v) == 3 and all(x >= 0 for x in v), "three numbers >= 0 (P3, P4, P5)"),
    "augment.mosaic": SHARE, "augment.hsv_h": SHARE, "augment.hsv_s": SHARE, "augment.hsv_v": SHARE,
    "augment.degrees": between(0, 180), "augment.translate": BELOW_1, "augment.scale": BELOW_1,
    "augment.shear": between(0, 90, hi_open=True), "augment.fliplr": SHARE, "augment.flipud": SHARE,
    "ema.decay": between(0, 1, lo_open=True, hi_open=True), "ema.tau": ABOVE_0,
    "log.interval": AT_LEAST_1, "log.images": AT_LEAST_0,
    "export.opset": between(7, None),
    "pipeline.scale": ABOVE_0, "pipeline.finetune_epochs": AT_LEAST_1,
    "pipeline.dense_epochs": AT_LEAST_0,
    "pipeline.quant": one_of("none", "ptq", "qat"),
}
# the anchors are rows of numbers, not numbers
_ANCHOR_ROWS = (lambda v: all(isinstance(r, list) and r and all(isinstance(x, (int, float))
                                                                  and not isinstance(x, bool) for x in r) for r in v),
                "a list of rows of numbers (w,h pairs in pixels)")

# composed from the above and the registered sections (_compose); the same objects stay
# in place, so ``from config import DEFAULTS`` sees a section registered later too
DEFAULTS: Dict[str, Any] = {}
OPTIONAL: Dict[str, type] = {}
RANGES: Dict[str, tuple] = {}
_composed_from: tuple = ()


def _compose() -> None:
    """DEFAULTS, OPTIONAL and RANGES from the keys above and the registered sections (again
    whenever the registry changed); a section no key above places comes last."""
    global _composed_from
    sections = settings.load_sections()
    if tuple(sections.items()) == _composed_from:
        return
    placed = {k: (None if v is SECTION else v) for k, v in _CORE.items()}
    missing = [k for k, v in _CORE.items() if v is SECTION and k not in sections]
    if missing:
        raise RuntimeError(f"config sections {missing} are registered by no module of settings.HOMES")
    defaults, optional, ranges = {}, dict(_CORE_OPTIONAL), dict(_CORE_RANGES)
    for k in list(placed) + [n for n in sections if n not in placed]:
        if k in sections:
            defaults[k] = sections[k].defaults()
            for key, (check, kind) in sections[k].rules().items():
                if kind is not None:
                    optional[f"{k}.{key}"] = kind
                if check is not None:
                    ranges[f"{k}.{key}"] = check
        else:
            defaults[k] = copy.deepcopy(placed[k])
    for target, new in ((DEFAULTS, defaults), (OPTIONAL, optional), (RANGES, ranges)):
        target.clear()
        target.update(new)
    _composed_from = tuple(sections.items())


_compose()


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
            problem = settings.value_problem(path, v, d, OPTIONAL.get(path), RANGES.get(path),
                                             _ANCHOR_ROWS if path == "model.anchors" else None)
            if problem:
                raise ConfigError(f"{source}: {problem}")


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


def override(key: str, value: Any) -> str:
    """``key=value`` for ``-o``, the value written as YAML so it reads back as given (a tool's
    flag ``--threshold 1e-5`` is the float 1e-05, a path ``123`` the string '123')."""
    text = yaml.safe_dump(value, default_flow_style=True, width=float("inf")).strip()
    return f"{key}={text[:-3].strip() if text.endswith('...') else text}"


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
    _compose()
    overrides = list(overrides or ())
    cfg = copy.deepcopy(DEFAULTS)
    if path:
        path = resolve_config_path(path)
        cfg = _merge(cfg, _load_file(path))
    c = Config(_resolve_shipped(_apply_overrides(cfg, overrides)))
    c["_source"] = os.path.abspath(path) if path else None
    return _check_sections(c, " ".join(([path] if path else []) + [f"-o {o}" for o in overrides])
                           or "defaults")


def _check_sections(cfg: Config, source: str) -> Config:
    """Each registered section, as composed, checks its rules across keys (every value was
    checked where it was given)."""
    for cls in settings.SECTIONS.values():
        try:
            cls.of(cfg)
        except settings.SettingError as e:
            raise ConfigError(f"{source}: {e}") from None
    return cfg


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
    _compose()
    overrides = list(overrides or ())
    d = _without_retired({k: v for k, v in d.items() if not k.startswith("_")})
    _check(d, DEFAULTS, source)
    c = Config(_resolve_shipped(_apply_overrides(_merge(copy.deepcopy(DEFAULTS), d), overrides)))
    c["_source"] = source
    return _check_sections(c, " ".join([source] + [f"-o {o}" for o in overrides]))

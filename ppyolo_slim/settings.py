"""Typed config sections, declared next to the component that uses them.

A component declares its section as a dataclass whose fields are the keys, with their
defaults and what a value must be, and registers it (``@section("prune")``). The class is
the schema, as PaddleDetection's ``@register`` makes a constructor the schema: ``config.py``
composes the registered sections into its ``DEFAULTS``, checks every file and ``-o`` value
against the fields, and the component reads its settings typed (``PruneConfig.of(cfg)``).

The modules in ``HOMES`` declare the sections; ``load_sections`` imports them by name, as
``engine/callbacks.py`` loads its plugins, so ``config.py`` (which ``engine/`` uses) never
imports ``slim/``. They must import without paddle: loading a config does not need it.
"""
from __future__ import annotations

import copy
import dataclasses
import importlib
import math
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

# modules whose import registers a section, in no particular order (config.py places them)
HOMES = ["ppyolo_slim.engine.evaluate", "ppyolo_slim.slim.sparsity_config",
         "ppyolo_slim.slim.distill_config", "ppyolo_slim.slim.selection",
         "ppyolo_slim.slim.quant_config"]
SECTIONS: Dict[str, type] = {}

Check = Tuple[Callable[[Any], bool], Any]      # (test, what a value must be: text, or a callable giving it)


class SettingError(ValueError):
    pass


# ----------------------------------------------------------------------------- value rules

def between(lo, hi, lo_open=False, hi_open=False) -> Check:
    def ok(v):
        return (v > lo if lo_open else v >= lo) and (hi is None or (v < hi if hi_open else v <= hi))
    what = f"{'>' if lo_open else '>='} {lo}" + ("" if hi is None else f" and {'<' if hi_open else '<='} {hi}")
    return ok, what


def one_of(*names) -> Check:
    return (lambda v: v in names, "one of " + ", ".join(names))


AT_LEAST_0, AT_LEAST_1, ABOVE_0 = between(0, None), between(1, None), between(0, None, lo_open=True)
SHARE, BELOW_1 = between(0, 1), between(0, 1, hi_open=True)


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


def _numbers_ok(v: list, default: Any) -> bool:
    """Lists hold numbers where the default holds numbers."""
    if isinstance(default, list) and default and all(_type_ok(x, float) for x in default):
        return all(_type_ok(x, float) for x in v)
    return True


def value_problem(path: str, v: Any, default: Any, kind: Optional[type], check: Optional[Check],
                  items: Optional[Tuple[Callable[[list], bool], str]] = None) -> Optional[str]:
    """What is wrong with ``v`` for the key ``path`` (None: nothing). ``kind``: the type a value
    must have when the default is None (not set); ``items``: a list's own rule for its items."""
    want = type(default) if default is not None else kind
    if want is None or (v is None and default is None):
        return None
    if v is None:
        return f"'{path}' must be {want.__name__}, got null"
    items_ok = items[0] if items else (lambda x: _numbers_ok(x, default))
    if not _type_ok(v, want) or (want is list and not items_ok(v)):
        what = (items[1] if items else "a list of numbers") if want is list else want.__name__
        return f"'{path}' must be {what}, got {v!r}"
    if not _finite(v):
        what = "finite numbers" if isinstance(v, list) else "a finite number"
        return f"'{path}' must be {what}, got {v!r}"
    if check is not None and not check[0](v):
        what = check[1]() if callable(check[1]) else check[1]    # callable: a registry's names now
        return f"'{path}' must be {what}, got {v!r}"
    return None


# ----------------------------------------------------------------------------- sections

def setting(default: Any, check: Optional[Check] = None, kind: Optional[type] = None) -> Any:
    """A section field: its default, what a value must be, and (default None: not set) the
    type a value must have when it is set."""
    meta = {"check": check, "kind": kind}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


class Section:
    """Base of a registered section: ``name`` is its key in the config."""
    name = ""

    def __post_init__(self):
        for f in dataclasses.fields(self):
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            problem = value_problem(f"{self.name}.{f.name}", getattr(self, f.name), default,
                                    f.metadata.get("kind"), f.metadata.get("check"))
            if problem:
                raise SettingError(problem)
        self.check()

    def check(self) -> None:
        """Rules across fields (each field's own rule is checked before)."""

    @classmethod
    def defaults(cls) -> Dict[str, Any]:
        return dataclasses.asdict(cls())

    @classmethod
    def rules(cls) -> Dict[str, Tuple[Optional[Check], Optional[type]]]:
        """key -> (what a value must be, its type when the default is None)."""
        return {f.name: (f.metadata.get("check"), f.metadata.get("kind")) for f in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls, d: Optional[Mapping[str, Any]] = None):
        known = [f.name for f in dataclasses.fields(cls)]
        for k in d or {}:
            if k not in known:
                raise SettingError(f"{cls.name}: unknown key '{k}'; known keys: {', '.join(sorted(known))}")
        return cls(**dict(d or {}))

    @classmethod
    def of(cls, cfg: Mapping[str, Any]):
        """This section of a loaded config, typed."""
        return cls.from_dict(cfg[cls.name])

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def section(name: str):
    """Register a dataclass of ``setting`` fields as the config section ``name``."""
    def deco(cls):
        cls.name = name
        cls = dataclasses.dataclass(frozen=True)(cls)
        SECTIONS[name] = cls
        return cls
    return deco


def load_sections() -> Dict[str, type]:
    for home in HOMES:
        importlib.import_module(home)
    return SECTIONS

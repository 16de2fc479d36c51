"""TensorRT's Python API as the ``tensorrt-stubs`` package declares it, read from the .pyi TEXT.

The generated ``tensorrt_bindings/tensorrt.pyi`` cannot be imported or given to mypy
(a parameter named ``in``; ``add_scale_nd`` has a parameter without default after ones
with defaults), but every class, method, argument name, property and
enum member of the real bindings is in it. This reader is line based and tolerant of
both problems. ``tests/test_deploy_api.py`` checks every TensorRT call ppyolo_slim/deploy/ makes
against it, so a call TensorRT does not have fails in CI instead of on a user's GPU.

Pinned: ``pip install --no-deps tensorrt-stubs==10.13.0.35.1`` (its ``tensorrt``
dependency cannot install without NVIDIA's index; the stubs need nothing at run time).
"""
from __future__ import annotations

import importlib.util
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Set, Tuple

STUBS_VERSION = "10.13.0.35.1"
INSTALL = f"pip install --no-deps tensorrt-stubs=={STUBS_VERSION}"


class StubsMissing(RuntimeError):
    pass


@dataclass
class Param:
    name: str
    has_default: bool
    kind: str = "normal"          # normal | varargs | varkw


@dataclass
class Signature:
    params: List[Param]
    text: str
    keyword_only_from: Optional[int] = None    # index of the first keyword-only param ("*")
    positional_only_to: int = 0                # params before "/" cannot be passed by keyword

    def bind_error(self, n_pos: int, keywords: Sequence[str]) -> Optional[str]:
        """None if a call with ``n_pos`` positional args and these keywords fits, else why not."""
        ps = [p for p in self.params if p.kind == "normal"]
        varargs = any(p.kind == "varargs" for p in self.params)
        varkw = any(p.kind == "varkw" for p in self.params)
        n_positional = len(ps) if self.keyword_only_from is None else self.keyword_only_from
        if n_pos > n_positional and not varargs:
            return f"{n_pos} positional arguments, at most {n_positional}"
        names = [p.name for p in ps]
        filled = set(names[:n_pos])
        for k in keywords:
            if k not in names:
                if not varkw:
                    return f"no parameter named {k!r}"
                continue
            i = names.index(k)
            if i < self.positional_only_to:
                return f"{k!r} is positional-only"
            if k in filled:
                return f"{k!r} given positionally and by keyword"
            filled.add(k)
        missing = [p.name for p in ps if not p.has_default and p.name not in filled]
        if missing:
            return f"missing required argument(s) {missing}"
        return None


@dataclass
class ClassInfo:
    name: str
    bases: List[str]
    methods: Dict[str, List[Signature]] = field(default_factory=dict)
    attrs: Set[str] = field(default_factory=set)        # annotated attributes and properties
    members: Set[str] = field(default_factory=set)      # enum members (ClassVar)
    settable: Set[str] = field(default_factory=set)     # annotated attributes and properties with setters
    nested: Dict[str, "ClassInfo"] = field(default_factory=dict)


@dataclass
class StubAPI:
    classes: Dict[str, ClassInfo]
    functions: Dict[str, List[Signature]]
    module_names: Set[str]
    version: str = "?"

    def cls(self, name: str) -> ClassInfo:
        if name not in self.classes:
            raise KeyError(f"tensorrt has no class {name!r}")
        return self.classes[name]

    def _mro(self, name: str) -> List[ClassInfo]:
        out, todo, seen = [], [name], set()
        while todo:
            n = todo.pop(0)
            if n in seen or n not in self.classes:
                continue
            seen.add(n)
            c = self.classes[n]
            out.append(c)
            todo.extend(c.bases)
        return out

    def has_attr(self, cls: str, attr: str) -> bool:
        return any(attr in c.attrs or attr in c.methods or attr in c.members or attr in c.nested
                   for c in self._mro(cls))

    def can_set(self, cls: str, attr: str) -> bool:
        return any(attr in c.settable for c in self._mro(cls))

    def signatures(self, cls: Optional[str], method: str) -> List[Signature]:
        if cls is None:
            return self.functions.get(method, [])
        for c in self._mro(cls):
            if method in c.methods:
                return c.methods[method]
        return []

    def check_call(self, cls: Optional[str], method: str, n_pos: int, keywords: Sequence[str]) -> Optional[str]:
        """None if ``cls.method(...)`` (cls None: a module function) exists and accepts the call."""
        where = f"tensorrt.{method}" if cls is None else f"{cls}.{method}"
        if cls is not None and cls not in self.classes:
            return f"{where}: tensorrt has no class {cls}"
        sigs = self.signatures(cls, method)
        if not sigs:
            return f"{where}: no such method in the TensorRT {self.version} API"
        errors = [s.bind_error(n_pos, keywords) for s in sigs]
        if all(errors):
            shown = "; ".join(f"({s.text}): {e}" for s, e in zip(sigs, errors))
            return f"{where} called with {n_pos} positional + keywords {list(keywords)} fits no signature: {shown}"
        return None


# ---------------------------------------------------------------------------- locating

def stub_files() -> Tuple[str, str]:
    """(tensorrt/__init__.pyi, tensorrt_bindings/tensorrt.pyi) of the installed tensorrt-stubs."""
    roots = []
    for mod in ("tensorrt_bindings", "tensorrt"):
        spec = importlib.util.find_spec(mod)
        if spec is not None:
            roots += [os.path.dirname(p) for p in (spec.submodule_search_locations or [])]
    roots += [p for p in sys.path if os.path.isdir(p)]
    for r in roots:
        init = os.path.join(r, "tensorrt", "__init__.pyi")
        main = os.path.join(r, "tensorrt_bindings", "tensorrt.pyi")
        if os.path.isfile(init) and os.path.isfile(main):
            return init, main
    raise StubsMissing(f"tensorrt-stubs is not installed; the TensorRT API check reads its .pyi files. "
                       f"Install it with: {INSTALL}")


# ---------------------------------------------------------------------------- parsing

_DOC = re.compile(r'"""[\s\S]*?"""|\'\'\'[\s\S]*?\'\'\'')


def _split_top(s: str) -> List[str]:
    out, depth, cur = [], 0, ""
    for ch in s:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur)
    return [p.strip() for p in out]


def _signature(param_text: str, is_method: bool, static: bool) -> Signature:
    parts = _split_top(param_text)
    params: List[Param] = []
    kw_from, pos_to = None, 0
    for p in parts:
        if p == "*":
            kw_from = len(params)
            continue
        if p == "/":
            pos_to = len(params)
            continue
        head = p.split("=", 1)[0]
        name = head.split(":", 1)[0].strip()
        kind = "normal"
        if name.startswith("**"):
            kind, name = "varkw", name[2:]
        elif name.startswith("*"):
            kind, name = "varargs", name[1:]
            kw_from = len(params)
        params.append(Param(name, "=" in p, kind))
    if is_method and not static and params:
        params = params[1:]                 # self (sometimes annotated with another class)
        kw_from = None if kw_from is None else kw_from - 1
        pos_to = max(pos_to - 1, 0)
    return Signature(params, param_text, kw_from, pos_to)


def parse_pyi(text: str) -> Tuple[Dict[str, ClassInfo], Dict[str, List[Signature]], Set[str]]:
    """(classes, module functions, module-level names) of one stub file."""
    text = _DOC.sub('""', text)
    classes: Dict[str, ClassInfo] = {}
    functions: Dict[str, List[Signature]] = {}
    names: Set[str] = set()
    stack: List[Tuple[int, ClassInfo]] = []      # (indent of the class body, class)
    decorators: List[str] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        raw = lines[i]
        i += 1
        if not raw.strip() or raw.strip().startswith("#"):
            continue
        indent = len(raw) - len(raw.lstrip())
        line = raw.strip()
        while stack and indent < stack[-1][0]:
            stack.pop()
        owner = stack[-1][1] if stack and indent == stack[-1][0] else None
        if stack and indent > stack[-1][0]:
            continue                              # inside a method body
        if line.startswith("@"):
            decorators.append(line[1:])
            continue
        m = re.match(r"class (\w+)(?:\((.*)\))?\s*:", line)
        if m:
            bases = [b.strip().split(".")[-1] for b in _split_top(m.group(2) or "")]
            c = ClassInfo(m.group(1), [b for b in bases if b and b != "object"])
            if owner is None and not stack:
                classes[c.name] = c
                names.add(c.name)
            elif owner is not None:
                owner.nested[c.name] = c
                classes.setdefault(f"{owner.name}.{c.name}", c)
            stack.append((indent + 4, c))
            decorators = []
            continue
        m = re.match(r"def (\w+)\((.*)\)\s*(->.*)?:", line)
        if m:
            # a def may span lines in other stub generators; join until the closing "):"
            name, params = m.group(1), m.group(2)
            static = "staticmethod" in decorators
            prop = any(d == "property" for d in decorators)
            setter = any(d.endswith(".setter") for d in decorators)
            if owner is not None:
                if prop:
                    owner.attrs.add(name)
                elif setter:
                    owner.attrs.add(name)
                    owner.settable.add(name)
                else:
                    owner.methods.setdefault(name, []).append(_signature(params, True, static))
            elif not stack:
                functions.setdefault(name, []).append(_signature(params, False, False))
                names.add(name)
            decorators = []
            continue
        m = re.match(r"(\w+)\s*:\s*(.*?)(?:\s*=.*)?(?:\s*#.*)?$", line)
        if m:
            name, ann = m.group(1), m.group(2)
            if owner is not None:
                if "ClassVar" in ann:
                    owner.members.add(name)
                else:
                    owner.attrs.add(name)
                    owner.settable.add(name)
            elif not stack:
                names.add(name)
            decorators = []
            continue
        m = re.match(r"(\w+)\s*=", line)
        if m and not stack:
            names.add(m.group(1))
        m = re.match(r"from \S+ import (\w+)(?: as (\w+))?", line)
        if m and not stack:
            names.add(m.group(2) or m.group(1))
        m = re.match(r"import (\S+) as (\w+)", line)
        if m and not stack:
            names.add(m.group(2))
        decorators = []
    return classes, functions, names


def load_api(paths: Optional[Tuple[str, str]] = None) -> StubAPI:
    init_path, main_path = paths or stub_files()
    with open(main_path, encoding="utf-8") as f:
        classes, functions, names = parse_pyi(f.read())
    with open(init_path, encoding="utf-8") as f:
        init_text = f.read()
    _, init_functions, init_names = parse_pyi(init_text)
    helpers = os.path.join(os.path.dirname(main_path), "__init__.pyi")   # tensorrt_bindings: nptype, volume
    if os.path.isfile(helpers):
        with open(helpers, encoding="utf-8") as f:
            init_functions = {**parse_pyi(f.read())[1], **init_functions}
    m = re.search(r"__all__\s*=\s*\[(.*?)\]", init_text, re.S)
    exported = set(re.findall(r"'(\w+)'", m.group(1))) if m else set()
    for k, v in init_functions.items():
        functions.setdefault(k, v)
    v = re.search(r"__version__\s*:\s*str\s*=\s*'([^']+)'", init_text)
    return StubAPI(classes, functions, names | init_names | exported, v.group(1) if v else "?")

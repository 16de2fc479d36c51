"""TensorRT 11.x's Python API as far as its bindings wheel shows it without being imported.

There are no tensorrt-stubs for 11.x, and ``import tensorrt`` needs libnvinfer, which cannot be
installed without NVIDIA's index; ``tensorrt-cu12-bindings`` (the pybind11 module alone) can be
downloaded from PyPI. Its ``tensorrt.so`` is read as bytes, never loaded:

- ``identifiers``: every identifier-like C string of the module (class, method, argument,
  property and enum member names are all there, as pybind11 registers them by name). The
  linker merges a string into the tail of a longer one ("Builder" may live inside
  "IBuilder\\0"), so a name counts as present when some string ends with it: a necessary
  condition, weaker than a signature.
- ``args``: for methods whose docstring is a named symbol (``tensorrt::<Class>Doc::<method>``,
  about 430 of them), the ``:arg name:`` lines of that docstring, in order. pybind11 builds the
  real signatures at import time from compiled code, so argument names, order and defaults
  are otherwise not readable; enum *values* are not either (only member names).

    pip download --no-deps "tensorrt-cu12-bindings>=11,<12" -d /tmp/trt11
    python -m ppyolo_slim.deploy.trt_wheel_api /tmp/trt11/tensorrt_cu12_bindings-11.*.whl \\
        -o tests/fixtures/tensorrt_11_bindings_api.json
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import struct
import zipfile
from typing import Dict, List, Tuple

_IDENT = re.compile(rb"[A-Za-z_][A-Za-z0-9_]{1,80}")
_DOC_SYMBOL = re.compile(r"_ZN8tensorrt(\w+)E(?:\.lto_priv\.\d+)?$")


class _Elf:
    """Just enough of a 64-bit little-endian ELF: sections, the symbol table, RELATIVE relocations."""

    def __init__(self, data: bytes):
        if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
            raise ValueError("not a 64-bit little-endian ELF file")
        self.data = data
        shoff, = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
        self.sections = []
        for i in range(shnum):
            name, typ, _, addr, off, size, link, _, _, _ = struct.unpack_from("<IIQQQQIIQQ", data,
                                                                             shoff + i * shentsize)
            self.sections.append({"name": name, "type": typ, "addr": addr, "off": off, "size": size, "link": link})
        names = self.sections[shstrndx]["off"]
        for s in self.sections:
            s["name"] = self.cstr(names + s["name"])
        self.by_name = {s["name"]: s for s in self.sections}

    def cstr(self, off: int) -> str:
        return self.data[off:self.data.index(b"\0", off)].decode("utf-8", "replace")

    def offset(self, addr: int):
        for s in self.sections:
            if s["addr"] and s["type"] != 8 and s["addr"] <= addr < s["addr"] + s["size"]:   # 8: NOBITS
                return addr - s["addr"] + s["off"]
        return None

    def relative_relocations(self) -> Dict[int, int]:
        out = {}
        for s in self.sections:
            if s["type"] == 4:                                   # SHT_RELA
                for j in range(s["size"] // 24):
                    where, info, addend = struct.unpack_from("<QQq", self.data, s["off"] + 24 * j)
                    if info & 0xFFFFFFFF == 8:                   # R_X86_64_RELATIVE
                        out[where] = addend
        return out

    def symbols(self):
        tab = self.by_name.get(".symtab")
        if tab is None:
            return
        strings = self.sections[tab["link"]]["off"]
        for j in range(tab["size"] // 24):
            name, _, _, _, value, _ = struct.unpack_from("<IBBHQQ", self.data, tab["off"] + 24 * j)
            yield self.cstr(strings + name), value


def _demangle_doc(symbol: str):
    """('INetworkDefinition', 'add_nms') from _ZN8tensorrt21INetworkDefinitionDocL7add_nmsE."""
    m = _DOC_SYMBOL.match(symbol)
    if not m:
        return None
    rest = m.group(1)
    parts = []
    while rest:
        n = re.match(r"L?(\d+)", rest)
        if not n:
            return None
        k = int(n.group(1))
        rest = rest[n.end():]
        parts.append(rest[:k])
        rest = rest[k:]
    if len(parts) != 2 or not parts[0].endswith("Doc"):
        return None
    return parts[0][:-3], parts[1]


def read_bindings(so: bytes) -> Tuple[List[str], Dict[str, List[str]]]:
    """(identifiers, {"Class.method": [arg names from its docstring]}) of a tensorrt.so."""
    elf = _Elf(so)
    ro = elf.by_name[".rodata"]
    blob = so[ro["off"]:ro["off"] + ro["size"]]
    idents = sorted({m.group().decode() for s in blob.split(b"\0") for m in [_IDENT.fullmatch(s)] if m})
    rel = elf.relative_relocations()
    args: Dict[str, List[str]] = {}
    for name, value in elf.symbols():
        who = _demangle_doc(name)
        if who is None:
            continue
        target = rel.get(value)
        if target is None:                   # a pointer stored in place rather than relocated
            off = elf.offset(value)
            target = struct.unpack_from("<Q", so, off)[0] if off is not None else None
        off = elf.offset(target) if target else None
        if off is None:
            continue
        doc = elf.cstr(off)
        args[f"{who[0]}.{who[1]}"] = re.findall(r"^\s*:arg (\w+):", doc, re.M)
    return [i for i in idents if not i.startswith("_Z")], args


def extract(wheel: str) -> dict:
    with open(wheel, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    with zipfile.ZipFile(wheel) as z:
        so_name = next(n for n in z.namelist() if re.fullmatch(r"tensorrt\w*/tensorrt\w*\.so", n))
        idents, args = read_bindings(z.read(so_name))
        init = z.read(os.path.dirname(so_name) + "/__init__.py").decode()
    version = re.search(r"-(\d+\.\d+\.\d+\.\d+)-", os.path.basename(wheel))
    return {"wheel": os.path.basename(wheel), "sha256": sha, "version": version.group(1) if version else "?",
            "identifiers": idents, "python_functions": sorted(set(re.findall(r"^def (\w+)\(", init, re.M))),
            "args": dict(sorted(args.items()))}


class WheelAPI:
    """Look-ups on an extracted record (see the module docstring for what they can tell)."""

    def __init__(self, record: dict):
        self.record, self.version = record, record["version"]
        self._names = set(record["identifiers"]) | set(record["python_functions"])
        self._sorted_reversed = sorted(n[::-1] for n in record["identifiers"])

    def has_name(self, name: str) -> bool:
        if name in self._names:
            return True
        import bisect                            # some string ends with name: a merged tail
        r = name[::-1]
        i = bisect.bisect_left(self._sorted_reversed, r)
        return i < len(self._sorted_reversed) and self._sorted_reversed[i].startswith(r)

    def args(self, cls: str, method: str):
        return self.record["args"].get(f"{cls}.{method}")


def load(path: str) -> WheelAPI:
    with open(path, encoding="utf-8") as f:
        return WheelAPI(json.load(f))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("wheel", help="a tensorrt-cu12-bindings (or -cu13-) 11.x wheel")
    p.add_argument("-o", "--output", required=True, help="JSON file to write")
    a = p.parse_args(argv)
    rec = extract(a.wheel)
    with open(a.output, "w", encoding="utf-8") as f:
        json.dump(rec, f, indent=0, sort_keys=True)
        f.write("\n")
    print(f"{a.wheel}: {len(rec['identifiers'])} identifiers, {len(rec['args'])} documented methods -> {a.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

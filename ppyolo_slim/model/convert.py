"""Ultralytics YOLOv5 checkpoints (``.pt``) to ``.pdparams``, without torch and without running code.

A ``.pt`` is a pickle (inside a zip since torch 1.6, or torch's older "legacy" stream) whose
tensors point at raw storages. Unpickling it with ``torch.load`` would import ultralytics'
``models.yolo`` and may run any code the file names. Here a restricted unpickler maps torch's
tensor-rebuild functions to NumPy, turns every other class into an inert ``Placeholder`` that
only records its state, and refuses every other callable (``os.system``, ``eval``, ...).
The placeholder module tree (``_modules`` / ``_parameters`` / ``_buffers``) then gives the
state dict with ultralytics' names, which differ from ours only in BN statistics.
"""
from __future__ import annotations

import _compat_pickle
import collections
import io
import os
import pickle
import re
import struct
import zipfile
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .channels import WeightShapeError, infer_nc, resolve
from .spec import SCALES, STRIDES, expand, make_divisible, scaled_repeats
from .weights import CheckpointError, ModelMeta, UnsafeCheckpointError, save_weights


class ConvertError(CheckpointError):
    """A checkpoint that is readable but is not a YOLOv5 v6+ this project can build."""


# ----------------------------------------------------------------------------- inert objects

class Placeholder:
    """Stands in for a class the checkpoint names (``models.yolo.DetectionModel``,
    ``torch.nn.modules.conv.Conv2d``, ...). It records constructor arguments and pickled
    state and has no behaviour: nothing of the original class is imported or run."""
    __slots__ = ("_pt_args", "_pt_state", "_pt_items")
    _pt_name = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj._pt_args, obj._pt_state, obj._pt_items = args, None, []
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):        # pickle's BUILD
        self._pt_state = state

    def __setitem__(self, key, value):    # SETITEMS on a dict subclass
        self._pt_items.append((key, value))

    def append(self, value):              # APPENDS on a list subclass
        self._pt_items.append(value)

    def extend(self, values):
        self._pt_items.extend(values)

    def attrs(self) -> Dict[str, Any]:
        """The instance ``__dict__`` as pickled (plus slot state, if any)."""
        s = self._pt_state
        if isinstance(s, dict):
            return s
        if isinstance(s, tuple) and len(s) == 2 and all(p is None or isinstance(p, dict) for p in s):
            return {**(s[0] or {}), **(s[1] or {})}
        return {}

    def __repr__(self):
        return f"<inert {self._pt_name}>"


_PLACEHOLDER_CLASSES: Dict[str, type] = {}


def _placeholder_class(qualname: str) -> type:
    if qualname not in _PLACEHOLDER_CLASSES:
        short = qualname.rsplit(".", 1)[-1]
        _PLACEHOLDER_CLASSES[qualname] = type(short, (Placeholder,), {"__slots__": (), "_pt_name": qualname})
    return _PLACEHOLDER_CLASSES[qualname]


def attrs_of(obj: Any) -> Dict[str, Any]:
    return obj.attrs() if isinstance(obj, Placeholder) else {}


def class_name(obj: Any) -> str:
    """``Conv`` for a placeholder of ``models.common.Conv``; '' for anything else."""
    return obj._pt_name.rsplit(".", 1)[-1] if isinstance(obj, Placeholder) else ""


class _Sealed:
    """Our own helper objects: a pickle may not BUILD (set attributes on) them."""
    __slots__ = ()

    def __setstate__(self, state):
        raise UnsafeCheckpointError(f"refused to set the state of {type(self).__name__}")


class _AttrRef(_Sealed):
    """``getattr(obj, name)`` as pickled for a bound method (fused ultralytics Conv keeps
    ``forward = forward_fuse``); recorded, never looked up."""
    __slots__ = ("obj", "name")

    def __init__(self, obj, name):
        self.obj, self.name = obj, name


# ----------------------------------------------------------------------------- tensors

_STORAGE_DTYPES = {
    "DoubleStorage": "f8", "FloatStorage": "f4", "HalfStorage": "f2", "BFloat16Storage": "bf16",
    "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "b1", "ComplexFloatStorage": "c8",
    "ComplexDoubleStorage": "c16", "UntypedStorage": "u1",
}
_TORCH_DTYPES = {
    "float64": "f8", "double": "f8", "float32": "f4", "float": "f4", "float16": "f2", "half": "f2",
    "bfloat16": "bf16", "int64": "i8", "long": "i8", "int32": "i4", "int": "i4", "int16": "i2",
    "short": "i2", "int8": "i1", "uint8": "u1", "bool": "b1", "complex64": "c8", "complex128": "c16",
}


class _StorageType(_Sealed):
    __slots__ = ("name", "code")

    def __init__(self, name: str, code: str):
        self.name, self.code = name, code


class _TorchDType(_Sealed):
    __slots__ = ("name", "code")

    def __init__(self, name: str, code: str):
        self.name, self.code = name, code


_CODES = set(_STORAGE_DTYPES.values())


def _np_dtype(code: str, order: str) -> np.dtype:
    if code not in _CODES:
        raise CheckpointError(f"unsupported tensor element type {code!r}")
    if code == "b1":
        return np.dtype("?")
    if code == "bf16":
        return np.dtype(order + "u2")     # raw bits; widened to float32 after gathering
    return np.dtype(order + code)


class _Storage(_Sealed):
    """Raw bytes of one torch storage, typed on demand; ``raw=None`` while still unread."""
    __slots__ = ("raw", "code", "order", "where")

    def __init__(self, raw: Optional[bytes], code: str, order: str, where: str):
        self.raw, self.code, self.order, self.where = raw, code, order, where

    def typed(self, code: Optional[str] = None) -> np.ndarray:
        dt = _np_dtype(code or self.code, self.order)
        n = len(self.raw) // dt.itemsize
        return np.frombuffer(self.raw, dtype=dt, count=n)


def _gather(storage: Any, offset: int, size: Sequence[int], stride: Sequence[int],
            code: Optional[str] = None) -> np.ndarray:
    """The tensor torch would rebuild, as a native-endian NumPy copy; every index is
    checked against the storage first (as_strided itself would read past the end)."""
    if not isinstance(storage, _Storage):
        raise CheckpointError(f"a tensor refers to {type(storage).__name__}, not to a storage")
    if storage.raw is None:
        return None   # first pass over a legacy file: the data comes later
    code = code or storage.code
    flat = storage.typed(code)
    size = tuple(int(s) for s in size)
    stride = tuple(int(s) for s in stride)
    offset = int(offset)
    if len(size) != len(stride) or offset < 0 or min(size + stride, default=0) < 0:
        raise CheckpointError(f"{storage.where}: bad tensor layout (offset {offset}, size {list(size)}, "
                              f"stride {list(stride)})")
    if int(np.prod(size)) == 0:
        out = np.zeros(size, flat.dtype)
    else:
        last = offset + sum((n - 1) * st for n, st in zip(size, stride))
        if last >= flat.size:
            raise CheckpointError(f"{storage.where}: a tensor of shape {list(size)} reads element {last} "
                                  f"of a storage of {flat.size}; the file is damaged")
        out = np.lib.stride_tricks.as_strided(flat[offset:], shape=size, writeable=False,
                                              strides=[st * flat.itemsize for st in stride]).copy()
    if code == "bf16":
        return (out.astype("<u4") << 16).view("<f4").astype(np.float32)
    return out.astype(out.dtype.newbyteorder("="), copy=False)


def _rebuild_tensor(storage, offset, size, stride, *rest):
    return _gather(storage, offset, size, stride)


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    a = _gather(storage, offset, size, stride)
    if metadata and metadata.get("neg"):
        a = -a
    if metadata and metadata.get("conj"):
        a = np.conj(a)
    return a


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype, metadata=None):
    if not isinstance(dtype, _TorchDType):
        raise CheckpointError(f"tensor with unknown dtype {dtype!r}")
    return _gather(storage, offset, size, stride, dtype.code)


def _rebuild_parameter(data, requires_grad=False, hooks=None, state=None):
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    if func not in (_rebuild_tensor, _rebuild_tensor_v2, _rebuild_tensor_v3, _rebuild_parameter):
        raise UnsafeCheckpointError(f"refused to call {func!r} while rebuilding a tensor")
    return func(*args)


def _from_numpy(data, dtype=None, device=None, requires_grad=False):
    if not isinstance(data, np.ndarray):
        raise CheckpointError("a numpy-backed tensor holds no array")
    return data


# ----------------------------------------------------------------------------- restricted unpickler

def _reconstructor(cls, base, state):
    """copyreg._reconstructor (protocol 0/1 objects): only for inert placeholders."""
    if isinstance(cls, type) and issubclass(cls, Placeholder):
        return cls(state)
    raise UnsafeCheckpointError(f"refused copyreg._reconstructor for {cls!r}")


def _plain_dict(*args):
    return {}   # a defaultdict's factory is a callable: keep the items, drop the factory


def _path_str(*parts):
    return "/".join(str(p) for p in parts)


def _device(*args):
    return ":".join(str(a) for a in args)


_ALLOWED: Dict[Tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): _plain_dict,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("builtins", "getattr"): _AttrRef,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._utils", "_rebuild_device_tensor_from_numpy"): _from_numpy,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch.tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Size"): tuple,
    ("torch", "device"): _device,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
for _b in ("set", "frozenset", "bytearray", "complex", "slice", "object", "list", "dict", "tuple",
           "int", "float", "str", "bytes", "bool"):
    _ALLOWED[("builtins", _b)] = getattr(__import__("builtins"), _b)
for _m in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_m, "_reconstruct")] = np.core.multiarray._reconstruct
    _ALLOWED[(_m, "scalar")] = np.core.multiarray.scalar
for _p in ("PosixPath", "WindowsPath", "Path", "PurePosixPath", "PureWindowsPath", "PurePath"):
    _ALLOWED[("pathlib", _p)] = _path_str

# Classes from these modules are refused outright, even as inert placeholders: a legitimate
# checkpoint has no reason to name them, and the error is clearer than a silent stand-in.
_DENIED_MODULES = {
    "os", "posix", "nt", "subprocess", "sys", "shutil", "importlib", "runpy", "socket", "ctypes",
    "pickle", "_pickle", "marshal", "code", "codeop", "pty", "multiprocessing", "threading",
    "webbrowser", "types", "functools", "operator", "io", "_io", "tempfile", "signal", "asyncio",
    "pdb", "bdb", "timeit", "zipimport", "site", "inspect", "builtins", "copyreg", "urllib",
    "http", "ftplib", "smtplib", "telnetlib", "sqlite3", "glob", "pathlib", "platform",
}


class TorchUnpickler(pickle.Unpickler):
    """Unpickles a torch checkpoint into NumPy arrays and inert placeholders."""

    def __init__(self, f, storages: Callable[[tuple], Any]):
        super().__init__(f)
        self._storages = storages

    def find_class(self, module, name):
        # torch pickles with protocol 2, which spells Python 2 names (__builtin__.set)
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module in ("torch", "torch.storage") and name in _STORAGE_DTYPES:
            return _StorageType(name, _STORAGE_DTYPES[name])
        if module == "torch" and name in _TORCH_DTYPES:
            return _TorchDType(name, _TORCH_DTYPES[name])
        last = name.rsplit(".", 1)[-1]
        if module.split(".")[0] in _DENIED_MODULES or not last[:1].isupper():
            what = "torch function (unsupported tensor kind?)" if module.startswith("torch") else "callable"
            raise UnsafeCheckpointError(
                f"refused {module}.{name}: the checkpoint names a {what} that is not one of torch's "
                f"tensor rebuilders; it was not run. A YOLOv5 checkpoint needs only tensors and "
                f"module state")
        # A class: stand in for it without importing it. Its state is recorded, never acted on.
        return _placeholder_class(f"{module}.{name}")

    def persistent_load(self, pid):
        return self._storages(pid)


# ----------------------------------------------------------------------------- torch file formats

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def _is_legacy(head: bytes) -> bool:
    # torch's legacy stream starts with pickle(protocol 2) of the magic number (a LONG1 of 10 bytes)
    return head[:3] == b"\x80\x02\x8a" and int.from_bytes(head[4:4 + head[3]], "little") == _LEGACY_MAGIC


def load_torch_file(path: str) -> Any:
    """The object graph of a ``torch.save`` file: NumPy arrays for tensors, ``Placeholder``
    objects for modules and other classes. Never imports torch nor anything the file names."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    with open(path, "rb") as f:
        head = f.read(16)
    try:
        if head[:4] == b"PK\x03\x04":
            return _load_zip(path)
        if _is_legacy(head):
            return _load_legacy(path)
        if _looks_tar(path):
            raise CheckpointError(f"{path}: a torch<0.4 tar checkpoint; re-save it with a newer torch")
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither a torch zip archive nor "
                              f"torch's legacy format); first bytes {head[:8]!r}")
    except UnsafeCheckpointError as e:
        raise UnsafeCheckpointError(f"{path}: {e}") from None
    except (CheckpointError, FileNotFoundError):
        raise
    except zipfile.BadZipFile as e:
        raise CheckpointError(f"{path}: the zip archive is damaged or truncated ({e})") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, MemoryError, OverflowError, UnicodeDecodeError, struct.error) as e:
        raise CheckpointError(f"{path}: unreadable PyTorch checkpoint ({type(e).__name__}: {e}); "
                              f"truncated or damaged?") from None


def _looks_tar(path: str) -> bool:
    import tarfile
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


def _load_zip(path: str) -> Any:
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise CheckpointError(f"{path}: looks like a torch zip checkpoint but the archive is truncated "
                              f"or damaged ({e}); copy or download it again") from None
    with zf:
        names = zf.namelist()
        pkls = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
        if not pkls:
            if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
                raise CheckpointError(f"{path}: a TorchScript archive (torch.jit.save); convert the "
                                      f"training checkpoint (.pt from train.py) instead")
            raise CheckpointError(f"{path}: a zip archive without data.pkl; not a torch checkpoint")
        prefix = pkls[0][: -len("data.pkl")]
        order = "<"
        if prefix + "byteorder" in names:
            bo = zf.read(prefix + "byteorder").strip()
            if bo not in (b"little", b"big"):
                raise CheckpointError(f"{path}: unknown byteorder record {bo!r}")
            order = "<" if bo == b"little" else ">"
        cache: Dict[str, _Storage] = {}

        def storage(pid):
            if not isinstance(pid, tuple) or len(pid) != 5 or _ascii(pid[0]) != "storage":
                raise CheckpointError(f"unexpected persistent id {pid!r:.80}")
            typ, key, _location, numel = pid[1], _ascii(pid[2]), pid[3], int(pid[4])
            if not isinstance(typ, _StorageType):
                raise CheckpointError(f"storage {key} has unsupported type {typ!r}")
            if key not in cache:
                rec = f"{prefix}data/{key}"
                if rec not in names:
                    raise CheckpointError(f"storage record {rec} is missing; the archive is incomplete")
                raw = zf.read(rec)
                need = numel * _np_dtype(typ.code, order).itemsize
                if len(raw) < need:
                    raise CheckpointError(f"storage record {rec} holds {len(raw)} bytes, "
                                          f"{need} expected; the archive is truncated")
                cache[key] = _Storage(raw[:need], typ.code, order, rec)
            return cache[key]

        with zf.open(prefix + "data.pkl") as f:
            return TorchUnpickler(io.BytesIO(f.read()), storage).load()


def _ascii(x):
    return x.decode("ascii") if isinstance(x, bytes) else x


def _load_legacy(path: str) -> Any:
    """torch's pre-1.6 stream: magic, version, sys_info, the object pickle, the list of storage
    keys, then each storage as <int64 numel><raw little-endian data>. Storages follow the
    pickle that uses them, so read it twice: once to learn their types, once to build."""
    with open(path, "rb") as f:
        def plain():
            return TorchUnpickler(f, _no_storage).load()
        plain()
        if plain() != 1001:
            raise CheckpointError("unsupported legacy protocol version")
        sys_info = plain()
        if isinstance(sys_info, dict) and sys_info.get("little_endian") is False:
            raise CheckpointError("a legacy checkpoint written on a big-endian machine is not supported")
        start = f.tell()
        types: Dict[str, str] = {}

        def learn(pid):
            kind = _ascii(pid[0])
            if kind == "module":
                return pid[1]
            typ, key = pid[1], _ascii(pid[2])
            if not isinstance(typ, _StorageType):
                raise CheckpointError(f"storage {key} has unsupported type {typ!r}")
            types[key] = typ.code
            return _Storage(None, typ.code, "<", "")   # unread: pass one's tensors are None

        TorchUnpickler(f, learn).load()
        keys = plain()
        data: Dict[str, bytes] = {}
        for key in keys:
            key = _ascii(key)
            if key not in types:
                raise CheckpointError(f"storage {key} is listed but never used")
            (numel,) = struct.unpack("<q", f.read(8))
            nbytes = numel * _np_dtype(types[key], "<").itemsize
            raw = f.read(nbytes)
            if numel < 0 or len(raw) != nbytes:
                raise CheckpointError(f"storage {key}: {len(raw)} of {nbytes} bytes; the file is truncated")
            data[key] = raw

        def build(pid):
            kind = _ascii(pid[0])
            if kind == "module":
                return pid[1]
            typ, key, view = pid[1], _ascii(pid[2]), pid[5] if len(pid) > 5 else None
            if key not in data:
                raise CheckpointError(f"storage {key} has no data; the file is truncated")
            st = _Storage(data[key], typ.code, "<", f"storage {key}")
            if view is not None:
                _vkey, off, n = view
                isz = _np_dtype(typ.code, "<").itemsize
                st = _Storage(data[key][off * isz:(off + n) * isz], typ.code, "<", f"storage {key}")
            return st

        f.seek(start)
        return TorchUnpickler(f, build).load()


def _no_storage(pid):
    raise CheckpointError("unexpected tensor data in a legacy header record")


# ----------------------------------------------------------------------------- module tree

def _is_module(obj: Any) -> bool:
    return isinstance(obj, Placeholder) and isinstance(obj.attrs().get("_modules"), dict)


def module_tree(root: Placeholder, prefix: str = "") -> Tuple[Dict[str, np.ndarray], Dict[str, Placeholder]]:
    """(state dict with torch's names, sub-module placeholders by name), as
    ``nn.Module.state_dict`` / ``named_modules`` would give them."""
    state: Dict[str, np.ndarray] = collections.OrderedDict()
    modules: Dict[str, Placeholder] = collections.OrderedDict()

    def walk(m: Placeholder, pre: str, depth: int):
        if depth > 64:
            raise ConvertError(f"module tree deeper than 64 at {pre!r}; not a YOLOv5")
        a = m.attrs()
        skip = a.get("_non_persistent_buffers_set") or set()
        for group in ("_parameters", "_buffers"):
            entries = a.get(group) or {}
            if not isinstance(entries, dict):
                raise ConvertError(f"{pre or 'the model'}: {group} is {type(entries).__name__}, expected a dict")
            for n, v in entries.items():
                if v is None or (group == "_buffers" and n in skip):
                    continue
                if not isinstance(v, np.ndarray):
                    raise ConvertError(f"{pre}{n} is {v!r:.60}, expected a tensor")
                state[pre + n] = v
        for n, sub in (a.get("_modules") or {}).items():
            if sub is None:
                continue
            if not _is_module(sub):
                raise ConvertError(f"{pre}{n} is {sub!r:.60}, expected a torch module")
            modules[pre + n] = sub
            walk(sub, pre + n + ".", depth + 1)

    walk(root, prefix, 0)
    return state, modules


def _tensor_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, np.ndarray) for k, v in obj.items())


def _normalise_keys(state: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Accept ``module.`` (DataParallel) prefixes and a bare ``model.model`` state dict."""
    out = collections.OrderedDict()
    for k, v in state.items():
        while k.startswith("module."):
            k = k[len("module."):]
        if k[:1].isdigit():
            k = "model." + k
        out[k] = v
    return out


def pick_model(obj: Any, use: str = "auto", src: str = "checkpoint") -> Tuple[Any, str]:
    """The model inside a checkpoint: ``ema`` if present and not None (as ultralytics'
    own loader does), else ``model``; or the object itself when it is a model or state dict."""
    if use not in ("auto", "ema", "model"):
        raise ValueError(f"use must be auto, ema or model, got {use!r}")
    if _is_module(obj) or _tensor_dict(obj):
        if use != "auto":
            raise ConvertError(f"{src}: [{use!r}] is missing: the file is a bare model or state "
                               f"dict (use auto)")
        return obj, "file"
    if isinstance(obj, dict):
        keys = {"auto": ["ema", "model"], "ema": ["ema"], "model": ["model"]}[use]
        for key in keys + (["state_dict"] if use == "auto" else []):
            v = obj.get(key)
            if _is_module(v) or _tensor_dict(v):
                return v, key
            if v is not None and use != "auto":
                raise ConvertError(f"{src}: [{key!r}] is {v!r:.60}, not a model")
        if use != "auto":
            raise ConvertError(f"{src}: [{use!r}] is missing or None")
        top = ", ".join(repr(k) for k in list(obj)[:12])
        raise ConvertError(f"{src}: no model found: expected an ultralytics checkpoint "
                           f"('model' / 'ema') or a state dict; its keys are {top}")
    raise ConvertError(f"{src}: holds {obj!r:.60}, not a model or a state dict")


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
        L = r.spec
        a = attrs_of(modules.get(L.name))
        if L.block == "SPPF":
            k = _pair(attrs_of(modules.get(L.name + ".m")).get("kernel_size"))
            if k != (L.pool, L.pool):
                fail(L.name + ".m", f"max-pool kernel {k}, expected {L.pool}")
        elif L.block == "Upsample":
            if a.get("mode") != "nearest" or float(a.get("scale_factor") or 0) != float(L.scale):
                fail(L.name, f"Upsample({a.get('scale_factor')}, {a.get('mode')!r}), "
                             f"expected nearest x{L.scale}")
        elif L.block == "Concat" and a.get("d", 1) != 1:
            fail(L.name, f"concatenates along dim {a.get('d')}, expected 1 (channels)")
        elif L.block == "C3":
            for j in range(r.bottlenecks):
                add = attrs_of(modules.get(f"{L.name}.m.{j}")).get("add")
                if add is not None and bool(add) != L.shortcut:
                    fail(f"{L.name}.m.{j}", f"residual add={add}, expected {L.shortcut}")
        for cs in r.convs.values():
            eps[cs.name] = _check_conv(modules, cs, fail)
    return eps


def _pair(v) -> Tuple[int, ...]:
    if isinstance(v, (list, tuple)):
        return tuple(int(x) for x in v)
    return (int(v), int(v)) if isinstance(v, (int, float)) else ()


def _check_conv(modules, cs, fail) -> float:
    m = modules.get(cs.name)
    if class_name(m) != "Conv":
        fail(cs.name, f"is {getattr(m, '_pt_name', m)}, expected models.common.Conv")
    conv, bn, act = (modules.get(f"{cs.name}.{c}") for c in ("conv", "bn", "act"))
    c = attrs_of(conv)
    want = dict(kernel_size=cs.k, stride=cs.s, padding=cs.p, dilation=1, groups=1)
    for key, w in want.items():
        got, w = _pair(c.get(key, w)), _pair(w)
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
    for k in [k for k in out if k.endswith(".conv.bias")]:
        base = k[: -len(".conv.bias")]
        if base + ".bn.weight" in out:
            continue
        b = out.pop(k)
        out[base + ".bn.weight"] = np.ones_like(b)
        out[base + ".bn.bias"] = b
        out[base + ".bn._mean"] = np.zeros_like(b)
        out[base + ".bn._variance"] = np.full_like(b, 1.0 - _BN_EPS)   # var + eps == 1
        notes["unfused"] += 1
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
    if _is_module(model):
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
        state = _normalise_keys(model)
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

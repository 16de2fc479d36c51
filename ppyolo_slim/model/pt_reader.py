"""Reading PyTorch ``.pt`` files without torch and without running code from them.

A ``.pt`` is a pickle (inside a zip since torch 1.6, or torch's older "legacy" stream) whose
tensors point at raw storages. Unpickling it with ``torch.load`` would import the classes it
names (ultralytics' ``models.yolo``, ...) and may run any code the file names. Here a
restricted unpickler maps torch's tensor-rebuild functions to NumPy, turns every other class
into an inert ``Placeholder`` that only records its state, and refuses every other callable
(``os.system``, ``eval``, ...). The placeholder module tree (``_modules`` / ``_parameters`` /
``_buffers``) then gives the state dict with the names torch would give it.
"""
from __future__ import annotations

import _compat_pickle
import collections
import io
import os
import pickle
import struct
import zipfile
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from .weights import CheckpointError, UnsafeCheckpointError


class ConvertError(CheckpointError):
    """A checkpoint that is readable but holds no model this project can convert (here: no
    torch module tree or state dict; in convert.py: not a YOLOv5 v6+)."""


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

def is_module(obj: Any) -> bool:
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
            if not is_module(sub):
                raise ConvertError(f"{pre}{n} is {sub!r:.60}, expected a torch module")
            modules[pre + n] = sub
            walk(sub, pre + n + ".", depth + 1)

    walk(root, prefix, 0)
    return state, modules


def _tensor_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, np.ndarray) for k, v in obj.items())


def normalise_keys(state: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
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
    if is_module(obj) or _tensor_dict(obj):
        if use != "auto":
            raise ConvertError(f"{src}: [{use!r}] is missing: the file is a bare model or state "
                               f"dict (use auto)")
        return obj, "file"
    if isinstance(obj, dict):
        keys = {"auto": ["ema", "model"], "ema": ["ema"], "model": ["model"]}[use]
        for key in keys + (["state_dict"] if use == "auto" else []):
            v = obj.get(key)
            if is_module(v) or _tensor_dict(v):
                return v, key
            if v is not None and use != "auto":
                raise ConvertError(f"{src}: [{key!r}] is {v!r:.60}, not a model")
        if use != "auto":
            raise ConvertError(f"{src}: [{use!r}] is missing or None")
        top = ", ".join(repr(k) for k in list(obj)[:12])
        raise ConvertError(f"{src}: no model found: expected an ultralytics checkpoint "
                           f"('model' / 'ema') or a state dict; its keys are {top}")
    raise ConvertError(f"{src}: holds {obj!r:.60}, not a model or a state dict")

"""Faster CPU training kernels: SiLU and the convolutions as Paddle custom operators.

Paddle's dygraph CPU kernels are where our training step loses to ultralytics on torch
(benchmarks/README.md, "Against the peer"): SiLU forward and backward take 3-5x PyTorch's
time and Paddle's conv kernels (im2col + GEMM) do not reach the oneDNN library the wheel
ships. Two custom operators, compiled on the machine that trains (paddle.utils.cpp_extension,
a C++ compiler; cached per Paddle version and source):

* ``silu``: ``silu_op.cc``, one vectorised pass forward and backward;
* ``conv``: ``onednn_conv.cc``, 3x3 and larger convolutions forward and backward by the wheel's
  own ``libdnnl.so.3``. It needs oneDNN's headers, which the wheel does not carry:
  ``pip install --no-deps onednn-devel-cpu-gomp==2023.2.0`` (oneDNN 3.2's, into the venv's
  ``include/``), or ``PPYOLO_SLIM_ONEDNN_INCLUDE=<dir>``.

The trainer's ``cpu_ops`` key: ``auto`` (default) uses what can be built and says once what
is missing; ``none`` keeps Paddle's kernels. Layers change class in place (``FastSilu``,
``FastConv2D``: the same parameters and state-dict keys, so checkpoints, EMA copies and
exports see plain layers), and they compute through the custom ops only in training mode
and in dygraph; evaluation, tracing (export, PaddleSlim's pruner) and anything not float32
on the CPU run Paddle's own kernels.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import shutil
import sys
import warnings
from typing import Callable, Dict, Optional

import paddle
import paddle.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
ONEDNN_HEADERS = "onednn-devel-cpu-gomp==2023.2.0"
INCLUDE_ENV = "PPYOLO_SLIM_ONEDNN_INCLUDE"
CACHE_ENV = "PPYOLO_SLIM_CACHE"
_LOADED: Dict[str, object] = {}
_SAID: set = set()


class CpuOpsUnavailable(RuntimeError):
    """An operator cannot be built here; the message says what it needs."""


def cache_dir() -> str:
    root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "ppyolo_slim")
    return os.path.join(root, "ops", f"paddle-{paddle.__version__}")


def onednn_include() -> Optional[str]:
    """oneDNN's headers: $PPYOLO_SLIM_ONEDNN_INCLUDE, else the venv's include/ (where the
    onednn-devel wheel puts them)."""
    for d in (os.environ.get(INCLUDE_ENV), os.path.join(sys.prefix, "include")):
        if d and os.path.isfile(os.path.join(d, "oneapi", "dnnl", "dnnl.hpp")):
            return d
    return None


@contextlib.contextmanager
def _lock(path: str):
    """One process builds, the others wait (DataParallel ranks start together)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        try:
            import fcntl
            fcntl.flock(f, fcntl.LOCK_EX)
        except ImportError:      # not POSIX: no lock
            pass
        yield


def _load(name: str, source: str, **kw):
    if name in _LOADED:             # a build that failed is not tried again in this process
        if isinstance(_LOADED[name], CpuOpsUnavailable):
            raise _LOADED[name]
        return _LOADED[name]
    if not (shutil.which("c++") or shutil.which("g++")):
        raise CpuOpsUnavailable("no C++ compiler (c++ or g++) on PATH")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No ccache found")   # said at its import
        from paddle.utils.cpp_extension import load
    with open(source, "rb") as f:
        # -march=native: a home folder shared by machines with other CPUs must not share builds
        digest = hashlib.sha1(f.read() + repr(sorted(kw.items())).encode() + _cpu_flags()).hexdigest()[:12]
    build = os.path.join(cache_dir(), f"{name}-{digest}")
    # Paddle's builder logs at INFO and prints "Compiling user custom op": not for the user
    quiet = logging.getLogger("utils.cpp_extension")
    level, warn_env = quiet.level, os.environ.get("PYTHONWARNINGS")
    try:
        with _lock(build + ".lock"), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="No ccache found")
            os.makedirs(build, exist_ok=True)
            quiet.setLevel(logging.WARNING)
            os.environ["PYTHONWARNINGS"] = "ignore"    # the build's own python run: its import warnings
            mod = load(name=f"ppyolo_slim_{name}", sources=[source], build_directory=build, verbose=False, **kw)
    except Exception as e:     # a compiler or linker error, an unwritable cache: say it, train on
        lines = [line for line in str(e).splitlines() if line.strip()]     # Paddle's kernels
        _LOADED[name] = CpuOpsUnavailable(f"building {os.path.basename(source)} in {build} failed: "
                                          f"{lines[-1] if lines else type(e).__name__}")
        raise _LOADED[name] from None
    finally:
        quiet.setLevel(level)
        if warn_env is None:
            os.environ.pop("PYTHONWARNINGS", None)
        else:
            os.environ["PYTHONWARNINGS"] = warn_env
    _LOADED[name] = mod
    return mod


def _cpu_flags() -> bytes:
    try:
        with open("/proc/cpuinfo", "rb") as f:
            return next((line for line in f if line.startswith(b"flags")), b"")
    except OSError:
        import platform
        return platform.processor().encode()


def silu_module():
    return _load("silu_op", os.path.join(HERE, "silu_op.cc"),
                 extra_cxx_cflags=["-O3", "-ffast-math", "-march=native", "-fopenmp-simd"])   # all of fast-math: glibc declares its vector expf only under __FAST_MATH__


def conv_module():
    include = onednn_include()
    if include is None:
        raise CpuOpsUnavailable(f"no oneDNN headers: pip install --no-deps {ONEDNN_HEADERS} (or set {INCLUDE_ENV})")
    libs = os.path.join(os.path.dirname(paddle.__file__), "libs")
    if not os.path.isfile(os.path.join(libs, "libdnnl.so.3")):
        raise CpuOpsUnavailable(f"this Paddle wheel has no {libs}/libdnnl.so.3")
    return _load("onednn_conv", os.path.join(HERE, "onednn_conv.cc"), extra_include_paths=[include],
                 extra_ldflags=[f"-L{libs}", "-l:libdnnl.so.3", f"-Wl,-rpath,{libs}"], extra_cxx_cflags=["-O2"])


def _on_op(layer: nn.Layer, x) -> bool:
    return layer.training and paddle.in_dynamic_mode() and x.place.is_cpu_place() and x.dtype == paddle.float32


class FastSilu(nn.Silu):
    def forward(self, x):
        return silu_module().silu_op(x) if _on_op(self, x) else super().forward(x)


class FastConv2D(nn.Conv2D):
    def forward(self, x):
        if not _on_op(self, x):
            return super().forward(x)
        y = conv_module().onednn_conv2d(x, self.weight, int(self._stride[0]), conv_padding(self), 0,
                                        0 if x.stop_gradient else 1)
        return y if self.bias is None else y + self.bias.reshape([1, -1, 1, 1])


def conv_padding(layer: nn.Conv2D) -> Optional[int]:
    """The one symmetric integer padding, else None ('same', 'valid', per-side pads)."""
    p = layer._padding
    pads = [p] * 2 if isinstance(p, int) else list(p) if isinstance(p, (list, tuple)) else []
    ok = len(pads) == 2 and all(isinstance(v, int) for v in pads) and pads[0] == pads[1]
    return pads[0] if ok else None


def conv_fits(layer: nn.Layer, min_kernel: int = 2) -> bool:
    """What the oneDNN op computes: a plain NCHW conv, groups 1, no dilation, one stride, one
    symmetric zero padding, kernel >= ``min_kernel`` (2: 1x1 convs are faster in Paddle's GEMM
    than with the op's layout reorders: benchmarks/README.md, training-speed levers)."""
    return (type(layer) is nn.Conv2D and layer._groups == 1 and layer._data_format == "NCHW"
            and list(layer._dilation) == [1, 1] and len(set(layer._stride)) == 1
            and conv_padding(layer) is not None and layer._padding_mode == "zeros"
            and max(layer._kernel_size) >= min_kernel)


def use_cpu_ops(model: nn.Layer, mode: str = "auto", log: Callable[[str], None] = print) -> Dict[str, int]:
    """Switch ``model``'s SiLUs and fitting convs to the custom ops that build here (``mode``
    auto), or leave them (none). Returns how many layers of each kind were switched."""
    done = {"silu": 0, "conv": 0}
    if mode == "none":
        return done
    missing = []
    for kind, module, cls, fits in (("silu", silu_module, FastSilu, lambda l: type(l) is nn.Silu),
                                    ("conv", conv_module, FastConv2D, conv_fits)):
        try:
            module()
        except CpuOpsUnavailable as e:
            missing.append(f"{kind}: {e}")
            continue
        for layer in model.sublayers(include_self=True):
            if fits(layer):
                layer.__class__ = cls
                done[kind] += 1
    said = "cpu_ops: Paddle's own kernels for " + "; ".join(missing)
    if missing and said not in _SAID:      # once a process (the pipeline trains several stages)
        _SAID.add(said)
        log(said)
    return done

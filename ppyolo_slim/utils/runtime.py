"""Where and how paddle runs: CPU threads, the device, the random seeds."""
from __future__ import annotations

import ctypes
import os
import random

import numpy as np
import paddle


def set_cpu_threads(threads: int, world_size: int = 1) -> int:
    """``import paddle`` pins its CPU kernels to one thread; use the cores we have. Also keeps
    freed memory in the process (``keep_freed_memory``): both are what CPU work needs."""
    n = threads or max(1, (os.cpu_count() or 1) // max(world_size, 1))
    paddle.base.core.set_num_threads(int(n))
    keep_freed_memory()
    return int(n)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3     # mallopt(3) parameters (glibc malloc.h)
MALLOC_ENV = "PPYOLO_SLIM_MALLOC"                 # =default: leave glibc's settings alone


def keep_freed_memory() -> bool:
    """Paddle's CPU tensors come from glibc malloc, which by default serves large blocks with a
    fresh mmap, unmaps them when freed and trims the heap's free top: every new activation
    page-faults its memory in again (about 11,800 faults per YOLOv5n forward at batch 16, 256
    px; 4 of 5 of a large elementwise op's time). With the mmap threshold at glibc's maximum
    (32 MB) and the trim threshold at 1 GB, freed blocks are reused: no faults, the training
    forward about 1.2x faster (benchmarks/README.md, allocator). Memory the process freed
    stays its own until it exits (peak RSS unchanged). glibc (Linux) only; returns whether
    it was applied. ``PPYOLO_SLIM_MALLOC=default`` turns it off."""
    if os.environ.get(MALLOC_ENV, "") == "default" or not hasattr(os, "uname") or os.uname().sysname != "Linux":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):     # not glibc (musl), or no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(_M_MMAP_THRESHOLD, 32 << 20) == 1 and mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1


def select_device(device: str) -> str:
    gpu_ok = paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if device == "auto":
        device = "gpu" if gpu_ok else "cpu"
    if device.startswith("gpu") and not gpu_ok:
        raise RuntimeError(f"device={device!r}, but this Paddle has no usable GPU (CPU wheel, or no "
                           f"CUDA device visible); install paddlepaddle-gpu (see README) or use device=cpu")
    if device != "cpu" and not device.startswith("gpu"):
        raise ValueError(f"device must be auto, cpu, gpu or gpu:N, got {device!r}")
    paddle.set_device(device)
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    paddle.seed(seed)

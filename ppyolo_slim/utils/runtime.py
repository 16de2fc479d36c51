"""Where and how paddle runs: CPU threads, the device, the random seeds."""
from __future__ import annotations

import os
import random

import numpy as np
import paddle


def set_cpu_threads(threads: int, world_size: int = 1) -> int:
    """``import paddle`` pins its CPU kernels to one thread; use the cores we have."""
    n = threads or max(1, (os.cpu_count() or 1) // max(world_size, 1))
    paddle.base.core.set_num_threads(int(n))
    return int(n)


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

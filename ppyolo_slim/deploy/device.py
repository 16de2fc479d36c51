"""GPU buffers for TensorRT I/O without pycuda: Paddle GPU tensors, or cuda-python.

TensorRT only needs device addresses (``set_tensor_address``) and a CUDA stream handle
(``execute_async_v3``). paddlepaddle-gpu, which the project installs on GPU machines
anyway, provides both: ``Tensor.data_ptr()`` and its current stream. cuda-python is the
fallback for an environment with a CPU-only Paddle.

Never run here (no GPU on the machines this was written on); see deploy/README.md. The
cuda-python path's allocation and freeing is tested with a counting fake runtime.
"""
from __future__ import annotations

import functools
import weakref
from typing import Dict, Optional, Sequence

import numpy as np

from .trt_compat import TensorRTUnavailable, cuda_runtime


class DeviceArray:
    """A device buffer of ``nbytes``: ``ptr`` for TensorRT. The backend's ``copy_from_host(buf, a)``
    writes into it and ``to_host(buf, shape, dtype)`` reads its first bytes back.
    ``free()`` releases it now; otherwise it is released when garbage-collected."""

    def __init__(self, ptr: int, nbytes: int, shape=(), dtype=np.float32, impl=None, release=None):
        self.ptr, self.nbytes, self.shape, self.dtype = int(ptr), int(nbytes), tuple(shape), np.dtype(dtype)
        self._impl = impl           # the backend's handle (a paddle tensor keeps the memory alive)
        self._finalizer = weakref.finalize(self, release) if release is not None else None

    def free(self) -> None:
        if self._finalizer is not None:
            self._finalizer()       # runs at most once
        self._impl = None

    def _fits(self, arr: np.ndarray) -> None:
        if arr.nbytes > self.nbytes:
            raise ValueError(f"{arr.nbytes} bytes do not fit a device buffer of {self.nbytes}")


def _nbytes(shape: Sequence[int], dtype) -> int:
    return max(int(np.prod(shape)) * np.dtype(dtype).itemsize, 1)


class _Backend:
    """What both backends share: ``from_host`` is ``empty`` + ``copy_from_host``."""

    def from_host(self, arr: np.ndarray) -> DeviceArray:
        arr = np.ascontiguousarray(arr)
        buf = self.empty(arr.shape, arr.dtype)
        self.copy_from_host(buf, arr)
        return buf


class PaddleBackend(_Backend):
    """Buffers are paddle GPU tensors (uint8, Paddle's caching allocator owns the memory);
    TensorRT runs on Paddle's current stream."""
    name = "paddle"

    def __init__(self, device_id: int = 0):
        import paddle
        if not paddle.device.is_compiled_with_cuda() or paddle.device.cuda.device_count() == 0:
            raise TensorRTUnavailable("paddle has no GPU here (install paddlepaddle-gpu on a GPU machine)")
        self.paddle = paddle
        self.place = paddle.CUDAPlace(device_id)
        paddle.set_device(f"gpu:{device_id}")

    def empty(self, shape: Sequence[int], dtype) -> DeviceArray:
        n = _nbytes(shape, dtype)
        t = self.paddle.empty([n], dtype="uint8")
        return DeviceArray(t.data_ptr(), n, shape, dtype, impl=t)

    def copy_from_host(self, buf: DeviceArray, arr: np.ndarray) -> None:
        arr = np.ascontiguousarray(arr)
        buf._fits(arr)
        src = self.paddle.to_tensor(arr.reshape(-1).view(np.uint8), place=self.place)
        buf._impl[:arr.nbytes] = src          # in place: the buffer's address does not change

    def to_host(self, buf: DeviceArray, shape, dtype) -> np.ndarray:
        n = _nbytes(shape, dtype)
        return buf._impl[:n].numpy().view(np.dtype(dtype)).reshape(shape)

    def stream_handle(self) -> int:
        """Paddle's current CUDA stream; 0 (the legacy default stream) if this Paddle hides it."""
        s = self.paddle.device.cuda.current_stream()
        for obj in (s, getattr(s, "stream_base", None)):
            h = getattr(obj, "cuda_stream", None)
            if h is not None:
                return int(h)
        return 0

    def synchronize(self) -> None:
        self.paddle.device.cuda.synchronize()

    def close(self) -> None:
        pass


def _check_cuda(result):
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA error {err}")
    return rest[0] if len(rest) == 1 else (rest or None)


class CudaPythonBackend(_Backend):
    """Buffers from cudaMalloc, freed with cudaFree (by ``DeviceArray.free``, when a buffer is
    garbage-collected, or by ``close``); copies with cudaMemcpyAsync on one stream of our own.
    ``live``: the device bytes this backend holds, by address."""
    name = "cuda-python"

    def __init__(self, device_id: int = 0, runtime=None):
        try:
            self.rt = runtime or cuda_runtime()
        except ImportError:
            raise TensorRTUnavailable("cuda-python is not installed (pip install cuda-python)") from None
        _check_cuda(self.rt.cudaSetDevice(device_id))
        self.stream = _check_cuda(self.rt.cudaStreamCreate())
        self.live: Dict[int, int] = {}

    _check = staticmethod(_check_cuda)

    def empty(self, shape: Sequence[int], dtype) -> DeviceArray:
        n = _nbytes(shape, dtype)
        ptr = int(_check_cuda(self.rt.cudaMalloc(n)))
        self.live[ptr] = n
        return DeviceArray(ptr, n, shape, dtype, release=functools.partial(_cuda_free, self.rt, self.live, ptr))

    def copy_from_host(self, buf: DeviceArray, arr: np.ndarray) -> None:
        arr = np.ascontiguousarray(arr)
        buf._fits(arr)
        rt = self.rt
        _check_cuda(rt.cudaMemcpyAsync(buf.ptr, arr.ctypes.data, arr.nbytes,
                                       rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))
        _check_cuda(rt.cudaStreamSynchronize(self.stream))   # arr may be freed after return

    def to_host(self, buf: DeviceArray, shape, dtype) -> np.ndarray:
        host = np.empty(shape, dtype)
        if host.nbytes > buf.nbytes:
            raise ValueError(f"reading {host.nbytes} bytes from a device buffer of {buf.nbytes}")
        rt = self.rt
        _check_cuda(rt.cudaMemcpyAsync(host.ctypes.data, buf.ptr, host.nbytes,
                                       rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream))
        _check_cuda(rt.cudaStreamSynchronize(self.stream))
        return host

    def stream_handle(self) -> int:
        return int(self.stream)

    def synchronize(self) -> None:
        _check_cuda(self.rt.cudaStreamSynchronize(self.stream))

    def close(self) -> None:
        """Free every buffer still held and the stream."""
        for ptr in list(self.live):
            _cuda_free(self.rt, self.live, ptr)
        if self.stream is not None:
            _check_cuda(self.rt.cudaStreamDestroy(self.stream))
            self.stream = None


def _cuda_free(rt, live: Dict[int, int], ptr: int) -> None:
    if live.pop(ptr, None) is not None:      # at most once per allocation
        _check_cuda(rt.cudaFree(ptr))


def get_backend(name: Optional[str] = None, device_id: int = 0):
    """``paddle`` (default when paddlepaddle-gpu sees a GPU) or ``cuda-python``."""
    kinds = {"paddle": PaddleBackend, "cuda-python": CudaPythonBackend}
    if name not in (None, "auto") and name not in kinds:
        raise ValueError(f"GPU buffer backend must be auto, paddle or cuda-python, got {name!r}")
    errors = []
    for cls in ([PaddleBackend, CudaPythonBackend] if name in (None, "auto") else [kinds[name]]):
        try:
            return cls(device_id)
        except (TensorRTUnavailable, ImportError, RuntimeError) as e:
            errors.append(f"{cls.name}: {e}")
    raise TensorRTUnavailable("no GPU buffer backend: " + "; ".join(errors))

"""GPU buffers for TensorRT I/O without pycuda: Paddle GPU tensors, or cuda-python.

TensorRT only needs device addresses (``set_tensor_address``) and a CUDA stream handle
(``execute_async_v3``). paddlepaddle-gpu, which the project installs on GPU machines
anyway, provides both: ``Tensor.data_ptr()`` and its current stream. cuda-python is the
fallback for an environment with a CPU-only Paddle.

Never run here (no GPU on the machines this was written on); see deploy/README.md.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .trt_compat import TensorRTUnavailable, cuda_runtime


class DeviceArray:
    """A device buffer: ``ptr`` for TensorRT, ``to_host()`` after the stream is synchronised."""
    ptr: int
    shape: tuple
    dtype: np.dtype

    def to_host(self) -> np.ndarray:
        raise NotImplementedError


class PaddleBackend:
    """Buffers are paddle GPU tensors; TensorRT runs on Paddle's current stream."""
    name = "paddle"

    def __init__(self, device_id: int = 0):
        import paddle
        if not paddle.device.is_compiled_with_cuda() or paddle.device.cuda.device_count() == 0:
            raise TensorRTUnavailable("paddle has no GPU here (install paddlepaddle-gpu on a GPU machine)")
        self.paddle = paddle
        self.place = paddle.CUDAPlace(device_id)
        paddle.set_device(f"gpu:{device_id}")

    def _wrap(self, t, dtype) -> DeviceArray:
        a = DeviceArray()
        a.ptr, a.shape, a.dtype = int(t.data_ptr()), tuple(t.shape), np.dtype(dtype)
        a.tensor = t            # keeps the memory alive as long as the DeviceArray
        a.to_host = t.numpy
        return a

    def from_host(self, arr: np.ndarray) -> DeviceArray:
        arr = np.ascontiguousarray(arr)
        return self._wrap(self.paddle.to_tensor(arr, place=self.place), arr.dtype)

    def empty(self, shape: Sequence[int], dtype) -> DeviceArray:
        return self._wrap(self.paddle.empty(list(shape), dtype=np.dtype(dtype).name), dtype)

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


class CudaPythonBackend:
    """Buffers from cudaMalloc; copies with cudaMemcpyAsync on one stream of our own."""
    name = "cuda-python"

    def __init__(self, device_id: int = 0):
        try:
            self.rt = cuda_runtime()
        except ImportError:
            raise TensorRTUnavailable("cuda-python is not installed (pip install cuda-python)") from None
        self._check(self.rt.cudaSetDevice(device_id))
        self.stream = self._check(self.rt.cudaStreamCreate())

    def _check(self, result):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise RuntimeError(f"CUDA error {err}")
        return rest[0] if len(rest) == 1 else (rest or None)

    def empty(self, shape: Sequence[int], dtype) -> DeviceArray:
        dtype = np.dtype(dtype)
        nbytes = max(int(np.prod(shape)) * dtype.itemsize, 1)
        a = DeviceArray()
        a.ptr, a.shape, a.dtype = int(self._check(self.rt.cudaMalloc(nbytes))), tuple(shape), dtype
        rt, stream, check = self.rt, self.stream, self._check

        def to_host():
            host = np.empty(a.shape, a.dtype)
            check(rt.cudaMemcpyAsync(host.ctypes.data, a.ptr, host.nbytes,
                                     rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream))
            check(rt.cudaStreamSynchronize(stream))
            return host
        a.to_host = to_host
        return a

    def from_host(self, arr: np.ndarray) -> DeviceArray:
        arr = np.ascontiguousarray(arr)
        a = self.empty(arr.shape, arr.dtype)
        self._check(self.rt.cudaMemcpyAsync(a.ptr, arr.ctypes.data, arr.nbytes,
                                            self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))
        self._check(self.rt.cudaStreamSynchronize(self.stream))   # arr may be freed after return
        return a

    def stream_handle(self) -> int:
        return int(self.stream)

    def synchronize(self) -> None:
        self._check(self.rt.cudaStreamSynchronize(self.stream))


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

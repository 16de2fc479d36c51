"""GPU buffer handling of ppyolo_slim/deploy (device.py, trt_runtime.py) against a counting fake
CUDA runtime: every cudaMalloc is freed, and repeated inference reuses its buffers.

The fake's "device memory" is host memory (ctypes buffers), so cudaMemcpyAsync is a memmove
and the data path (host -> device -> engine -> device -> host) is checked too."""
import ctypes
import gc
import types

import numpy as np
import pytest

import ppyolo_slim  # noqa: F401  (import order)
from ppyolo_slim.deploy.device import CudaPythonBackend
from ppyolo_slim.deploy.trt_runtime import IOBuffers, TrtEngine


class FakeCudaRuntime:
    """cuda-python's runtime calls ppyolo_slim/deploy/device.py makes, returning (err, value) tuples."""
    cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)

    def __init__(self):
        self.mem = {}            # ptr -> ctypes buffer
        self.mallocs = self.frees = 0
        self.streams = set()

    @property
    def live_bytes(self):
        return sum(len(b) for b in self.mem.values())

    def cudaSetDevice(self, i):
        return (0,)

    def cudaStreamCreate(self):
        self.streams.add(77)
        return 0, 77

    def cudaStreamDestroy(self, s):
        self.streams.remove(s)
        return (0,)

    def cudaStreamSynchronize(self, s):
        assert s in self.streams
        return (0,)

    def cudaMalloc(self, n):
        buf = ctypes.create_string_buffer(n)
        self.mem[ctypes.addressof(buf)] = buf
        self.mallocs += 1
        return 0, ctypes.addressof(buf)

    def cudaFree(self, ptr):
        if ptr not in self.mem:
            return (1,)          # cudaErrorInvalidValue: a double free or a foreign pointer
        del self.mem[ptr]
        self.frees += 1
        return (0,)

    def cudaMemcpyAsync(self, dst, src, n, kind, stream):
        dev = dst if kind == 1 else src
        base = [p for p, b in self.mem.items() if p <= dev < p + len(b)]
        assert base and dev + n <= base[0] + len(self.mem[base[0]]), "copy outside a device buffer"
        ctypes.memmove(dst, src, n)
        return (0,)

    def array(self, ptr, shape, dtype):
        n = int(np.prod(shape)) * np.dtype(dtype).itemsize
        return np.frombuffer((ctypes.c_char * n).from_address(ptr), dtype).reshape(shape)


class FakeContext:
    """IExecutionContext: the 'engine' writes output[b, n, c] = sum of image b + n + c."""

    def __init__(self, rt):
        self.rt, self.addr, self.shape = rt, {}, None

    def set_input_shape(self, name, shape):
        self.shape = shape
        return True

    def get_tensor_shape(self, name):
        return (self.shape[0], 5, 8)

    def set_tensor_address(self, name, ptr):
        self.addr[name] = ptr
        return True

    def execute_async_v3(self, stream):
        x = self.rt.array(self.addr["images"], self.shape, np.float32)
        out = self.rt.array(self.addr["output"], (self.shape[0], 5, 8), np.float32)
        out[:] = x.sum(axis=(1, 2, 3))[:, None, None] + np.arange(5)[:, None] + np.arange(8)
        return True


def fake_engine(rt, max_batch=8):
    eng = object.__new__(TrtEngine)      # no TensorRT here: wire what __init__ would have made
    eng.trt = types.SimpleNamespace(nptype=lambda dt: np.float32)
    eng.engine = types.SimpleNamespace(get_tensor_dtype=lambda name: "float")
    eng.side = {"batch": {"min": 1, "opt": max_batch, "max": max_batch}}
    eng.context = FakeContext(rt)
    eng.input_name, eng.inputs, eng.outputs = "images", ["images"], ["output"]
    eng.dev = CudaPythonBackend(runtime=rt)
    eng.buffers = IOBuffers(eng.dev)
    eng._allocator = None
    return eng


def test_repeated_inference_reuses_its_buffers_and_close_frees_them():
    rt = FakeCudaRuntime()
    eng = fake_engine(rt)
    rng = np.random.default_rng(0)
    per_batch8 = 8 * 3 * 32 * 32 * 4 + 8 * 5 * 8 * 4
    for i in range(40):                       # alternating batches, as gpu_check's timing does
        b = 8 if i % 2 == 0 else 1
        x = rng.random((b, 3, 32, 32), dtype=np.float32)
        out = eng.infer(x)["output"]
        want = x.sum(axis=(1, 2, 3), dtype=np.float32)[:, None, None] + np.arange(5)[:, None] + np.arange(8)
        np.testing.assert_allclose(out, want, rtol=1e-5)
        assert out.shape == (b, 5, 8)
    assert rt.mallocs == 2 and rt.frees == 0          # one input and one output buffer, reused
    assert rt.live_bytes == per_batch8
    eng.close()
    assert rt.live_bytes == 0 and rt.frees == 2 and not rt.streams


def test_a_larger_batch_replaces_the_buffer_instead_of_adding_one():
    rt = FakeCudaRuntime()
    eng = fake_engine(rt)
    for b in (1, 2, 8, 1, 8, 2):
        eng.infer(np.zeros((b, 3, 32, 32), np.float32))
    assert rt.mallocs == 6 and rt.frees == 4          # grown twice (1 -> 2 -> 8), the old ones freed
    assert rt.live_bytes == 8 * 3 * 32 * 32 * 4 + 8 * 5 * 8 * 4
    eng.close()
    assert rt.live_bytes == 0


def test_device_arrays_are_freed_when_dropped_and_never_twice():
    rt = FakeCudaRuntime()
    dev = CudaPythonBackend(runtime=rt)
    a = dev.from_host(np.arange(10, dtype=np.float32))
    np.testing.assert_array_equal(dev.to_host(a, (10,), np.float32), np.arange(10))
    del a
    gc.collect()
    assert rt.frees == 1 and rt.live_bytes == 0
    b = dev.empty((4,), np.float32)
    b.free()
    b.free()                                          # idempotent: cudaFree would report an error
    assert rt.frees == 2
    keep = dev.empty((3,), np.int32)
    dev.close()
    assert rt.live_bytes == 0 and rt.frees == 3 and keep.ptr


def test_copy_larger_than_the_buffer_is_refused():
    rt = FakeCudaRuntime()
    dev = CudaPythonBackend(runtime=rt)
    buf = dev.empty((2,), np.float32)
    with pytest.raises(ValueError, match="do not fit"):
        dev.copy_from_host(buf, np.zeros(3, np.float32))
    dev.close()


def test_calibrator_keeps_one_device_buffer(tmp_path):
    """INT8 calibration copies each batch into the same buffer (TensorRT reads it before asking
    for the next one)."""
    import cv2
    from ppyolo_slim.deploy.calibrator import CalibrationImages, CalibratorLogic
    for i in range(6):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((20, 20, 3), 40 * i, np.uint8))
    rt = FakeCudaRuntime()
    dev = CudaPythonBackend(runtime=rt)
    calib = CalibratorLogic()
    calib._setup(CalibrationImages(str(tmp_path), 32, batch=2), "", dev, log=None)
    ptrs = [calib.get_batch(["images"]) for _ in range(3)]
    assert calib.get_batch(["images"]) is None
    assert len({p[0] for p in ptrs}) == 1 and rt.mallocs == 1
    last = rt.array(ptrs[-1][0], (2, 3, 32, 32), np.float32)
    assert np.allclose(last[1, :, 16, 16], 200 / 255)
    dev.close()
    assert rt.live_bytes == 0


class FakeNMSContext(FakeContext):
    """An engine whose second output has a data-dependent row count (INMSLayer's): TensorRT asks
    the output allocator for its memory during execution and reports the shape."""

    def __init__(self, rt):
        super().__init__(rt)
        self.allocators = {}

    def get_tensor_shape(self, name):
        return (self.shape[0], 5, 8) if name == "output" else (-1, 3)

    def set_output_allocator(self, name, allocator):
        self.allocators[name] = allocator
        return True

    def execute_async_v3(self, stream):
        super().execute_async_v3(stream)
        rows = 2 * self.shape[0]                       # as many rows as the data says
        alloc = self.allocators["nms_indices"]
        ptr = alloc.reallocate_output("nms_indices", 0, rows * 3 * 4, 256)
        self.rt.array(ptr, (rows, 3), np.int32)[:] = np.arange(rows * 3).reshape(rows, 3)
        alloc.notify_shape("nms_indices", (rows, 3))
        return True


def test_data_dependent_outputs_use_the_output_allocator_and_its_buffer_is_reused():
    rt = FakeCudaRuntime()
    eng = fake_engine(rt)
    eng.trt = types.SimpleNamespace(nptype=lambda dt: np.int32 if dt == "int" else np.float32,
                                    IOutputAllocator=type("IOutputAllocator", (), {"__init__": lambda self: None}))
    eng.engine = types.SimpleNamespace(get_tensor_dtype=lambda name: "int" if name == "nms_indices" else "float")
    eng.context = FakeNMSContext(rt)
    eng.outputs = ["output", "nms_indices"]
    for b in (8, 1, 8):
        out = eng.infer(np.ones((b, 3, 32, 32), np.float32))
        assert out["nms_indices"].shape == (2 * b, 3)
        np.testing.assert_array_equal(out["nms_indices"], np.arange(6 * b).reshape(2 * b, 3))
    assert rt.mallocs == 3 and rt.frees == 0               # input, output, the NMS rows: reused
    eng.close()
    assert rt.live_bytes == 0

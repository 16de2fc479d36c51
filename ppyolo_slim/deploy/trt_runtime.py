"""Run a built engine: named I/O tensors, ``execute_async_v3``, GPU buffers from device.py.

:class:`TrtEngine` is the raw runner (numpy batch in, dict of numpy outputs back).
:class:`TrtPredictor` puts it behind ppyolo_slim.engine.predict's predictor interface
(``images [B,3,S,S] -> [B,N,5+nc]``), so the project's evaluator can score an engine.
Importable without TensorRT; constructing either without TensorRT or a GPU raises
TensorRTUnavailable (TrtEngine's with the install hint, TrtPredictor's in one line for the tools).

NEVER RUN on the machines this was written on (no GPU, no TensorRT): see deploy/README.md.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List

import numpy as np

from .trt_compat import TensorRTUnavailable, require_tensorrt_and_gpu


def read_sidecar(engine_path: str) -> Dict[str, Any]:
    path = engine_path + ".json"
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: the engine's sidecar is missing (trt_build.py writes it next "
                                "to the engine); it holds the class names, image size and I/O layout")
    with open(path) as f:
        side = json.load(f)
    for key in ("input", "outputs", "img_size", "names"):
        if key not in side:
            raise ValueError(f"{path}: not a ppyolo-slim engine sidecar (no {key!r})")
    return side


def nms_detections(outputs: Dict[str, np.ndarray], batch: int = None, max_det: int = None) -> List[np.ndarray]:
    """Per image [n,6] (x1,y1,x2,y2,score,cls) in input pixels, from an engine's NMS outputs:
    EfficientNMS_TRT's (num_detections, detection_*: fixed shapes, zero-padded) or INMSLayer's
    (nms_indices [M,3] = image, class, box; nms_boxes; nms_scores: sorted by image, then score),
    of which the best ``max_det`` per image are kept (INMSLayer caps per class only)."""
    if "nms_indices" in outputs:
        idx = outputs["nms_indices"].reshape(-1, 3)
        n_img = int(batch) if batch is not None else (int(idx[:, 0].max()) + 1 if len(idx) else 0)
        res = []
        for i in range(n_img):
            rows = np.nonzero(idx[:, 0] == i)[0]
            rows = rows[np.argsort(-outputs["nms_scores"].reshape(-1)[rows], kind="stable")][:max_det]
            res.append(np.concatenate([outputs["nms_boxes"].reshape(-1, 4)[rows].astype(np.float32),
                                       outputs["nms_scores"].reshape(-1)[rows, None].astype(np.float32),
                                       idx[rows, 1:2].astype(np.float32)], 1))
        return res
    num = outputs["num_detections"].reshape(-1)
    res = []
    for i, n in enumerate(num):
        n = int(n)
        res.append(np.concatenate([outputs["detection_boxes"][i, :n].astype(np.float32),
                                   outputs["detection_scores"][i, :n, None].astype(np.float32),
                                   outputs["detection_classes"][i, :n, None].astype(np.float32)], 1))
    return res


class IOBuffers:
    """One device buffer per I/O tensor, reused across calls: a call needing more bytes than the
    buffer holds (a larger batch) frees it and allocates a bigger one, so memory stays bounded by
    the largest batch seen, whatever the number of calls."""

    def __init__(self, dev):
        self.dev = dev
        self.bufs: Dict[str, Any] = {}

    def get(self, name: str, shape, dtype):
        need = max(int(np.prod(shape)) * np.dtype(dtype).itemsize, 1)
        buf = self.bufs.get(name)
        if buf is None or buf.nbytes < need:
            if buf is not None:
                buf.free()
            buf = self.bufs[name] = self.dev.empty(shape, dtype)
        return buf

    def close(self) -> None:
        for buf in self.bufs.values():
            buf.free()
        self.bufs.clear()


def _output_allocator(trt, buffers: IOBuffers):
    """A trt.IOutputAllocator that hands out the IOBuffers' memory (grown when too small) and
    records the shape TensorRT reports for each data-dependent output."""
    base = trt.IOutputAllocator

    class OutputAllocator(base):
        def __init__(self):
            base.__init__(self)      # the pybind base must be initialised explicitly
            self.shapes: Dict[str, tuple] = {}

        def reallocate_output(self, tensor_name, memory, size, alignment):
            return buffers.get(tensor_name, (max(int(size), 1),), np.uint8).ptr

        def notify_shape(self, tensor_name, shape):
            self.shapes[tensor_name] = tuple(int(d) for d in shape)

    return OutputAllocator()


class TrtEngine:
    def __init__(self, engine_path: str, device: str = "auto", device_id: int = 0):
        trt, self.gpu = require_tensorrt_and_gpu()     # first: nothing below works without them
        if not os.path.isfile(engine_path):
            raise FileNotFoundError(f"{engine_path}: no such engine file")
        self.side = read_sidecar(engine_path)
        from .device import get_backend
        self.trt = trt
        self.dev = get_backend(device, device_id)
        self.logger = trt.Logger(trt.Logger.WARNING)
        trt.init_libnvinfer_plugins(self.logger, "")     # EfficientNMS_TRT, if the engine has it
        runtime = trt.Runtime(self.logger)
        with open(engine_path, "rb") as f:
            engine = runtime.deserialize_cuda_engine(f.read())
        if engine is None:
            raise RuntimeError(f"{engine_path}: TensorRT {trt.__version__} cannot load this engine (built "
                               f"with TensorRT {self.side.get('tensorrt_version')} on "
                               f"{self.side.get('gpu')}? engines are tied to both)")
        self.runtime, self.engine = runtime, engine
        self.context = engine.create_execution_context()
        self.inputs: List[str] = []
        self.outputs: List[str] = []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (self.inputs if is_input else self.outputs).append(name)
        if len(self.inputs) != 1:
            raise ValueError(f"{engine_path}: expected one input tensor, found {self.inputs}")
        self.input_name = self.inputs[0]
        self.buffers = IOBuffers(self.dev)
        self._allocator = None

    def _dtype(self, name: str):
        return np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(name)))

    def infer(self, images: np.ndarray, copy_out: bool = True) -> Dict[str, np.ndarray]:
        """images float32 [B,3,H,W] -> {output name: array}; B within the engine's batch range.
        The device buffers are the engine's own and reused (IOBuffers): no allocation per call."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        b = self.side["batch"]
        if not b["min"] <= images.shape[0] <= b["max"]:
            raise ValueError(f"batch {images.shape[0]} is outside the engine's range {b['min']}..{b['max']}")
        context, dev = self.context, self.dev
        context.set_input_shape(self.input_name, tuple(images.shape))
        d_in = self.buffers.get(self.input_name, images.shape, images.dtype)
        dev.copy_from_host(d_in, images)
        context.set_tensor_address(self.input_name, d_in.ptr)
        shapes = {}
        for name in self.outputs:
            shapes[name] = tuple(context.get_tensor_shape(name))
            if any(d < 0 for d in shapes[name]):    # data-dependent (INMSLayer's rows): TensorRT asks
                if self._allocator is None:         # for the memory once it knows the size
                    self._allocator = _output_allocator(self.trt, self.buffers)
                context.set_output_allocator(name, self._allocator)
                continue
            buf = self.buffers.get(name, shapes[name], self._dtype(name))
            context.set_tensor_address(name, buf.ptr)
        if not context.execute_async_v3(dev.stream_handle()):
            raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log)")
        dev.synchronize()
        if not copy_out:
            return {}
        for name, shape in shapes.items():
            if any(d < 0 for d in shape):
                shapes[name] = self._allocator.shapes[name]
        return {n: dev.to_host(self.buffers.bufs[n], shapes[n], self._dtype(n)) for n in self.outputs}

    def close(self) -> None:
        """Free the device buffers (and the cuda-python stream); the engine is unusable after."""
        self.buffers.close()
        self.dev.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def detections(self, outputs: Dict[str, np.ndarray], batch: int = None) -> List[np.ndarray]:
        return nms_detections(outputs, batch, (self.side.get("nms") or {}).get("max_output_boxes"))


class TrtPredictor:
    """A TensorRT engine (built without --nms) as a ppyolo_slim predictor."""
    backend = "tensorrt"
    fixed_size = True
    stride = 32

    def __init__(self, path: str, device: str = "auto"):
        # the tools pass auto / cpu / gpu / gpu:N; TensorRT always runs on a GPU
        dev_id = int(device.split(":")[1]) if device.startswith("gpu:") else 0
        backend = device if device in ("paddle", "cuda-python") else "auto"
        try:
            self.runner = TrtEngine(path, device=backend, device_id=dev_id)
        except TensorRTUnavailable as e:   # the tools print one line; the install steps are in the README
            missing = "; ".join(p.rstrip(".") for p in e.problems)
            raise TensorRTUnavailable(f"--engine needs TensorRT and an NVIDIA GPU: {missing} "
                                      "(how to install: deploy/README.md)", e.problems) from None
        side = self.runner.side
        if side.get("nms"):
            raise ValueError(f"{path}: built with --nms; its outputs are final detections, not the "
                             "[B,N,5+nc] predictions a predictor returns (use deploy/trt_infer.py)")
        self.names = list(side["names"])
        outs = [o["name"] for o in side["outputs"]]
        if len(outs) != 1:
            raise ValueError(f"{path}: expected one [B,N,5+nc] output, the engine has {outs}")
        self.output_name = outs[0]      # "output" from trt_build.py; the ONNX export's name otherwise
        h, w = side["img_size"]
        self.img_size = int(h) if h == w else (int(h), int(w))
        b = side["batch"]
        self.batch = None if b["min"] != b["max"] else int(b["max"])
        self.max_batch = int(b["max"])
        self.source = os.path.abspath(path)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        outs = []
        for s in range(0, images.shape[0], self.max_batch):
            chunk = images[s:s + self.max_batch]
            n = chunk.shape[0]
            if self.batch and n < self.batch:      # a fixed-batch engine: zero-pad, drop the padding
                chunk = np.concatenate([chunk, np.zeros((self.batch - n,) + chunk.shape[1:], chunk.dtype)])
            outs.append(self.runner.infer(chunk)[self.output_name][:n])
        return np.concatenate(outs)

    def describe(self) -> Dict[str, Any]:
        return {"backend": self.backend, "source": self.source, "img_size": self.img_size,
                "fixed_size": True, "batch": self.batch, "names": self.names}

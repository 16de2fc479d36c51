"""INT8 calibration (TensorRT 10): an entropy calibrator over a folder of images.

Images are letterboxed exactly as training and inference see them
(``ppyolo_slim.data.letterbox``, pad 114, RGB, /255), so the activation ranges TensorRT
measures are the ones the engine will meet. The calibration table is cached: a second
build with the same ``--calib-cache`` skips calibration (delete the file to redo it).

TensorRT 10 only (11 removed implicit quantization): the explicit Q/DQ network built from a
tools/quant.py folder (``--int8-from``, qdq_scales.py) is the INT8 path of both majors.
Two things the calibration must get right: TensorRT calibrates at the optimisation
profile's opt shape, so the batches have the opt batch (engine.py); and the box decode after
the Detect convs computes pixel coordinates, which an 8-bit grid would ruin (boxes off by tens
of px), so :func:`pin_float32` holds those layers in FP32.

The calibrator's logic lives in :class:`CalibratorLogic` (plain Python, tested on the
CPU with a fake device); :func:`make_entropy_calibrator` mixes it into
``trt.IInt8EntropyCalibrator2``, which only exists with real TensorRT.
"""
from __future__ import annotations

import os
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

IMG_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def load_letterboxed(path: str, img_size: Tuple[int, int]) -> np.ndarray:
    """[3, H, W] float32 RGB in [0, 1], letterboxed as in training."""
    import cv2
    from ppyolo_slim.data import letterbox
    data = np.fromfile(path, dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise ValueError(f"{path}: cannot be read as an image")
    img, _, _ = letterbox(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), tuple(img_size))
    return np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32) / 255.0


class CalibrationImages:
    """Batches [B, 3, H, W] from the image files of a folder (sorted; at most ``limit``).
    A last incomplete batch is dropped: TensorRT calibrates with a fixed batch size."""

    def __init__(self, folder: str, img_size: Union[int, Sequence[int]], batch: int = 8,
                 limit: Optional[int] = 512):
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"--calib-dir {folder}: no such folder")
        self.img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.batch = int(batch)
        files = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(IMG_EXTS))
        self.files: List[str] = files[:limit] if limit else files
        if len(self.files) < self.batch:
            raise ValueError(f"--calib-dir {folder}: {len(self.files)} images, need at least one batch of "
                             f"{self.batch} (TensorRT suggests ~500 representative images)")

    def __len__(self) -> int:
        return len(self.files) // self.batch

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            chunk = self.files[i * self.batch:(i + 1) * self.batch]
            yield np.stack([load_letterboxed(f, self.img_size) for f in chunk])


class CalibratorLogic:
    """get_batch / cache methods of a TensorRT INT8 calibrator, independent of TensorRT.

    ``device``: an object with ``from_host(np) -> buffer with .ptr`` (device.py)."""

    def _setup(self, batches: CalibrationImages, cache_file: str, device, log=print):
        self.batches, self.cache_file, self.device, self.log = batches, cache_file, device, log
        self._it = None
        self._current = None     # the device buffer TensorRT is reading; kept alive until the next call
        self.seen = 0

    def get_batch_size(self) -> int:
        return self.batches.batch

    def get_batch(self, names, *unused) -> Optional[List[int]]:
        if self._it is None:
            self._it = iter(self.batches)
        try:
            b = next(self._it)
        except StopIteration:
            return None          # tells TensorRT calibration is over
        cur = self._current
        if cur is not None and hasattr(self.device, "copy_from_host") and cur.nbytes >= b.nbytes:
            self.device.copy_from_host(cur, b)       # one device buffer for the whole calibration
        else:
            self._current = self.device.from_host(b)
        self.seen += 1
        if self.log:
            self.log(f"calibration batch {self.seen}/{len(self.batches)}")
        return [int(self._current.ptr)] * len(names)

    def read_calibration_cache(self) -> Optional[bytes]:
        if self.cache_file and os.path.isfile(self.cache_file):
            if self.log:
                self.log(f"using the calibration cache {self.cache_file} (delete it to recalibrate)")
            with open(self.cache_file, "rb") as f:
                return f.read()
        return None

    def write_calibration_cache(self, cache) -> None:
        if self.cache_file:
            from ppyolo_slim.utils.io import atomic_write_bytes
            atomic_write_bytes(self.cache_file, bytes(cache))


def pin_float32(network, config, trt, names: Sequence[str]) -> int:
    """Hold the layers ``names`` (the decode) in FP32 in a weakly typed INT8 build: precision and
    output types FP32, and the builder told to obey (not just prefer) them. Layers with a
    non-float output (NMS indices, int32 constants) are left alone. Returns how many were pinned."""
    wanted, n = set(names), 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        outs = [layer.get_output(j) for j in range(layer.num_outputs)]
        if layer.name not in wanted or any(t.dtype != trt.float32 for t in outs):
            continue
        layer.precision = trt.float32
        for j in range(len(outs)):
            layer.set_output_type(j, trt.float32)
        n += 1
    config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    return n


def make_entropy_calibrator(trt, batches: CalibrationImages, cache_file: str, device, log=print):
    """An ``IInt8EntropyCalibrator2`` (TensorRT 10) over ``batches``."""
    base = trt.IInt8EntropyCalibrator2

    class EntropyCalibrator(CalibratorLogic, base):
        def __init__(self):
            base.__init__(self)      # the pybind base must be initialised explicitly
            self._setup(batches, cache_file, device, log)

    return EntropyCalibrator()

"""Predictors (one interface over dygraph, ONNX Runtime and Paddle Inference) and
inference on image files.

A predictor is a callable ``images float32 [B,3,S,S] RGB in [0,1] -> np [B,N,5+nc]``
(the ultralytics YOLOv5 output layout) with a few attributes the tools need:
``names``, ``img_size`` (the size it was made for), ``fixed_size`` (only that size is
accepted), ``batch`` (a fixed batch it needs, else None), ``backend`` and ``source``.
``evaluate_model`` and ``infer_images`` take any of them.

Adding a backend: write a class with that interface whose constructor takes
``(path, device=...)`` and point its ``BACKENDS`` entry at it. The tools' ``--onnx`` and
``--model-dir`` flags already dispatch through ``BACKENDS``.
"""
from __future__ import annotations

import glob
import importlib
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .postprocess import non_max_suppression, scale_boxes

# flag name -> "module:factory" (factory(path, device=...) -> Predictor). Imported lazily,
# so `--weights` needs no onnxruntime and `--onnx` needs no paddle dygraph.
BACKENDS: Dict[str, str] = {
    "weights": "ppyolo_slim.engine.predict:DygraphPredictor.from_weights",
    "onnx": "ppyolo_slim.export.runtime:OnnxPredictor",                   # export helper (issue 6)
    "model_dir": "ppyolo_slim.export.runtime:PaddleInferencePredictor",
    "engine": "ppyolo_slim.deploy.trt_runtime:TrtPredictor",   # needs TensorRT and a GPU
}
BACKEND_FLAGS = {"weights": "--weights", "onnx": "--onnx", "model_dir": "--model-dir", "engine": "--engine"}

IMG_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class PredictorUnavailable(RuntimeError):
    """A backend that this installation cannot run (module missing, runtime not installed)."""


class Predictor:
    """Base of all predictors; subclasses implement ``__call__``."""
    backend: str = "?"
    source: str = ""
    names: List[str] = []
    img_size: Optional[int] = None
    fixed_size: bool = False
    batch: Optional[int] = None
    stride: int = 32

    def __call__(self, images: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> Dict[str, Any]:
        return {"backend": self.backend, "source": self.source, "img_size": self.img_size,
                "fixed_size": self.fixed_size, "batch": self.batch, "names": list(self.names)}


class DygraphPredictor(Predictor):
    """A Paddle dygraph YOLOv5 Layer (eval mode) behind the predictor interface."""
    backend = "dygraph"

    def __init__(self, model, names: Optional[Sequence[str]] = None, source: str = ""):
        meta = getattr(model, "meta", None)
        self.model = model
        self.model.eval()
        self.names = list(names if names is not None else (meta.names if meta else []))
        self.img_size = int(meta.img_size) if meta is not None else None
        self.source = source

    @classmethod
    def from_weights(cls, path: str, device: str = "auto") -> "DygraphPredictor":
        from .. import load_model
        set_device(device)
        return cls(load_model(path), source=os.path.abspath(path))

    def __call__(self, images: np.ndarray) -> np.ndarray:
        import paddle
        images = np.ascontiguousarray(images, dtype=np.float32)
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] % 32 or images.shape[3] % 32:
            raise ValueError(f"expected images [B,3,H,W] with H, W multiples of 32, got {list(images.shape)}")
        was_training = self.model.training
        self.model.eval()
        try:
            with paddle.no_grad():
                out = self.model(paddle.to_tensor(images))
        finally:
            if was_training:
                self.model.train()
        return out.numpy()


def set_device(device: str) -> None:
    """auto (Paddle's default), cpu, gpu or gpu:N for the dygraph backend."""
    import paddle
    if device and device != "auto":
        try:
            paddle.set_device(device)
        except (ValueError, RuntimeError) as e:
            raise PredictorUnavailable(f"device {device!r} is not available here ({e})") from None
    if paddle.get_device() == "cpu":
        from ..utils.runtime import set_cpu_threads
        set_cpu_threads(0)


def load_predictor(kind: str, path: str, **kw) -> Predictor:
    """The predictor of backend ``kind`` (a BACKENDS key) for ``path``."""
    if kind not in BACKENDS:
        raise ValueError(f"unknown backend {kind!r}; known: {', '.join(BACKENDS)}")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file or folder ({BACKEND_FLAGS.get(kind, kind)})")
    mod_name, attr = BACKENDS[kind].split(":")
    try:
        obj: Any = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        raise PredictorUnavailable(
            f"{BACKEND_FLAGS.get(kind, kind)} is not available in this installation "
            f"({mod_name}: {e})") from None
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj(path, **kw)


def add_predictor_args(parser, required: bool = True) -> None:
    """--weights / --onnx / --model-dir (one of them) and --device."""
    g = parser.add_mutually_exclusive_group(required=required)
    g.add_argument("--weights", help="a .pdparams checkpoint (Paddle dygraph)")
    g.add_argument("--onnx", help="an exported model.onnx (ONNX Runtime)")
    g.add_argument("--model-dir", dest="model_dir",
                   help="an exported Paddle inference model folder (Paddle Inference)")
    g.add_argument("--engine", help="a TensorRT engine built by deploy/trt_build.py (TensorRT and a GPU)")
    parser.add_argument("--device", default="auto", help="auto, cpu, gpu or gpu:N (default auto)")


def predictor_from_args(args) -> Predictor:
    for kind in BACKENDS:
        path = getattr(args, kind, None)
        if path:
            return load_predictor(kind, path, device=args.device)
    raise ValueError("give one of --weights, --onnx, --model-dir or --engine")


def run_predictor(predict_fn: Callable[[np.ndarray], np.ndarray], images: np.ndarray) -> np.ndarray:
    """Call ``predict_fn``; a predictor with a fixed ``batch`` (static export) gets chunks of
    that size, the last one zero-padded, and the padded rows are dropped."""
    batch = getattr(predict_fn, "batch", None)
    if not batch or images.shape[0] == batch:
        return np.asarray(predict_fn(images))
    outs = []
    for s in range(0, images.shape[0], batch):
        chunk = images[s:s + batch]
        n = chunk.shape[0]
        if n < batch:
            chunk = np.concatenate([chunk, np.zeros((batch - n,) + chunk.shape[1:], chunk.dtype)])
        outs.append(np.asarray(predict_fn(chunk))[:n])
    return np.concatenate(outs)


def check_img_size(img_size: int, predictor: Optional[Predictor] = None) -> Tuple[int, Optional[str]]:
    """(size to use, a warning or None): a multiple of the stride, and the exported size for a
    fixed-size model (where any other size is an error)."""
    stride = getattr(predictor, "stride", 32) or 32
    if predictor is not None and predictor.fixed_size and predictor.img_size:
        if img_size and img_size != predictor.img_size:
            raise ValueError(f"{predictor.source}: exported for {predictor.img_size} px input; "
                             f"--img-size {img_size} cannot be used (re-export, or drop --img-size)")
        return int(predictor.img_size), None
    if img_size <= 0:
        raise ValueError(f"image size must be positive, got {img_size}")
    new = int(np.ceil(img_size / stride) * stride)
    return new, (f"image size {img_size} is not a multiple of {stride}; using {new}" if new != img_size else None)


# ---------------------------------------------------------------- images on disk

def list_images(source: str) -> List[str]:
    """An image file, a folder (its image files, sorted, not recursive) or a glob pattern."""
    if any(ch in source for ch in "*?["):
        files = sorted(glob.glob(source))
    elif os.path.isdir(source):
        files = sorted(os.path.join(source, f) for f in os.listdir(source)
                       if f.lower().endswith(IMG_EXTS) and os.path.isfile(os.path.join(source, f)))
    elif os.path.isfile(source):
        files = [source]
    else:
        raise FileNotFoundError(f"{source}: no such image file or folder")
    if not files:
        raise FileNotFoundError(f"{source}: no image files found (looked for {', '.join(IMG_EXTS)})")
    return files


def read_image_rgb(path: str) -> Optional[np.ndarray]:
    """HxWx3 uint8 RGB, or None when the file cannot be decoded as an image."""
    import cv2
    from ..compat import imdecode_color
    try:
        data = np.fromfile(path, dtype=np.uint8)   # imdecode also handles non-ASCII paths
    except OSError:
        return None
    if not data.size:
        return None
    img = imdecode_color(data, path)
    if img is None or img.ndim != 3 or min(img.shape[:2]) < 1:
        return None
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def predict_image(predictor: Callable[[np.ndarray], np.ndarray], img: np.ndarray, img_size: int,
                  conf_thres: float = 0.25, iou_thres: float = 0.45, max_det: int = 300,
                  agnostic: bool = False, classes: Optional[Sequence[int]] = None) -> np.ndarray:
    """Detections [n,6] (x1,y1,x2,y2,score,cls) in ``img``'s pixels (img: HxWx3 uint8 RGB)."""
    from ..data import letterbox
    lb, ratio, pad = letterbox(img, img_size)
    x = (np.ascontiguousarray(lb.transpose(2, 0, 1))[None].astype(np.float32)) / 255.0
    pred = run_predictor(predictor, x)
    d = non_max_suppression(pred, conf_thres, iou_thres, max_det=max_det, agnostic=agnostic,
                            classes=classes)[0]
    d[:, :4] = scale_boxes(d[:, :4], ratio, pad, img.shape[:2])
    return d


def detections_to_json(dets: np.ndarray, names: Sequence[str]) -> List[Dict[str, Any]]:
    from .draw import class_name
    return [{"class_id": int(c), "class_name": class_name(names, int(c)), "score": round(float(s), 5),
             "box": [round(float(v), 2) for v in (x1, y1, x2, y2)]}
            for x1, y1, x2, y2, s, c in np.asarray(dets).reshape(-1, 6)]


def _output_stems(files: Sequence[str]) -> List[str]:
    """Output base names: the file's stem, or stem_ext where two inputs share a stem."""
    stems = [os.path.splitext(os.path.basename(f))[0] for f in files]
    dup = {s for s in stems if stems.count(s) > 1}
    out = []
    for f, s in zip(files, stems):
        out.append(f"{s}_{os.path.splitext(f)[1].lstrip('.').lower()}" if s in dup else s)
    if len(set(out)) != len(out):   # same name in different folders (a glob): number them
        out = [f"{i:05d}_{s}" for i, s in enumerate(out)]
    return out


def infer_images(predictor: Predictor, files: Sequence[str], output_dir: str, img_size: int,
                 conf_thres: float = 0.25, iou_thres: float = 0.45, max_det: int = 300,
                 agnostic: bool = False, classes: Optional[Sequence[int]] = None,
                 save_images: bool = True, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Run ``predictor`` on each file; write ``<name><ext>`` with boxes drawn and ``<name>.json``
    into ``output_dir``. Unreadable files are logged and skipped. Returns a summary."""
    import cv2
    from ..data.checks import BadImage, inspect_image
    from ..utils.io import atomic_write_bytes, write_json
    from .draw import draw_detections

    out_abs = os.path.realpath(output_dir)
    for f in files:
        if os.path.dirname(os.path.realpath(f)) == out_abs:
            raise ValueError(f"--output {output_dir} is the folder of the input {f}: "
                             f"results would overwrite the inputs; choose another folder")
    os.makedirs(output_dir, exist_ok=True)
    names = list(predictor.names)
    summary: Dict[str, Any] = {"images": 0, "detections": 0, "skipped": [], "outputs": []}
    for f, stem in zip(files, _output_stems(files)):
        try:            # the data scan's check: what training would skip is said here too
            inspect_image(f)
            bad = None
        except BadImage as e:
            bad = str(e)
        img = read_image_rgb(f)
        if img is None:
            log(f"skip {f}: {bad or 'cannot be read as an image'}")
            summary["skipped"].append({"path": f, "reason": bad or "unreadable"})
            continue
        if bad:      # OpenCV decodes what it can of a damaged file: go on, but say so
            log(f"warning: {f}: {bad}; the data scan would skip it; detections on what could be decoded")
            summary.setdefault("damaged", []).append({"path": f, "reason": bad})
        dets = predict_image(predictor, img, img_size, conf_thres, iou_thres, max_det, agnostic, classes)
        record = {"image": os.path.abspath(f), "width": int(img.shape[1]), "height": int(img.shape[0]),
                  "backend": predictor.backend, "model": predictor.source, "img_size": img_size,
                  "conf_thres": conf_thres, "iou_thres": iou_thres, "box_format": "xyxy pixels",
                  "detections": detections_to_json(dets, names)}
        json_path = os.path.join(output_dir, stem + ".json")
        write_json(json_path, record)
        outputs = {"json": json_path}
        if save_images:
            ext = os.path.splitext(f)[1].lower()
            ext = ext if ext in IMG_EXTS else ".jpg"
            ok, buf = cv2.imencode(ext, cv2.cvtColor(draw_detections(img, dets, names), cv2.COLOR_RGB2BGR))
            if not ok:   # a format OpenCV reads but cannot write here
                ext = ".jpg"
                ok, buf = cv2.imencode(ext, cv2.cvtColor(draw_detections(img, dets, names), cv2.COLOR_RGB2BGR))
            outputs["image"] = os.path.join(output_dir, stem + ext)
            atomic_write_bytes(outputs["image"], buf.tobytes())
        summary["images"] += 1
        summary["detections"] += len(dets)
        summary["outputs"].append(outputs)
        counts: Dict[str, int] = {}
        for d in record["detections"]:
            counts[d["class_name"]] = counts.get(d["class_name"], 0) + 1
        log(f"{f}: {img.shape[1]}x{img.shape[0]}, "
            + (", ".join(f"{n} {k}" for k, n in counts.items()) or "no detections"))
    return summary

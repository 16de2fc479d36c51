"""Predictors for exported models: ONNX Runtime (``model.onnx``) and Paddle Inference
(``model.pdmodel`` or ``model.json`` + ``model.pdiparams``), behind engine/predict.py's interface:
``predictor(images float32 [B,3,S,S] RGB in [0,1]) -> np [B,N,5+nc]`` with ``names``,
``img_size``, ``fixed_size``, ``batch``, ``backend`` and ``source``.

Checked here on CPU only. The GPU paths (CUDA execution provider, Paddle Inference GPU
and Paddle-TensorRT) are written from the libraries' documented APIs for users with a
GPU; they have not been run on this project's machines.
"""
from __future__ import annotations

import ast
import json
import os
from typing import Any, Dict, List, Optional

import numpy as np

from ..compat import enable_inference_memory_optim, program_file
from ..engine.predict import Predictor, PredictorUnavailable
from .inference_cfg import CFG_NAME, InferCfgError, read_infer_cfg

ONNX_FILE = "model.onnx"
PADDLE_PARAMS = "model.pdiparams"



def _is_pickle(path: str) -> bool:
    """paddle.save's .pdparams is a pickle (protocol 2+ starts with 0x80)."""
    try:
        with open(path, "rb") as f:
            return f.read(1) == b"\x80"
    except OSError:
        return False


def _not_onnx(path: str) -> Optional[str]:
    """What a file given as --onnx is instead, when its first bytes tell."""
    if _is_pickle(path):
        return ("a .pdparams checkpoint, not an ONNX model: give it as --weights, or export it first "
                "(tools/export.py --weights ... --output DIR writes DIR/model.onnx)")
    from ..model.weights import what_else_it_is
    what = what_else_it_is(path)
    return what if what and not what.startswith("an ONNX model") else None

class ExportedModelError(ValueError):
    """An exported model that cannot be used as it is; the message names the file."""


def _check_images(images: np.ndarray, predictor: Predictor) -> np.ndarray:
    images = np.ascontiguousarray(images, dtype=np.float32)
    s = predictor.img_size
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images [B,3,H,W], got {list(images.shape)}")
    if predictor.fixed_size and s and images.shape[2:] != (s, s):
        raise ValueError(f"{predictor.source} was exported for {s}x{s} input, got "
                         f"{images.shape[2]}x{images.shape[3]} (re-export with --img-size)")
    if predictor.batch and images.shape[0] != predictor.batch:
        raise ValueError(f"{predictor.source} was exported for batch {predictor.batch}, got "
                         f"{images.shape[0]} (run_predictor() chunks; or re-export with --dynamic-batch)")
    return images


def _want_gpu(device: str, available: bool, what: str) -> bool:
    """auto: GPU when available; gpu / gpu:N: GPU or an error; cpu: CPU."""
    d = (device or "auto").lower()
    if d == "cpu":
        return False
    if d == "auto":
        return available
    if d == "gpu" or d.startswith("gpu:") or d == "cuda" or d.startswith("cuda:"):
        if not available:
            raise PredictorUnavailable(f"device {device!r}: {what}")
        return True
    raise ValueError(f"unknown device {device!r}; expected auto, cpu, gpu or gpu:N")


def _device_id(device: str) -> int:
    return int(device.split(":")[1]) if device and ":" in device else 0


# ------------------------------------------------------------------------ ONNX Runtime

class OnnxPredictor(Predictor):
    """ONNX Runtime session over ``model.onnx`` (a file, or an export folder holding one).

    Class names and size come from ``infer_cfg.yml`` beside the file when present, else
    from the ONNX metadata (ultralytics' ``names``/``stride`` keys, so ultralytics YOLOv5
    ONNX exports load too), else from the input shape. With an NMS export it reads the
    raw ``output0``."""
    backend = "onnxruntime"

    def __init__(self, path: str, device: str = "auto", threads: Optional[int] = None):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise PredictorUnavailable(f"--onnx needs onnxruntime ({e}); pip install onnxruntime") from None
        if os.path.isdir(path):
            path = os.path.join(path, ONNX_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such ONNX file")
        self.source = os.path.abspath(path)
        cuda = "CUDAExecutionProvider" in ort.get_available_providers()
        use_gpu = _want_gpu(device, cuda, "onnxruntime has no CUDAExecutionProvider here "
                                          "(install onnxruntime-gpu)")
        providers: List[Any] = (["CPUExecutionProvider"] if not use_gpu else
                                [("CUDAExecutionProvider", {"device_id": _device_id(device)}),
                                 "CPUExecutionProvider"])
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = int(threads)
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(path, so, providers=providers)
        except Exception as e:   # onnxruntime raises its own Fail/InvalidGraph/... types
            raise ExportedModelError(f"{path}: " + (_not_onnx(path) or f"onnxruntime cannot load it "
                                                    f"({type(e).__name__}: {e})")) from None
        self.device = "gpu" if use_gpu else "cpu"
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ExportedModelError(f"{path}: expected one image input [B,3,H,W], got "
                                     + ", ".join(f"{i.name} {i.shape}" for i in inputs))
        self.input_name = inputs[0].name
        self.input_dtype = np.float16 if inputs[0].type == "tensor(float16)" else np.float32
        b, _, h, w = inputs[0].shape
        meta = self.session.get_modelmeta().custom_metadata_map
        cfg = self._sibling_cfg(path)
        self.output_name = self._raw_output(path, meta)
        self.batch = b if isinstance(b, int) and b > 0 else None
        static_hw = isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0
        if static_hw and h != w:
            raise ExportedModelError(f"{path}: input is {h}x{w}; only square inputs are supported")
        self.fixed_size = static_hw
        self.img_size = int(h) if static_hw else (cfg or {}).get("img_size") or _meta_imgsz(meta)
        self.stride = int(meta.get("stride", 32)) if str(meta.get("stride", "32")).isdigit() else 32
        self.names = self._names(path, cfg, meta)
        self.infer_cfg = cfg

    @staticmethod
    def _sibling_cfg(path: str) -> Optional[Dict[str, Any]]:
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isfile(os.path.join(folder, CFG_NAME)):
            return None
        cfg = read_infer_cfg(folder)
        # an infer_cfg of another file in the same folder says nothing about this one
        return cfg if cfg.get("onnx_file") == os.path.basename(path) else None

    def _raw_output(self, path: str, meta: Dict[str, str]) -> str:
        outs = self.session.get_outputs()
        names = [o.name for o in outs]
        try:
            want = json.loads(meta.get("ppyolo_slim", "{}")).get("raw_output")
        except ValueError:
            want = None
        for cand in (want, "output0"):
            if cand and cand in names:
                return cand
        three_d = [o.name for o in outs if len(o.shape) == 3]
        if len(three_d) == 1:
            return three_d[0]
        raise ExportedModelError(f"{path}: no [B,N,5+nc] output among {names} "
                                 f"(expected 'output0', the YOLOv5 layout)")

    def _names(self, path: str, cfg: Optional[Dict[str, Any]], meta: Dict[str, str]) -> List[str]:
        if cfg:
            return list(cfg["label_list"])
        if "names" in meta:
            try:
                d = ast.literal_eval(meta["names"])   # ultralytics writes str(dict); never eval()
                if isinstance(d, dict):
                    return [str(d[k]) for k in sorted(d)]
                if isinstance(d, (list, tuple)):
                    return [str(n) for n in d]
            except (ValueError, SyntaxError, TypeError, KeyError):
                pass
        shape = next(o.shape for o in self.session.get_outputs() if o.name == self.output_name)
        if isinstance(shape[-1], int) and shape[-1] > 5:
            return [f"class{i}" for i in range(shape[-1] - 5)]
        return []

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = _check_images(images, self)
        out = self.session.run([self.output_name], {self.input_name: images.astype(self.input_dtype, copy=False)})[0]
        return np.asarray(out, dtype=np.float32)

    def describe(self) -> Dict[str, Any]:
        d = super().describe()
        d.update(device=self.device, providers=self.session.get_providers(), output=self.output_name)
        return d


def _meta_imgsz(meta: Dict[str, str]) -> Optional[int]:
    try:
        v = ast.literal_eval(meta.get("imgsz", "None"))
    except (ValueError, SyntaxError):
        return None
    if isinstance(v, (list, tuple)) and v and isinstance(v[0], int):
        return int(v[0])
    return int(v) if isinstance(v, int) else None


# ------------------------------------------------------------------------ Paddle Inference

class PaddleInferencePredictor(Predictor):
    """Paddle Inference over an export folder (``model.pdmodel``, ``model.pdiparams``,
    ``infer_cfg.yml``); ``model_dir`` may also be the ``.pdmodel`` file itself.

    CPU: oneDNN (``use_mkldnn``) on by default, ``threads`` math threads. GPU
    (``device='gpu'`` or ``'gpu:N'``, needs paddlepaddle-gpu): ``trt=True`` runs supported
    subgraphs in Paddle-TensorRT at ``trt_precision`` fp32 or fp16; a dynamic-batch export gets a
    TensorRT shape range of batch 1..``trt_max_batch``; ``trt_cache_dir`` keeps built engines.
    The GPU and TensorRT options have not been run here (no GPU): they follow the
    paddle.inference.Config documentation."""
    backend = "paddle_inference"

    def __init__(self, model_dir: str, device: str = "auto", use_mkldnn: bool = True, trt: bool = False,
                 threads: Optional[int] = None, gpu_mem_mb: int = 500, trt_precision: str = "fp32",
                 trt_workspace: int = 1 << 30, trt_max_batch: int = 16, trt_min_subgraph: int = 3,
                 trt_cache_dir: Optional[str] = None):
        import paddle
        import paddle.inference as pi
        if os.path.isfile(model_dir) and model_dir.endswith((".pdmodel", ".json")):
            folder, model_file = os.path.dirname(os.path.abspath(model_dir)), os.path.abspath(model_dir)
            params_file = os.path.splitext(model_file)[0] + ".pdiparams"
        elif os.path.isfile(model_dir):
            raise FileNotFoundError(f"{model_dir}: a file, not an export folder: --model-dir takes the folder "
                                    f"tools/export.py wrote (model.pdmodel, model.pdiparams, infer_cfg.yml)"
                                    + ("; a .pdparams checkpoint goes to --weights"
                                       if _is_pickle(model_dir) else ""))
        else:
            folder = os.path.abspath(model_dir)
            model_file = program_file(folder)   # model.pdmodel (Paddle 2.6) or model.json (Paddle 3)
            params_file = os.path.join(folder, PADDLE_PARAMS)
        for f in (model_file, params_file):
            if not os.path.isfile(f):
                raise FileNotFoundError(f"{f}: missing (--model-dir expects an export folder written by "
                                        f"tools/export.py)")
        try:
            cfg = read_infer_cfg(folder)
        except InferCfgError as e:
            raise ExportedModelError(str(e)) from None
        self.source = folder
        self.infer_cfg = cfg
        self.names = list(cfg["label_list"])
        self.img_size = int(cfg["img_size"])
        self.fixed_size = True
        self.batch = int(cfg["batch"]) if cfg.get("batch") else None
        self.stride = int(cfg.get("stride", 32))

        gpu_ok = paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
        use_gpu = _want_gpu(device, gpu_ok, "this Paddle has no CUDA device (install paddlepaddle-gpu)")
        if trt and not use_gpu:
            raise PredictorUnavailable("Paddle-TensorRT (trt=True) needs a GPU device and paddlepaddle-gpu "
                                       "built with TensorRT")
        config = pi.Config(model_file, params_file)
        config.disable_glog_info()
        config.switch_ir_optim(True)
        enable_inference_memory_optim(config)   # not on Paddle 3 (compat.py)
        if use_gpu:
            config.enable_use_gpu(int(gpu_mem_mb), _device_id(device))
            if trt:
                self._enable_trt(config, pi, trt_precision, trt_workspace, trt_max_batch,
                                 trt_min_subgraph, trt_cache_dir)
        else:
            config.disable_gpu()
            if threads:
                config.set_cpu_math_library_num_threads(int(threads))
            if use_mkldnn:
                config.enable_mkldnn()
                config.set_mkldnn_cache_capacity(8)   # one oneDNN kernel set per input shape seen
        self.device = "gpu" if use_gpu else "cpu"
        self.options = {"use_mkldnn": bool(use_mkldnn and not use_gpu), "trt": bool(trt),
                        "trt_precision": trt_precision if trt else None}
        try:
            self.predictor = pi.create_predictor(config)
        except Exception as e:   # Paddle raises its own enforce errors
            raise ExportedModelError(f"{folder}: Paddle Inference cannot load the model ({type(e).__name__}: "
                                     f"{str(e).strip().splitlines()[-1] if str(e).strip() else e})") from None
        self.input_name = self.predictor.get_input_names()[0]
        self.output_name = self.predictor.get_output_names()[0]

    def _enable_trt(self, config, pi, precision, workspace, max_batch, min_subgraph, cache_dir):
        prec = {"fp32": pi.PrecisionType.Float32, "fp16": pi.PrecisionType.Half}
        if precision not in prec:
            raise ValueError(f"trt_precision must be fp32 or fp16, got {precision!r} (int8 needs calibration)")
        batch = self.batch or max_batch
        config.enable_tensorrt_engine(workspace_size=int(workspace), max_batch_size=int(batch),
                                      min_subgraph_size=int(min_subgraph), precision_mode=prec[precision],
                                      use_static=bool(cache_dir), use_calib_mode=False)
        if cache_dir:
            config.set_optim_cache_dir(cache_dir)
        s = self.img_size
        name = self.infer_cfg["input"]["name"]
        lo, hi = (self.batch, self.batch) if self.batch else (1, max_batch)
        config.set_trt_dynamic_shape_info({name: [lo, 3, s, s]}, {name: [hi, 3, s, s]}, {name: [lo, 3, s, s]})

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = _check_images(images, self)
        inp = self.predictor.get_input_handle(self.input_name)
        inp.reshape(list(images.shape))
        inp.copy_from_cpu(images)
        self.predictor.run()
        return np.asarray(self.predictor.get_output_handle(self.output_name).copy_to_cpu(), dtype=np.float32)

    def describe(self) -> Dict[str, Any]:
        d = super().describe()
        d.update(device=self.device, **self.options)
        return d


def latency_ms(predictor: Predictor, batch: Optional[int] = None, runs: int = 20, warmup: int = 3,
               seed: int = 0) -> Dict[str, Any]:
    """Wall-clock latency of ``predictor`` on random input at its own size (model only: no
    letterbox, no NMS): mean, median and 90th percentile in ms over ``runs`` calls."""
    import time
    if not predictor.img_size:
        raise ValueError(f"{predictor.source}: unknown input size; cannot time it")
    b = predictor.batch or batch or 1
    x = np.random.default_rng(seed).random((b, 3, predictor.img_size, predictor.img_size), dtype=np.float32)
    for _ in range(max(0, warmup)):
        predictor(x)
    times = []
    for _ in range(max(1, runs)):
        t = time.perf_counter()
        predictor(x)
        times.append(1000 * (time.perf_counter() - t))
    t_arr = np.asarray(times)
    return {"backend": predictor.backend, "batch": b, "img_size": predictor.img_size, "runs": len(times),
            "mean_ms": float(t_arr.mean()), "p50_ms": float(np.median(t_arr)),
            "p90_ms": float(np.percentile(t_arr, 90))}

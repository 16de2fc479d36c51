"""Finding a usable TensorRT (and a GPU), and what differs between TensorRT 10 and 11.

``import tensorrt`` can succeed without TensorRT: ``pip install tensorrt-stubs`` leaves a
``tensorrt/`` folder of ``.pyi`` files that Python imports as an empty namespace package.
Real TensorRT is recognised by ``tensorrt.Builder``.

TensorRT 11 builds only strongly typed networks: BuilderFlag.FP16/INT8 and the INT8
calibrators are gone, precision is the tensors' types. Here that means FP32 and FP16
(the same strongly typed FP16 graph on both majors: half weights, a cast after the input,
the box decode cast back to FP32) work on both, and so does INT8 with explicit Q/DQ
(``--int8-from``, a strongly typed FP32 graph with quantize/dequantize layers). INT8 with an
entropy calibrator (implicit quantization, ``--int8``) needs TensorRT 10.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence, Tuple

# a PredictorUnavailable, so tools/infer.py and tools/eval.py --engine report it as one line
# (predict.py imports deploy only lazily: no import cycle)
from ppyolo_slim.engine.predict import PredictorUnavailable

INSTALL_HINT = """\
How to install TensorRT (10.x, matching your CUDA; needs an NVIDIA GPU and driver):
  pip install tensorrt              # the PyPI package fetches NVIDIA's wheels from https://pypi.nvidia.com
  pip install --extra-index-url https://pypi.nvidia.com tensorrt-cu12   # the same, CUDA 12 explicitly
  or the TensorRT tarball from https://developer.nvidia.com/tensorrt: add its lib/ to LD_LIBRARY_PATH
  and pip install python/tensorrt-*-cp3XX-*.whl from it.
Device buffers come from paddlepaddle-gpu (`PPYOLO_SLIM_GPU=1`, README: GPU machines) or cuda-python.
`python deploy/trt_build.py --weights W --check` needs neither TensorRT nor a GPU: it runs the same
hand-built layer graph on the CPU in NumPy and compares it with the Paddle model."""


class TensorRTUnavailable(PredictorUnavailable):
    """TensorRT or a GPU is missing; the message says which and how to get it.
    ``problems``: one line per missing piece, without the install hint."""

    def __init__(self, message: str, problems: Sequence[str] = ()):
        super().__init__(message)
        self.problems = list(problems) or [message.split("\n")[0]]


def import_tensorrt():
    """The real ``tensorrt`` module, or TensorRTUnavailable saying what is wrong."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise TensorRTUnavailable(f"TensorRT is not installed (import tensorrt: {e}).\n{INSTALL_HINT}") from None
    except OSError as e:     # the bindings are there, libnvinfer is not
        raise TensorRTUnavailable(f"TensorRT's Python bindings are installed but its libraries "
                                  f"cannot be loaded ({e}).\n{INSTALL_HINT}") from None
    if not hasattr(trt, "Builder"):
        where = list(getattr(trt, "__path__", []) or [getattr(trt, "__file__", "?")])
        raise TensorRTUnavailable(
            f"`import tensorrt` found only type stubs or an empty package at {where} "
            f"(tensorrt-stubs installs one), not TensorRT itself.\n{INSTALL_HINT}")
    return trt


def trt_major(trt) -> int:
    try:
        return int(str(trt.__version__).split(".")[0])
    except (AttributeError, ValueError):
        return 10


def gpu_status() -> Tuple[bool, str]:
    """(a CUDA GPU is usable, a sentence saying which or why not)."""
    try:
        import paddle
        if paddle.device.is_compiled_with_cuda():
            n = paddle.device.cuda.device_count()
            if n > 0:
                return True, f"{n} GPU(s) via paddlepaddle-gpu: {paddle.device.cuda.get_device_name(0)}"
            return False, "paddlepaddle-gpu sees no GPU (driver missing, or CUDA_VISIBLE_DEVICES hides them)"
    except Exception:   # a broken paddle install should not hide a GPU cuda-python can see
        pass
    try:
        cudart = cuda_runtime()
        err, n = cudart.cudaGetDeviceCount()
        if int(err) == 0 and n > 0:
            return True, f"{n} GPU(s) via cuda-python"
        return False, f"cuda-python reports no usable GPU ({err})"
    except ImportError:
        pass
    gpus = "/proc/driver/nvidia/gpus"     # the driver's own list, when no CUDA Python package is there
    if os.path.isdir(gpus) and os.listdir(gpus):
        return True, f"{len(os.listdir(gpus))} NVIDIA GPU(s) listed by the driver"
    return False, ("no GPU found: no NVIDIA driver lists one, and neither paddlepaddle-gpu nor "
                   "cuda-python sees one")


def cuda_runtime():
    """cuda-python's runtime module (``cuda.bindings.runtime`` in 12.6+, ``cuda.cudart`` before)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        from cuda import cudart      # raises ImportError when cuda-python is absent
    return cudart


def require_tensorrt_and_gpu():
    """(trt module, GPU sentence) or TensorRTUnavailable with everything that is missing."""
    problems = []
    trt = None
    try:
        trt = import_tensorrt()
    except TensorRTUnavailable as e:
        problems.append(str(e).split("\n")[0])
    ok, gpu = gpu_status()
    if not ok and os.environ.get("PPYOLO_SLIM_ASSUME_GPU") != "1":
        problems.append(f"GPU: {gpu}; creating a TensorRT builder needs an NVIDIA GPU "
                        "(set PPYOLO_SLIM_ASSUME_GPU=1 to try anyway)")
    if problems:
        raise TensorRTUnavailable("cannot build or run a TensorRT engine here:\n  - " + "\n  - ".join(problems)
                                  + "\n" + INSTALL_HINT, problems)
    return trt, gpu


def precision_plan(trt, fp16: bool, int8: bool, strongly_typed: Optional[bool] = None,
                   int8_qdq: bool = False) -> dict:
    """How to get the requested precision on this TensorRT.

    FP16 is always the strongly typed FP16 graph (half weights and tensors, casts at the input
    and before the box decode, which stays FP32), on TensorRT 10 and 11 alike: the network
    ``--check --fp16`` runs is then the one TensorRT builds (BuilderFlag.FP16 on a weakly typed
    network is deprecated since 10.12 and gone in 11). FP32 is weakly typed on TensorRT 10
    (strongly typed with ``strongly_typed``), strongly typed on 11. INT8 is implicit
    quantization with a calibrator: TensorRT 10 only, weakly typed, FP16 flag as fallback.
    ``int8_qdq`` (explicit Q/DQ): strongly typed on both, no precision flag (TensorRT's guide:
    with Q/DQ and strong typing, precision flags are neither needed nor to be set)."""
    major = trt_major(trt)
    if int8_qdq:
        if fp16 or int8:
            raise ValueError("--int8-from (explicit Q/DQ) goes with neither --fp16 nor --int8 (the calibrator)")
        return {"strongly_typed": True, "fp16_graph": False, "fp16_flag": False, "int8_flag": False,
                "precision": "int8"}
    if int8 and (major >= 11 or strongly_typed):
        raise TensorRTUnavailable(
            f"INT8 needs implicit quantization with a calibrator, which TensorRT {trt.__version__} "
            "does not have in strongly typed networks (TensorRT 11 removed it): use TensorRT 10 "
            "without --strongly-typed, or quantize explicitly (Q/DQ) outside this tool")
    typed = not int8 and (fp16 or major >= 11 or bool(strongly_typed))
    return {"strongly_typed": typed, "fp16_graph": bool(fp16 and not int8),
            "fp16_flag": bool(int8), "int8_flag": bool(int8),
            "precision": "int8" if int8 else ("fp16" if fp16 else "fp32")}

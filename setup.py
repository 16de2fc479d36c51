"""ppyolo-slim. Why each pin: docs/dependencies.md (checked together on Python 3.11, CPU).

Two sets, chosen by ``PPYOLO_SLIM_PADDLE`` (docs/paddle3.md measures both):

* ``3`` (the default): Paddle 3.3, paddle2onnx 2.1, numpy 2. Then
  ``pip install --no-deps paddleslim==2.6.0``: PaddleSlim 2.6 pins opencv-python==4.6.0.66,
  which is built against numpy 1.x; installed without its dependencies it runs on numpy 2 (the
  differences it needs live in ppyolo_slim/compat.py). The package says so when it is missing.
* ``2``: Paddle 2.6.2, paddle2onnx 1.3.1, numpy 1.x, PaddleSlim with its own dependencies.

GPU machines: ``PPYOLO_SLIM_GPU=1`` requires paddlepaddle-gpu in place of the CPU wheel (both in
one environment break each other, so there is no "gpu" extra: an extra can only add a
requirement, and would install both). PyPI's newest paddlepaddle-gpu is 2.6.2; Paddle 3's GPU
wheels come from Paddle's own index (``--extra-index-url``, README).
"""
import os

from setuptools import find_packages, setup

GPU = os.environ.get("PPYOLO_SLIM_GPU", "") not in ("", "0")
PADDLE_SET = os.environ.get("PPYOLO_SLIM_PADDLE", "3").strip() or "3"
if PADDLE_SET not in ("2", "3"):
    raise SystemExit(f"PPYOLO_SLIM_PADDLE={PADDLE_SET!r}: expected 3 (Paddle 3.3, the default) or 2 (Paddle 2.6.2)")
if PADDLE_SET == "3" and GPU:
    # PyPI's newest paddlepaddle-gpu is 2.6.2; Paddle 3 GPU wheels come from Paddle's own index
    PADDLE = "paddlepaddle-gpu>=3.3,<3.4"
elif PADDLE_SET == "3":
    PADDLE = "paddlepaddle>=3.3.1,<3.4"
else:
    PADDLE = "paddlepaddle-gpu==2.6.2" if GPU else "paddlepaddle==2.6.2"

REQUIRES = {}
REQUIRES["3"] = [
    PADDLE,                     # 3.3.1: checked here; 3.x saves PIR programs (model.json)
    # paddleslim==2.6.0 goes in with --no-deps (its opencv 4.6 pin needs numpy 1.x); these are
    # the parts of its dependencies that its import and our pruning use:
    "pyzmq", "decorator",       # paddleslim imports zmq and decorator; Paddle 3 no longer pulls decorator
    "paddle2onnx==2.1.0",       # the exporter for Paddle 3's PIR programs; pins onnx<=1.17
    # numpy 2 works with Paddle 3 (2.3 checked). 2.4 made int()/float() of a 1-element array an
    # error, and Paddle 3.3.1's Tensor.__int__ does that: int(tensor([5])) and paddle.flops raise
    "numpy>=1.21,<2.4",
    "onnx>=1.16",
    "onnxruntime>=1.16",
    "visualdl==2.5.3",
    "pycocotools>=2.0.6",
    "opencv-python>=4.8",       # a numpy-2 build (5.0 checked)
    "pyyaml>=5.4",
    "tqdm>=4.60",
    "matplotlib>=3.5",
    "scikit-learn",             # paddleslim's; no zlib clash with Paddle 3 (1.9 checked)
    "protobuf>=3.20",
    "setuptools<81",            # checked with 65.5 only; the pkg_resources stand-in covers newer ones
]

REQUIRES["2"] = [
    PADDLE,                     # the last Paddle PaddleSlim 2.6 supports (docs/dependencies.md)
    "paddleslim==2.6.0",        # newest release; pins opencv-python==4.6.0.66 itself
    "paddle2onnx==1.3.1",       # exports what Paddle 2.6 jit.save writes; 2.x targets Paddle 3 PIR
    "numpy>=1.21,<2",           # Paddle 2.6 and opencv 4.6 are built against numpy 1.x
    "onnx>=1.14",
    "onnxruntime>=1.16",
    "visualdl==2.5.3",          # its PR curves fail on numpy>=1.24: never called
    "pycocotools>=2.0.6",
    "opencv-python>=4.6",
    "pyyaml>=5.4",
    "tqdm>=4.60",
    "matplotlib>=3.5",
    "scikit-learn<1.8",         # pulled in by paddleslim; 1.9 segfaults on import after paddle
    "protobuf>=3.20",
    "setuptools<81",            # paddleslim 2.6 imports pkg_resources, which setuptools 81+ no longer ships
]

install_requires = REQUIRES[PADDLE_SET]

extras = {
    "test": ["pytest>=7", "hypothesis>=6.80"],
    # The converter reads .pt files without torch; torch only writes them in tests/test_convert.py.
    "convert": ["torch>=1.8", "setuptools<81"],
}

setup(
    name="ppyolo-slim",
    version="0.1.0",
    description="YOLOv5 in PaddlePaddle: L1-sparse training, PaddleSlim channel pruning, "
                "paddle2onnx export and a hand-built TensorRT network",
    packages=find_packages(include=["ppyolo_slim", "ppyolo_slim.*"]),
    python_requires=">=3.9" if PADDLE_SET == "3" else ">=3.8",   # Paddle 3 wheels start at 3.9
    install_requires=install_requires,
    extras_require=extras,
    include_package_data=True,
    package_data={"ppyolo_slim": ["engine/cpu_ops/*.cc"]},   # compiled where training runs
)

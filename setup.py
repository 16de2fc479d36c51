"""ppyolo-slim. Why each pin: docs/dependencies.md (checked together on Python 3.11, CPU).

GPU machines: ``PPYOLO_SLIM_GPU=1 pip install -e .`` requires paddlepaddle-gpu in place of the
CPU wheel (both in one environment break each other, so there is no "gpu" extra: an extra can
only add a requirement, and would install both).
"""
import os

from setuptools import find_packages, setup

GPU = os.environ.get("PPYOLO_SLIM_GPU", "") not in ("", "0")
PADDLE = "paddlepaddle-gpu==2.6.2" if GPU else "paddlepaddle==2.6.2"

install_requires = [
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
    python_requires=">=3.8",
    install_requires=install_requires,
    extras_require=extras,
    include_package_data=True,
)

#!/usr/bin/env python
"""Prove the engines on a GPU: hand-built FP32 / FP16 and TensorRT's ONNX-parser engine vs Paddle.

The code is ppyolo_slim/deploy/gpu_check.py (installed with the package); `--help` lists the options.
"""
import os
import sys

try:
    import ppyolo_slim  # noqa: F401  first: it owns the native import order
except ImportError:  # run from a checkout without `pip install .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import ppyolo_slim  # noqa: F401

from ppyolo_slim.deploy.gpu_check import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

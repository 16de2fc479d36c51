#!/usr/bin/env python
"""Run a TensorRT engine built by trt_build.py on images, or benchmark it.

The code is ppyolo_slim/deploy/trt_infer.py (installed with the package); `--help` lists the options.
"""
import os
import sys

try:
    import ppyolo_slim  # noqa: F401  first: it owns the native import order
except ImportError:  # run from a checkout without `pip install .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import ppyolo_slim  # noqa: F401

from ppyolo_slim.deploy.trt_infer import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

"""The one place that owns native import order (docs/dependencies.md#zlib-and-import-order).

Paddle 2.6.2's libpaddle.so exports its own zlib symbols. An extension that uses zlib
and is loaded *after* paddle (Pillow's PNG codec, used by VisualDL images; pycocotools;
matplotlib; scikit-learn) can resolve to them and crash in inflateReset2. Loading those
extensions first binds them to their own zlib. ``ppyolo_slim/__init__`` imports this
module before anything imports paddle; tests/test_import_order.py runs both orders.
If paddle was already imported by the caller, nothing here can rebind it: run with
``LD_PRELOAD=$(ldconfig -p | grep -m1 'libz.so.1 ' | awk '{print $NF}')`` in that case.
"""
import importlib
import sys

_FIRST = ("cv2", "PIL.Image", "PIL.PngImagePlugin", "PIL.JpegImagePlugin",
          "pycocotools._mask", "matplotlib", "scipy.special")

PADDLE_WAS_FIRST = "paddle" in sys.modules
loaded = []
for _name in _FIRST:
    try:
        importlib.import_module(_name)
        loaded.append(_name)
    except ImportError:  # optional pieces (scipy) may be absent
        pass

try:
    import matplotlib
    matplotlib.use("Agg", force=False)  # no display on servers and CI
except ImportError:
    pass

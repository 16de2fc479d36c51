"""ppyolo-slim: YOLOv5 in Paddle, trained sparse, pruned with PaddleSlim, deployed to TensorRT."""
from . import _preload  # noqa: F401  before anything imports paddle: docs/dependencies.md#zlib-and-import-order
from .compat import quiet_paddle_import

quiet_paddle_import()   # before paddle is imported (compat.py)

__version__ = "0.1.0"


def load_model(path: str):
    """The YOLOv5 model of a ``.pdparams`` in eval mode.

    Call it on a float32 ``[B, 3, H, W]`` RGB tensor scaled to [0, 1] (H, W multiples of 32);
    it returns ``[B, N, 5+nc]``: cx, cy, w, h in input pixels, objectness, class scores.
    Pruned checkpoints build their narrower model from their own shapes. The file is
    read without running code from it. ``model.meta`` holds its metadata record.
    """
    from .model import model_from_weights
    model, meta = model_from_weights(path)
    model.meta = meta
    model.eval()
    return model

"""Helpers (no tests) shared by the eval/infer tests: images of solid rectangles, and a 'predictor' that finds
them in the letterboxed input by colour (so mapping boxes back can be checked exactly)."""
import os

import numpy as np

from conftest import load_tool  # noqa: F401  (re-exported for the eval/infer tests)

BG = (40, 40, 40)
COLORS = [(255, 0, 0), (0, 255, 0)]      # RGB of class 0, class 1
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_rect_image(path, w, h, rects):
    """rects: (x1, y1, x2, y2, cls) with even coordinates; pixels x1..x2-1 are filled, so the
    continuous box is exactly (x1, y1, x2, y2). Returns boxes [n,4] and classes [n]."""
    import cv2
    img = np.empty((h, w, 3), np.uint8)
    img[:] = BG
    for x1, y1, x2, y2, c in rects:
        img[y1:y2, x1:x2] = COLORS[c]
    ok, buf = cv2.imencode(os.path.splitext(path)[1], cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    assert ok
    buf.tofile(path)
    boxes = np.array([r[:4] for r in rects], np.float32).reshape(-1, 4)
    return boxes, np.array([r[4] for r in rects], np.int64)


class ColourFinder:
    """images [B,3,S,S] -> [B,N,5+nc]: one row per solid-colour blob of a class colour."""
    backend, source, img_size, fixed_size, stride = "test", "colour-finder", 64, False, 32

    def __init__(self, nc=2, n=16, batch=None, names=("red", "green")):
        self.nc, self.n, self.batch, self.names = nc, n, batch, list(names)
        self.calls = []

    def __call__(self, images):
        import cv2
        self.calls.append(images.shape[0])
        out = np.zeros((images.shape[0], self.n, 5 + self.nc), np.float32)
        for b, im in enumerate(images):
            rgb = np.round(im.transpose(1, 2, 0) * 255)
            k = 0
            for c, col in enumerate(COLORS[:self.nc]):
                mask = (np.abs(rgb - np.array(col)).max(-1) < 1).astype(np.uint8)
                n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
                for x, y, w, h, _area in stats[1:]:
                    out[b, k, :5] = [x + w / 2, y + h / 2, w, h, 0.9]
                    out[b, k, 5 + c] = 1.0
                    k += 1
        return out


def colour_finder_backend(path, device="auto"):
    """A BACKENDS factory, as the export helper's ONNX / Paddle Inference predictors are."""
    f = ColourFinder()
    f.source = path
    return f

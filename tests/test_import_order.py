"""zlib users loaded after paddle, both import orders, in fresh processes.

Why: docs/dependencies.md#zlib-and-import-order
"""
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import sys, tempfile, os
    {first}
    import numpy as np
    from visualdl import LogWriter, LogReader
    d = tempfile.mkdtemp()
    with LogWriter(logdir=d) as w:
        w.add_image("img", (np.random.rand(32, 32, 3) * 255).astype("uint8"), 0)
    tags = LogReader(file_path=os.path.join(d, os.listdir(d)[0])).get_tags()
    assert "image" in tags, tags
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    gt = {{"images": [{{"id": 1, "width": 64, "height": 64}}],
          "annotations": [{{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20],
                           "area": 400, "iscrowd": 0}}],
          "categories": [{{"id": 1, "name": "a"}}]}}
    coco = COCO(); coco.dataset = gt; coco.createIndex()
    dt = coco.loadRes([{{"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.9}}])
    e = COCOeval(coco, dt, "bbox"); e.evaluate(); e.accumulate(); e.summarize()
    assert abs(e.stats[0] - 1.0) < 1e-6, e.stats
    import paddle
    print("ALL-OK", paddle.__version__)
""")


@pytest.mark.parametrize("first", ["import paddle\nimport ppyolo_slim", "import ppyolo_slim\nimport paddle"])
@pytest.mark.compat
def test_visualdl_image_and_cocoeval_after_paddle(first):
    r = subprocess.run([sys.executable, "-c", SCRIPT.format(first=first)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, f"exit {r.returncode} (negative = signal)\n{r.stderr[-3000:]}"
    assert "ALL-OK" in r.stdout


def test_package_loads_zlib_users_before_paddle():
    code = ("import sys; import ppyolo_slim; from ppyolo_slim import _preload; "
            "assert not _preload.PADDLE_WAS_FIRST; "
            "assert {'cv2', 'PIL.PngImagePlugin', 'pycocotools._mask'} <= set(_preload.loaded), _preload.loaded; "
            "assert 'paddle' not in sys.modules; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]

"""The ultralytics converter against torch, without torch: a checkpoint written by torch in
ultralytics' format and torch's predictions for it, both committed (tests/fixtures/, made by
make_ultralytics_release.py). CI has no torch; tests/test_convert.py covers the rest where it is."""
import os
import subprocess
import sys

import numpy as np

import ppyolo_slim  # noqa: F401  (before paddle)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures")
PT = os.path.join(FIX, "ultralytics_yolov5_w0125_release.pt")
REF = os.path.join(FIX, "ultralytics_yolov5_w0125_reference.npz")


def test_converted_release_checkpoint_predicts_what_torch_predicted(tmp_path):
    import paddle
    from ppyolo_slim import load_model
    dst = tmp_path / "w0125.pdparams"
    # the tool, in a process where torch and ultralytics' modules cannot be imported
    code = ("import sys, runpy; sys.modules['torch'] = None; sys.modules['models'] = None; "
            f"sys.argv = ['convert_weights.py', '--src', {PT!r}, '--dst', {str(dst)!r}]; "
            "runpy.run_path('tools/convert_weights.py', run_name='__main__')")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    ref = np.load(REF)
    model = load_model(str(dst))
    m = model.meta
    assert (m.nc, m.names, m.width_multiple, m.depth_multiple) == (3, ["person", "bicycle", "car"], 0.125, 0.33)
    with paddle.no_grad():
        pred = model(paddle.to_tensor(ref["x"])).numpy()
    assert pred.shape == ref["ref"].shape == (2, 3 * (8 * 12 + 4 * 6 + 2 * 3), 8)
    # float32 summation order over 25 layers is what may differ (tests/test_convert.py: 2e-5)
    rel = np.abs(pred - ref["ref"]).max() / np.abs(ref["ref"]).max()
    assert rel < 1e-4, rel
    np.testing.assert_allclose(pred[..., 4:], ref["ref"][..., 4:], atol=1e-4)


def test_the_fixture_is_not_a_trivial_model():
    """The reference must tell models apart: boxes spread, scores not saturated."""
    ref = np.load(REF)["ref"]
    assert ref[..., :4].std() > 1 and 0.05 < ref[..., 4].mean() < 0.95

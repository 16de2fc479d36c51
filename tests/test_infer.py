"""Drawing, image inference (boxes back in original pixels) and tools/infer.py."""
import json
import os

import numpy as np
import pytest

import ppyolo_slim  # noqa: F401
from ppyolo_slim.engine.draw import class_color, draw_detections
from ppyolo_slim.engine.predict import (check_img_size, infer_images, list_images, read_image_rgb,
                                        run_predictor)
from test_eval_helpers import BG, ColourFinder, load_tool, write_rect_image

try:
    from ppyolo_slim.data import letterbox  # noqa: F401
    HAVE_DATA = True
except ImportError:
    HAVE_DATA = False
needs_data = pytest.mark.skipif(not HAVE_DATA, reason="ppyolo_slim.data.letterbox not available yet")


def test_draw_detections_draws_boxes_in_class_colour():
    img = np.zeros((80, 120, 3), np.uint8)
    dets = np.array([[20, 30, 60, 70, 0.87, 1]], np.float32)
    out = draw_detections(img, dets, ["a", "b"], line_width=2)
    assert img.max() == 0 and out.shape == img.shape and out.dtype == np.uint8   # a copy
    col = np.array(class_color(1))
    assert (out[50, 20] == col).all() and (out[50, 60] == col).all() and (out[70, 40] == col).all()
    assert out[50, 40].max() == 0 and out[74:, 64:].max() == 0        # inside / far away untouched
    label = out[10:30, 20:60]                                          # the label sits above the box
    assert (label == col).all(-1).mean() > 0.3 and (label != col).any(-1).any()   # background + text
    assert draw_detections(img, np.zeros((0, 6)), ["a"]).max() == 0
    out = draw_detections(img, np.array([[0, 0, 30, 30, 0.5, 7]]), ["a"])          # unknown id: drawn
    assert out.max() > 0
    with pytest.raises(ValueError, match="uint8"):
        draw_detections(img.astype(np.float32), dets, ["a", "b"])


def test_list_and_read_images(tmp_path):
    write_rect_image(str(tmp_path / "b.png"), 64, 32, [])
    write_rect_image(str(tmp_path / "a.jpg"), 64, 32, [])
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    files = list_images(str(tmp_path))
    assert [os.path.basename(f) for f in files] == ["a.jpg", "b.png", "bad.jpg", "empty.png"]
    assert read_image_rgb(files[1]).shape == (32, 64, 3)
    assert read_image_rgb(files[2]) is None and read_image_rgb(files[3]) is None
    assert read_image_rgb(str(tmp_path / "missing.png")) is None
    assert list_images(str(tmp_path / "*.png")) == [str(tmp_path / "b.png"), str(tmp_path / "empty.png")]
    with pytest.raises(FileNotFoundError, match="nope"):
        list_images(str(tmp_path / "nope"))


def test_run_predictor_feeds_fixed_batches():
    f = ColourFinder(batch=2)
    x = np.zeros((5, 3, 64, 64), np.float32)
    assert run_predictor(f, x).shape == (5, 16, 7) and f.calls == [2, 2, 2]


def test_check_img_size():
    assert check_img_size(64) == (64, None)
    size, warn = check_img_size(70)
    assert size == 96 and "multiple of 32" in warn
    fixed = ColourFinder()
    fixed.fixed_size, fixed.img_size = True, 96
    assert check_img_size(None, fixed) == (96, None)
    with pytest.raises(ValueError, match="exported for 96"):
        check_img_size(64, fixed)


@needs_data
def test_infer_images_maps_boxes_back_to_original_pixels(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    # 128x96 and 96x128 both letterbox to 64 at ratio 0.5 (pads 8 px): exact with even coordinates
    want = {"wide.png": write_rect_image(str(src / "wide.png"), 128, 96, [(10, 20, 40, 50, 0), (60, 10, 120, 90, 1)]),
            "tall.png": write_rect_image(str(src / "tall.png"), 96, 128, [(2, 2, 30, 40, 1)])}
    summary = infer_images(ColourFinder(), list_images(str(src)), str(tmp_path / "out"), 64, log=lambda m: None)
    assert summary["images"] == 2 and not summary["skipped"]
    for name, (boxes, classes) in want.items():
        rec = json.loads((tmp_path / "out" / name.replace(".png", ".json")).read_text())
        got = sorted((d["box"], d["class_id"], d["class_name"]) for d in rec["detections"])
        exp = sorted((b.tolist(), int(c), ["red", "green"][c]) for b, c in zip(boxes, classes))
        assert [g[1:] for g in got] == [e[1:] for e in exp]
        np.testing.assert_allclose([g[0] for g in got], [e[0] for e in exp], atol=1e-3)
        assert all(d["score"] == pytest.approx(0.9) for d in rec["detections"])
        drawn = read_image_rgb(str(tmp_path / "out" / name))
        assert drawn.shape == (rec["height"], rec["width"], 3)
        assert (drawn != BG).any(-1).sum() > (read_image_rgb(str(src / name)) != BG).any(-1).sum()


@needs_data
@pytest.mark.compat
def test_infer_tool_end_to_end(tiny_weights, tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    write_rect_image(str(src / "one.png"), 96, 64, [(10, 10, 40, 40, 0)])
    write_rect_image(str(src / "two.jpg"), 64, 80, [(20, 20, 50, 60, 1)])
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "out"
    rc = load_tool("infer").main(["--weights", tiny_weights, "--source", str(src), "--output", str(out),
                                  "--conf-thres", "0.001", "--max-det", "5", "--device", "cpu"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "broken.png" in text and "skip" in text
    assert sorted(os.listdir(out)) == ["one.json", "one.png", "two.jpg", "two.json"]
    for stem, (h, w) in (("one", (64, 96)), ("two", (80, 64))):
        rec = json.loads((out / f"{stem}.json").read_text())
        assert (rec["height"], rec["width"]) == (h, w) and rec["img_size"] == 64
        assert 0 < len(rec["detections"]) <= 5
        for d in rec["detections"]:
            x1, y1, x2, y2 = d["box"]
            assert 0 <= x1 <= x2 <= w and 0 <= y1 <= y2 <= h
            assert d["class_name"] == ["red", "green"][d["class_id"]] and 0.001 < d["score"] <= 1
        scores = [d["score"] for d in rec["detections"]]
        assert scores == sorted(scores, reverse=True)


@pytest.mark.compat
def test_infer_warns_on_a_truncated_jpeg_as_the_data_scan_does(tiny_weights, tmp_path, capsys):
    from ppyolo_slim.data.checks import BadImage, inspect_image
    src = tmp_path / "src"
    src.mkdir()
    write_rect_image(str(src / "cut.jpg"), 96, 96, [(10, 10, 60, 60, 0)])
    data = (src / "cut.jpg").read_bytes()
    (src / "cut.jpg").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(BadImage, match="truncated JPEG") as scan:
        inspect_image(str(src / "cut.jpg"))
    rc = load_tool("infer").main(["--weights", tiny_weights, "--source", str(src), "--output",
                                  str(tmp_path / "out"), "--device", "cpu"])
    text = capsys.readouterr().out
    assert rc == 0 and f"warning: {src / 'cut.jpg'}: {scan.value}" in text, text
    assert os.path.exists(tmp_path / "out" / "cut.json")     # OpenCV decoded the rest: still run


def test_infer_tool_bad_inputs_are_clear_errors(tiny_weights, tmp_path, capsys):
    infer = load_tool("infer")
    src = tmp_path / "src"
    src.mkdir()
    write_rect_image(str(src / "one.png"), 64, 64, [])
    assert infer.main(["--weights", tiny_weights, "--source", str(src), "--output", str(src)]) == 2
    assert "overwrite" in capsys.readouterr().err
    assert infer.main(["--weights", str(tmp_path / "none.pdparams"), "--source", str(src),
                       "--output", str(tmp_path / "o")]) == 2
    assert "none.pdparams" in capsys.readouterr().err
    assert infer.main(["--onnx", str(tmp_path / "none.onnx"), "--source", str(src),
                       "--output", str(tmp_path / "o")]) == 2
    assert "none.onnx" in capsys.readouterr().err
    (tmp_path / "junk.pdparams").write_bytes(b"junk")
    assert infer.main(["--weights", str(tmp_path / "junk.pdparams"), "--source", str(src),
                       "--output", str(tmp_path / "o")]) == 2
    assert "junk.pdparams" in capsys.readouterr().err


@needs_data
def test_backends_dispatch_through_the_registry(tmp_path, monkeypatch, capsys):
    from ppyolo_slim.engine import predict
    model = tmp_path / "m.onnx"
    model.write_bytes(b"stand-in")
    src = tmp_path / "src"
    src.mkdir()
    write_rect_image(str(src / "x.png"), 128, 96, [(10, 20, 40, 50, 1)])
    monkeypatch.setitem(predict.BACKENDS, "onnx", "ppyolo_slim.no_such_module:Nope")
    assert load_tool("infer").main(["--onnx", str(model), "--source", str(src), "--output", str(tmp_path / "o")]) == 2
    assert "--onnx is not available" in capsys.readouterr().err
    monkeypatch.setitem(predict.BACKENDS, "onnx", "test_eval_helpers:colour_finder_backend")
    assert load_tool("infer").main(["--onnx", str(model), "--source", str(src), "--output", str(tmp_path / "o")]) == 0
    rec = json.loads((tmp_path / "o" / "x.json").read_text())
    assert rec["model"] == str(model) and rec["img_size"] == 64
    assert [(d["box"], d["class_name"]) for d in rec["detections"]] == [([10, 20, 40, 50], "green")]


def test_engine_imports_without_paddle():
    import subprocess
    import sys
    code = ("import sys, ppyolo_slim.engine as e; from ppyolo_slim.engine import postprocess, evaluate, "
            "predict, draw; e.non_max_suppression; assert 'paddle' not in sys.modules, 'paddle imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=os.path.dirname(
        os.path.dirname(os.path.abspath(__file__))))
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("tool", ["infer", "eval"])
def test_engine_without_tensorrt_is_one_line_from_any_folder(tool, tmp_path):
    """`--engine` with ppyolo_slim installed, run from outside the checkout: deploy/ is still
    found, and no TensorRT (none here) is one line, not a traceback nor "No module named 'deploy'"."""
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    site = tmp_path / "site"               # an install: ppyolo_slim importable, the checkout not on sys.path
    site.mkdir()
    os.symlink(os.path.join(root, "ppyolo_slim"), site / "ppyolo_slim")
    (tmp_path / "x.engine").write_bytes(b"not built here")
    write_rect_image(str(tmp_path / "a.png"), 64, 64, [])
    args = ["--source", "a.png", "--output", "out"] if tool == "infer" else []
    env = {k: v for k, v in os.environ.items() if k != "PPYOLO_SLIM_ASSUME_GPU"}
    env["PYTHONPATH"] = str(site)
    r = subprocess.run([sys.executable, os.path.join(root, "tools", f"{tool}.py"), "--engine", "x.engine",
                        "--device", "cpu"] + args, cwd=tmp_path, capture_output=True, text=True,
                       timeout=300, env=env)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("error: --engine needs TensorRT and an NVIDIA GPU: "), lines[0]
    assert "import tensorrt" in lines[0] and "GPU" in lines[0][50:] and "deploy/README.md" in lines[0]


def test_labels_of_overlapping_boxes_never_cover_each_other():
    from ppyolo_slim.engine.draw import layout_labels
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 60, (12, 2))
    dets = np.concatenate([xy, xy + rng.uniform(30, 90, (12, 2)), rng.uniform(0.2, 1, (12, 1)),
                           rng.integers(0, 5, (12, 1))], 1).astype(np.float32)
    dets[:4, :4] = [30, 30, 120, 120]                         # four boxes on the same spot
    labels = layout_labels((240, 320), dets, ["circle", "square", "triangle", "star", "hexagon"])
    rects = [r for r, *_ in labels]
    assert len(rects) == 12
    for i, a in enumerate(rects):
        assert 0 <= a[0] <= a[2] < 320 and 0 <= a[1] <= a[3] < 240, a          # inside the image
        for b in rects[i + 1:]:
            assert a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1], (a, b)
    best = int(np.argmax(dets[:, 4]))
    assert rects[0][3] < dets[best, 1] + 1 or rects[0][1] >= dets[best, 1]     # best: at its box's top


def test_a_box_stands_out_on_a_background_of_its_own_colour():
    from ppyolo_slim.engine.draw import PALETTE, class_color, luminance
    for c in range(len(PALETTE)):
        bg = np.array(class_color(c), np.uint8)
        img = np.tile(bg, (100, 100, 1))
        out = draw_detections(img, np.array([[20, 20, 80, 80, 0.9, c]]), ["x"] * len(PALETTE), line_width=2)
        edge = out[50, 16:25].astype(float)                  # across the left side of the box
        contrast = max(abs(luminance(p) - luminance(bg)) for p in edge)
        assert contrast > 100, (c, bg, edge)
    assert len({class_color(c) for c in range(20)}) == 20


def test_checkpoint_given_as_onnx_or_model_dir_says_to_use_weights(tiny_weights, tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    write_rect_image(str(src / "a.png"), 64, 64, [])
    for flag, says in (("--onnx", "a .pdparams checkpoint, not an ONNX model: give it as --weights"),
                       ("--model-dir", "a file, not an export folder: --model-dir takes the folder")):
        rc = load_tool("infer").main([flag, tiny_weights, "--source", str(src), "--output", str(tmp_path / "o")])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and says in err and len(err.splitlines()) == 1, err

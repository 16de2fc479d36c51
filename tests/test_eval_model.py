"""evaluate_model / evaluate_on_data / tools/eval.py: letterbox, predict, NMS, map back, COCOeval."""
import json
import os

import numpy as np
import pytest

import ppyolo_slim  # noqa: F401
from test_eval_helpers import ColourFinder, load_tool, write_rect_image

data = pytest.importorskip("ppyolo_slim.data")
if not all(hasattr(data, n) for n in ("load_data", "DetectionDataset", "build_loader", "Record")):
    pytest.skip("ppyolo_slim.data is not complete yet", allow_module_level=True)

from ppyolo_slim.engine.evaluate import EvaluationError, coco_evaluate, evaluate_model  # noqa: E402

# (file, w, h, rects): sizes that letterbox to 64 at ratio 0.5, so even coordinates stay exact
IMAGES = [("a.png", 128, 96, [(10, 20, 40, 50, 0), (60, 10, 120, 90, 1)]),
          ("b.png", 96, 128, [(2, 2, 30, 40, 1), (50, 60, 90, 120, 0)]),
          ("c.png", 128, 128, [(20, 20, 60, 60, 0)]),
          ("d.png", 128, 96, [])]


def write_set(root):
    recs = []
    for i, (name, w, h, rects) in enumerate(IMAGES):
        boxes, classes = write_rect_image(str(root / name), w, h, rects)
        recs.append(data.Record(str(root / name), i, w, h, boxes, classes))
    return recs


def test_perfect_finder_scores_one_and_boxes_come_back_exact(tmp_path):
    recs = write_set(tmp_path)
    m, dets = evaluate_model(ColourFinder(), recs, ["red", "green"], 64, batch_size=3)
    assert m["map50_95"] == pytest.approx(1.0) and m["map50"] == pytest.approx(1.0)
    for r in recs:
        d = dets[r.image_id]
        order = np.lexsort((d[:, 0], d[:, 5]))
        ref = np.lexsort((r.boxes[:, 0], r.classes))
        np.testing.assert_allclose(d[order, :4], r.boxes[ref], atol=1e-3)
        np.testing.assert_array_equal(d[order, 5], r.classes[ref])
    assert m == {**m, **coco_evaluate(recs, dets, ["red", "green"]), "eval_time_s": m["eval_time_s"]}
    assert set(m["speed_ms"]) >= {"preprocess", "inference", "nms"} and m["time_s"] > 0


def test_fixed_batch_predictor_gives_the_same_result(tmp_path):
    recs = write_set(tmp_path)
    f = ColourFinder(batch=2)
    m, dets = evaluate_model(f, recs, ["red", "green"], 64, batch_size=3)
    assert set(f.calls) == {2} and m["map50_95"] == pytest.approx(1.0)


def test_wrong_number_of_classes_is_a_clear_error(tmp_path):
    recs = write_set(tmp_path)
    with pytest.raises(EvaluationError, match=r"expected \[2, N, 8\] for the data's 3 classes"):
        evaluate_model(ColourFinder(), recs[:2], ["red", "green", "blue"], 64, batch_size=2)
    with pytest.raises(EvaluationError, match="empty"):
        evaluate_model(ColourFinder(), [], ["red", "green"], 64)


def write_yolo_dataset(root, names=("red", "green")):
    """The ultralytics layout: images/val + labels/val, and a data YAML."""
    (root / "images" / "val").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    for name, w, h, rects in IMAGES:
        write_rect_image(str(root / "images" / "val" / name), w, h, rects)
        lines = [f"{c} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"
                 for x1, y1, x2, y2, c in rects]
        (root / "labels" / "val" / (name[:-4] + ".txt")).write_text("\n".join(lines) + ("\n" if lines else ""))
    y = root / "data.yaml"
    y.write_text(f"path: {root}\ntrain: images/val\nval: images/val\nnames: {list(names)}\n")
    return str(y)


def test_evaluate_on_data_reads_the_val_split(tmp_path):
    from ppyolo_slim.engine.evaluate import evaluate_on_data
    spec = write_yolo_dataset(tmp_path)
    warnings = []
    rep = evaluate_on_data(ColourFinder(names=("r", "green")), spec, 64, batch_size=4, warn=warnings.append)
    assert rep["map50_95"] == pytest.approx(1.0, abs=1e-3) and rep["num_images"] == 4
    assert rep["names"] == ["red", "green"] and "0: 'r' vs 'red'" in warnings[0]
    with pytest.raises(EvaluationError, match="predicts 3 classes"):
        evaluate_on_data(ColourFinder(names=("a", "b", "c")), spec, 64)


def test_eval_tool_writes_eval_json_beside_the_weights(tiny_weights, tmp_path, capsys):
    spec = write_yolo_dataset(tmp_path / "ds")
    rc = load_tool("eval").main(["--weights", tiny_weights, "--data", spec, "--img-size", "64",
                                 "--batch-size", "2", "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0
    # not the data these weights were trained on: its own name, the weights' eval.json untouched
    assert not os.path.exists(os.path.join(os.path.dirname(tiny_weights), "eval.json"))
    rep = json.loads(open(os.path.join(os.path.dirname(tiny_weights), "eval_ds_data.json")).read())
    assert 0 <= rep["map50_95"] <= rep["map50"] <= 1 and rep["num_images"] == 4
    assert rep["settings"]["img_size"] == 64 and rep["settings"]["conf_thres"] == 0.001
    assert rep["model"] == os.path.abspath(tiny_weights) and rep["names"] == ["red", "green"]
    assert "Class" in out and "red" in out and "green" in out and "mAP@0.5:0.95" in out
    # --output, -o config overrides
    dst = tmp_path / "r" / "e.json"
    rc = load_tool("eval").main(["--weights", tiny_weights, "--data", spec, "--output", str(dst),
                                 "-o", "img_size=64", "-o", "eval.conf_thres=0.2"])
    assert rc == 0 and json.loads(dst.read_text())["settings"]["conf_thres"] == 0.2


def test_eval_tool_bad_inputs(tiny_weights, tmp_path, capsys):
    ev = load_tool("eval")
    assert ev.main(["--weights", tiny_weights, "--data", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err
    assert ev.main(["--weights", tiny_weights, "-o", "eval.nonsense=1"]) == 2
    assert "eval.nonsense" in capsys.readouterr().err
    spec = write_yolo_dataset(tmp_path / "ds3", names=("a", "b", "c"))
    assert ev.main(["--weights", tiny_weights, "--data", spec, "--img-size", "64"]) == 2
    assert "predicts 2 classes" in capsys.readouterr().err


def test_eval_json_is_the_weights_own_data_only(tmp_path, capsys):
    from ppyolo_slim.data import load_data
    from ppyolo_slim.model import ModelMeta, build_model, save_weights
    own, other = write_yolo_dataset(tmp_path / "own"), write_yolo_dataset(tmp_path / "other")
    parent = {"stage": "sparse", "data": load_data(own, verbose=False).source}
    meta = ModelMeta(nc=2, names=["red", "green"], img_size=64, made_by={"stage": "prune", "parent": parent})
    w = tmp_path / "run" / "pruned.pdparams"
    save_weights(str(w), build_model(meta).state_dict(), meta)
    args = ["--weights", str(w), "--img-size", "64", "--batch-size", "2"]
    assert load_tool("eval").main(args + ["--data", own]) == 0
    assert load_tool("eval").main(args + ["--data", other]) == 0
    assert sorted(os.listdir(w.parent)) == ["eval.json", "eval_other_data.json", "pruned.pdparams"]
    assert json.loads((w.parent / "eval.json").read_text())["data"] == own
    assert "eval_other_data.json" in capsys.readouterr().out


def test_eval_without_data_scores_the_weights_own_data(tmp_path, capsys):
    """No -c, no --data: the data in the weights' metadata, not the embedded shapes set (a
    model of another data set would otherwise fail with 'predicts 2 classes but shapes has 5')."""
    from ppyolo_slim.data import load_data
    from ppyolo_slim.model import ModelMeta, build_model, save_weights
    own = write_yolo_dataset(tmp_path / "own")
    meta = ModelMeta(nc=2, names=["red", "green"], img_size=64,
                     made_by={"stage": "train", "data": load_data(own, verbose=False).source})
    w = tmp_path / "run" / "best.pdparams"
    save_weights(str(w), build_model(meta).state_dict(), meta)
    assert load_tool("eval").main(["--weights", str(w), "--batch-size", "2"]) == 0
    assert json.loads((w.parent / "eval.json").read_text())["data"] == own


def test_an_exported_model_knows_its_data_from_export_report(tmp_path):
    """ONNX / Paddle Inference predictors carry no checkpoint metadata: the data comes from the
    export_report.json the exporter wrote beside them (else the eval fell back to shapes)."""
    ev = load_tool("eval")
    (tmp_path / "export_report.json").write_text(json.dumps(
        {"made_by": {"stage": "prune", "parent": {"stage": "sparse", "data": "/d/data.yaml"}}}))
    onnx = tmp_path / "model.onnx"
    assert ev.trained_on(object(), str(onnx)) == "/d/data.yaml"
    assert ev.trained_on(object(), str(tmp_path)) == "/d/data.yaml"      # --model-dir
    assert ev.trained_on(object(), str(tmp_path / "none" / "model.onnx")) is None

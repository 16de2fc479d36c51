"""Export: Paddle inference model + ONNX, checked against the dygraph model with independent
runtimes (onnxruntime, Paddle Inference), the ONNX NMS tail against the NumPy NMS, the
predictors through evaluate_model / tools/infer.py, and failure modes (tampered files,
bad arguments, a failed export leaving nothing behind)."""
import json
import os
import shutil

import numpy as np
import pytest

import ppyolo_slim  # noqa: F401  (import order: before paddle)
import cv2
import onnx
import onnxruntime as ort
import paddle
import yaml
from onnx import numpy_helper

from ppyolo_slim.compat import OLD_IR_MODEL, saved_model_file
from ppyolo_slim.data import Record
from ppyolo_slim.engine.evaluate import evaluate_model
from ppyolo_slim.engine.postprocess import non_max_suppression
from ppyolo_slim.engine.predict import DygraphPredictor
from ppyolo_slim.export import (ExportCheckError, OnnxPredictor, PaddleInferencePredictor, check_export,
                                export_model, nms_model)
from conftest import load_tool, uneven_model
from ppyolo_slim.export import exporter as exporter_mod
from ppyolo_slim.export.check import NOISE_FACTOR, synthetic_predictions
from ppyolo_slim.model import ModelMeta, build_model, save_weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


export_tool, infer_tool = load_tool("export"), load_tool("infer")

TOL = 1e-4   # the exporter's floor: boxes / img_size and scores


def _num_boxes(img_size, na=3):
    return na * sum((img_size // s) ** 2 for s in (8, 16, 32))


def _close(out, ref, img_size, noise=(0.0, 0.0)):
    """Within the exporter's rule: max(1e-4 of the image, NOISE_FACTOR x the model's float32 noise)."""
    assert out.shape == ref.shape
    assert np.isfinite(out).all()
    assert np.abs(out[..., :4] - ref[..., :4]).max() <= max(TOL * img_size, NOISE_FACTOR * noise[0])
    assert np.abs(out[..., 4:] - ref[..., 4:]).max() <= max(TOL, NOISE_FACTOR * noise[1])


def _fp32_noise(model, x):
    """How far the float32 model is from itself in float64: bounded, so the allowance is too."""
    ref64 = exporter_mod._float64_twin(model, x.shape[-1])(x)
    ref32 = DygraphPredictor(model)(x)
    box, score = np.abs(ref32 - ref64)[..., :4].max(), np.abs(ref32 - ref64)[..., 4:].max()
    assert box < 2e-4 * x.shape[-1] and score < 1e-4   # so the allowance stays < 1 % of the image
    return box, score


def _uneven_state(nc=3):
    """A pruned-looking model: every width cut by an odd amount, random BN statistics, and
    head biases that give confident, varied scores (so NMS and mAP have work to do)."""
    paddle.seed(0)   # the conv weights come from Paddle's initialisers
    model = uneven_model(nc)
    rng = np.random.default_rng(1)
    for conv in model.detect.m:   # logits with a spread of ~1 around 0: scores all over (0, 1)
        conv.weight.set_value(conv.weight.numpy() * 5)
        b = conv.bias.numpy().reshape(3, nc + 5)
        b[:, 4] = 0.0
        b[:, 5:] = rng.uniform(-1, 1, (3, nc))
        conv.bias.set_value(b.reshape(-1).astype("float32"))
    return model.state_dict()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    d = tmp_path_factory.mktemp("weights")
    paddle.seed(1)
    orig = str(d / "orig.pdparams")
    save_weights(orig, build_model(ModelMeta(nc=2, names=["cat", "dog"], img_size=64)).state_dict(),
                 ModelMeta(nc=2, names=["cat", "dog"], img_size=64))
    uneven = str(d / "uneven.pdparams")
    # the metadata claims plain yolov5n multiples: the shapes must win
    save_weights(uneven, _uneven_state(), ModelMeta(nc=3, names=["a", "b", "c"], img_size=96))
    return {"orig": orig, "uneven": uneven}


@pytest.fixture(scope="module")
def export_orig(weights, tmp_path_factory):
    """Through the command line: fixed batch 1, the checkpoint's 64 px."""
    out = str(tmp_path_factory.mktemp("exp") / "orig")
    assert export_tool.main(["--weights", weights["orig"], "--output", out]) == 0
    return out


@pytest.fixture(scope="module")
def export_uneven(weights, tmp_path_factory):
    """Through the library: dynamic batch, NMS in the ONNX graph."""
    out = str(tmp_path_factory.mktemp("exp") / "uneven")
    report = export_model(weights["uneven"], out, batch=None, nms=True, conf_thres=0.25, max_det=50)
    return out, report


def test_original_export_files_and_ultralytics_layout(export_orig, weights):
    names = set(os.listdir(export_orig))
    assert {saved_model_file(), "model.pdiparams", "model.onnx", "infer_cfg.yml", "export_report.json"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    m = onnx.load(os.path.join(export_orig, "model.onnx"))
    onnx.checker.check_model(m, full_check=True)
    dims = lambda v: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert [i.name for i in m.graph.input] == ["images"] and dims(m.graph.input[0]) == [1, 3, 64, 64]
    assert [o.name for o in m.graph.output] == ["output0"]
    assert dims(m.graph.output[0]) == [1, _num_boxes(64), 7]
    meta = {p.key: p.value for p in m.metadata_props}
    assert meta["names"] == "{0: 'cat', 1: 'dog'}" and meta["stride"] == "32"   # as ultralytics writes them
    assert not [n for n in m.graph.node if n.op_type == "Constant"] and len(m.graph.initializer) > 100


@pytest.mark.compat
def test_original_onnx_and_paddle_inference_match_dygraph(export_orig, weights):
    ref_model = DygraphPredictor(ppyolo_slim.load_model(weights["orig"]))
    x = np.random.default_rng(5).random((1, 3, 64, 64), dtype=np.float32)   # not the check's input
    ref = ref_model(x)
    sess = ort.InferenceSession(os.path.join(export_orig, "model.onnx"), providers=["CPUExecutionProvider"])
    _close(sess.run(["output0"], {"images": x})[0], ref, 64)
    pi = PaddleInferencePredictor(export_orig, device="cpu")
    _close(pi(x), ref, 64)
    assert (pi.batch, pi.img_size, pi.fixed_size, pi.names) == (1, 64, True, ["cat", "dog"])
    with pytest.raises(ValueError, match="batch 1"):
        pi(np.zeros((2, 3, 64, 64), np.float32))
    with pytest.raises(ValueError, match="64x64"):
        OnnxPredictor(export_orig)(np.zeros((1, 3, 96, 96), np.float32))
    report = json.load(open(os.path.join(export_orig, "export_report.json")))
    assert report["check"]["allowed"]["box_px"] == pytest.approx(TOL * 64)   # tiny noise: the floor rules
    assert 0 < report["check"]["float32_noise"]["box_px"] < TOL * 64 / 10
    for backend in ("onnxruntime", "paddle_inference"):
        d = report["check"][backend]
        assert d["finite"] and 0 <= d["box_rel_img"] <= TOL and 0 <= d["score"] <= TOL
    assert report["sizes_bytes"]["model.onnx"] == os.path.getsize(os.path.join(export_orig, "model.onnx"))
    import paddle2onnx
    assert report["versions"]["paddle2onnx"] == paddle2onnx.__version__
    assert report["versions"]["paddlepaddle"] == paddle.__version__


@pytest.mark.compat
def test_uneven_dynamic_batch_runs_batch_1_and_3(export_uneven, weights):
    out, _ = export_uneven
    model = ppyolo_slim.load_model(weights["uneven"])
    ref_model = DygraphPredictor(model)
    onnx_pred, pi = OnnxPredictor(out, device="cpu"), PaddleInferencePredictor(out, device="cpu")
    assert onnx_pred.batch is None and pi.batch is None and onnx_pred.img_size == 96
    assert [o.name for o in onnx_pred.session.get_outputs()] == ["detections", "output0"]
    assert onnx_pred.session.get_inputs()[0].shape == ["batch", 3, 96, 96]
    rng = np.random.default_rng(1)
    for b in (1, 3):
        x = rng.random((b, 3, 96, 96), dtype=np.float32)
        ref = ref_model(x)
        assert ref.shape == (b, _num_boxes(96), 8)
        noise = _fp32_noise(model, x)
        _close(onnx_pred(x), ref, 96, noise)
        _close(pi(x), ref, 96, noise)


def test_infer_cfg_contents(export_uneven):
    out, report = export_uneven
    cfg = yaml.safe_load(open(os.path.join(out, "infer_cfg.yml")))
    assert cfg["img_size"] == 96 and cfg["batch"] is None and cfg["dynamic_batch"] is True
    assert cfg["label_list"] == ["a", "b", "c"] and cfg["nc"] == 3
    assert cfg["input"] == {"name": "images", "layout": "NCHW", "dtype": "float32", "shape": [-1, 3, 96, 96]}
    assert cfg["preprocess"]["color"] == "RGB" and cfg["preprocess"]["letterbox"]["pad_value"] == 114
    assert cfg["preprocess"]["scale"] == "1/255"
    assert cfg["output"]["onnx"]["output0"]["shape"] == [-1, _num_boxes(96), 8]
    assert list(cfg["output"]["onnx"]) == ["detections", "output0"]
    assert cfg["postprocess"] == {"conf_thres": 0.25, "iou_thres": 0.45, "max_det": 50,
                                  "multi_label": False, "nms_in_onnx": True}
    assert cfg["output"]["paddle"]["name"] == report["paddle_output"]


@pytest.mark.parametrize("opset,max_det", [(11, 300), (13, 7), (19, 300)])
def test_nms_tail_equals_numpy_nms(opset, max_det):
    sess = ort.InferenceSession(nms_model(3, 0.25, 0.45, max_det, opset).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    raw = synthetic_predictions(3, 800, 3, 128, seed=opset)
    det = sess.run(None, {"output0": raw})[0]
    assert det.shape[1] == 7 and np.all(np.diff(det[:, 0]) >= 0)   # grouped by image
    for b, ref in enumerate(non_max_suppression(raw, 0.25, 0.45, max_det=max_det)):
        mine = det[det[:, 0] == b][:, 1:]
        assert len(ref) > 0 and mine.shape == ref.shape
        assert np.all(np.diff(mine[:, 4]) <= 0)                      # best first
        _assert_same_rows(mine, ref, atol=1e-5)
    assert sess.run(None, {"output0": np.zeros((2, 10, 8), np.float32)})[0].shape == (0, 7)


def _assert_same_rows(a, b, atol, score_atol=None):
    """Same detections (x1, y1, x2, y2, score, cls) in any order (near-equal scores may swap
    places): boxes within ``atol``, scores within ``score_atol`` (default atol), same class."""
    assert a.shape == b.shape, (a.shape, b.shape)
    score_atol = atol if score_atol is None else score_atol
    used = np.zeros(len(b), bool)
    for row in a:
        d = np.maximum(np.abs(b[:, :4] - row[:4]).max(1) / atol, np.abs(b[:, 4] - row[4]) / score_atol)
        d[(b[:, 5] != row[5]) | used] = np.inf
        j = int(np.argmin(d))
        assert d[j] <= 1, (row, b[j])
        used[j] = True


@pytest.mark.compat
def test_nms_export_detections_equal_numpy_nms_of_its_raw_output(export_uneven):
    out, report = export_uneven
    assert report["check"]["onnx_nms"]["rows_synthetic"] > 0
    sess = ort.InferenceSession(os.path.join(out, "model.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(2).random((2, 3, 96, 96), dtype=np.float32)
    det, raw = sess.run(["detections", "output0"], {"images": x})
    refs = non_max_suppression(raw, 0.25, 0.45, max_det=50)
    assert sum(len(r) for r in refs) > 0
    for b, ref in enumerate(refs):
        _assert_same_rows(det[det[:, 0] == b][:, 1:], ref, atol=1e-4)


@pytest.fixture(scope="module")
def tiny_images(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    recs = []
    for i, (h, w) in enumerate([(60, 80), (100, 50), (96, 96)]):
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        cv2.rectangle(img, (5, 5), (w // 2, h // 2), (255, 0, 0), -1)
        p = str(d / f"im{i}.png")
        cv2.imwrite(p, img)
        recs.append(Record(p, i, w, h, np.array([[5, 5, w // 2, h // 2]]), np.array([i % 3])))
    return str(d), recs


def test_evaluate_model_same_detections_for_all_backends(export_uneven, weights, tiny_images):
    out, _ = export_uneven
    _, recs = tiny_images
    results = {}
    for name, pred in [("dygraph", DygraphPredictor(ppyolo_slim.load_model(weights["uneven"]))),
                       ("onnx", OnnxPredictor(out)), ("paddle", PaddleInferencePredictor(out))]:
        results[name] = evaluate_model(pred, recs, ["a", "b", "c"], 96, batch_size=2, conf_thres=0.1)
    m_ref, d_ref = results["dygraph"]
    assert sum(len(v) for v in d_ref.values()) > 10
    for name in ("onnx", "paddle"):
        m, d = results[name]
        assert abs(m["map50_95"] - m_ref["map50_95"]) < 1e-6 and abs(m["map50"] - m_ref["map50"]) < 1e-6
        for i in d_ref:
            _assert_same_rows(d[i], d_ref[i], atol=0.05, score_atol=1e-4)   # boxes in original pixels


def test_infer_tool_onnx_and_model_dir_match_weights(export_uneven, weights, tiny_images, tmp_path):
    out, _ = export_uneven
    src, _ = tiny_images
    runs = {"weights": ["--weights", weights["uneven"]], "onnx": ["--onnx", os.path.join(out, "model.onnx")],
            "model_dir": ["--model-dir", out]}
    dets = {}
    for k, flag in runs.items():
        o = str(tmp_path / k)
        assert infer_tool.main(flag + ["--source", src, "--output", o, "--conf-thres", "0.3",
                                       "--device", "cpu", "--no-images"]) == 0
        dets[k] = {f: json.load(open(os.path.join(o, f)))["detections"] for f in sorted(os.listdir(o))}
    assert sum(len(v) for v in dets["weights"].values()) > 0
    as_rows = lambda ds: np.array([d["box"] + [d["score"], d["class_id"]] for d in ds]).reshape(-1, 6)  # noqa
    for k in ("onnx", "model_dir"):
        assert dets[k].keys() == dets["weights"].keys()
        for f in dets[k]:
            _assert_same_rows(as_rows(dets[k][f]), as_rows(dets["weights"][f]), atol=0.06,
                              score_atol=2e-5)   # the JSON rounds boxes to 0.01 px, scores to 1e-5


@pytest.mark.compat
def test_paddleslim_pruned_model_exports_and_matches(weights, tmp_path):
    """A model pruned by PaddleSlim (ppyolo_slim.slim), exported from the live Layer, fixed
    batch 2, opset 11."""
    from ppyolo_slim.export import export_layer
    from ppyolo_slim.slim.pruner import prune_model
    model = ppyolo_slim.load_model(weights["uneven"])
    before, params_before = model.model[2].cv1.conv.weight.shape[0], rep_params(model)
    pruned = prune_model(model, model.meta, ratio=0.5).model   # (prunes `model` in place too)
    assert pruned.model[2].cv1.conv.weight.shape[0] < before
    out = str(tmp_path / "pruned")
    rep = export_layer(pruned, model.meta, out, img_size=64, batch=2, opset=11, log=lambda s: None)
    assert rep["parameters"] == rep_params(pruned) < 0.7 * params_before
    x = np.random.default_rng(3).random((2, 3, 64, 64), dtype=np.float32)
    ref = DygraphPredictor(pruned)(x)
    _close(OnnxPredictor(out)(x), ref, 64, _fp32_noise(pruned, x))
    _close(PaddleInferencePredictor(out)(x), ref, 64, _fp32_noise(pruned, x))


def rep_params(model):
    from ppyolo_slim.model.yolo import count_parameters
    return count_parameters(model)


def test_onnx_alone_reads_names_from_metadata(export_orig, tmp_path):
    shutil.copy(os.path.join(export_orig, "model.onnx"), tmp_path / "yolo.onnx")
    p = OnnxPredictor(str(tmp_path / "yolo.onnx"))
    assert (p.names, p.img_size, p.batch, p.fixed_size) == (["cat", "dog"], 64, 1, True)


def test_latency_helper(export_orig):
    from ppyolo_slim.export import latency_ms
    r = latency_ms(OnnxPredictor(export_orig), runs=3, warmup=1)
    assert r["batch"] == 1 and r["img_size"] == 64 and r["runs"] == 3 and 0 < r["p50_ms"] <= r["p90_ms"]


def _tamper_onnx(path, conv_index=10, factor=1.05):
    """Scale one conv's weights by 5% (1 % is caught too, with less margin on this model)."""
    m = onnx.load(path)
    name = [n for n in m.graph.node if n.op_type == "Conv"][conv_index].input[1]
    t = next(t for t in m.graph.initializer if t.name == name)
    t.CopyFrom(numpy_helper.from_array((numpy_helper.to_array(t) * factor).astype(np.float32), name))
    onnx.save(m, path)


def test_tampered_exports_are_detected(export_orig, weights, tmp_path):
    ref = DygraphPredictor(ppyolo_slim.load_model(weights["orig"]))
    bad = str(tmp_path / "bad_onnx")
    shutil.copytree(export_orig, bad)
    check_export(bad, ref, log=lambda s: None)             # the untouched copy passes
    _tamper_onnx(os.path.join(bad, "model.onnx"))
    with pytest.raises(ExportCheckError, match="onnxruntime vs dygraph.*DIFFERENT"):
        check_export(bad, ref, log=lambda s: None)

    bad2 = str(tmp_path / "bad_params")
    shutil.copytree(export_orig, bad2)
    params = os.path.join(bad2, "model.pdiparams")
    data = bytearray(open(params, "rb").read())
    mid = len(data) // 2
    data[mid:mid + 4096] = np.random.default_rng(0).integers(0, 255, 4096, dtype=np.uint8).tobytes()
    open(params, "wb").write(bytes(data))
    with pytest.raises(ExportCheckError, match="paddle_inference"):
        check_export(bad2, ref, log=lambda s: None)


def test_tolerance_widens_with_the_models_own_float32_noise(export_uneven, weights):
    """A reference 0.05 px off (5x the 1e-4 floor at 96 px) fails on the floor alone, and
    passes once float64 shows the reference itself is that noisy."""
    out, _ = export_uneven
    dy = DygraphPredictor(ppyolo_slim.load_model(weights["uneven"]))

    def noisy(x):
        y = dy(x)
        y[..., :4] += 0.05
        return y

    exact64 = lambda x: dy(x.astype(np.float32)).astype(np.float64)  # noqa: E731
    with pytest.raises(ExportCheckError, match="allowed 0.0096"):
        check_export(out, noisy, log=lambda s: None)
    rep = check_export(out, noisy, reference64=exact64, log=lambda s: None)
    assert rep["float32_noise"]["box_px"] == pytest.approx(0.05, rel=1e-3)
    assert rep["allowed"]["box_px"] == pytest.approx(NOISE_FACTOR * 0.05, rel=1e-3)


def test_failed_export_leaves_nothing_behind(weights, tmp_path, monkeypatch, capsys):
    real = exporter_mod.paddle_to_onnx

    def corrupting(model_file, params_file, opset):   # an exporter bug: one conv's weights off by 5%
        m = onnx.load_from_string(real(model_file, params_file, opset))
        from ppyolo_slim.export.onnx_graph import constants_to_initializers
        constants_to_initializers(m.graph)
        p = str(tmp_path / "scratch.onnx")
        onnx.save(m, p)
        _tamper_onnx(p)
        return open(p, "rb").read()

    monkeypatch.setattr(exporter_mod, "paddle_to_onnx", corrupting)
    parent = tmp_path / "out"
    parent.mkdir()
    new = str(parent / "new")
    assert export_tool.main(["--weights", weights["orig"], "--output", new]) == 1
    assert "export check failed" in capsys.readouterr().err
    assert os.listdir(parent) == []                       # no folder, no temp files

    old = parent / "old"                                  # an earlier export stays as it was
    old.mkdir()
    (old / "model.onnx").write_bytes(b"previous")
    with pytest.raises(ExportCheckError):
        export_model(weights["orig"], str(old), log=lambda s: None)
    assert os.listdir(old) == ["model.onnx"] and (old / "model.onnx").read_bytes() == b"previous"
    assert sorted(os.listdir(parent)) == ["old"]


def test_reexport_replaces_files_and_drops_stale_onnx(weights, tmp_path):
    out = tmp_path / "exp"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"stale")
    (out / "notes.txt").write_text("mine")
    export_model(weights["orig"], str(out), onnx=False, check=False, log=lambda s: None)
    program = saved_model_file()   # Paddle 3 writes model.json and no .pdiparams.info
    info = ["model.pdiparams.info"] if program == OLD_IR_MODEL else []
    assert sorted(os.listdir(out)) == sorted(["export_report.json", "infer_cfg.yml", "model.pdiparams",
                                              program, "notes.txt"] + info)
    assert yaml.safe_load(open(out / "infer_cfg.yml"))["onnx_file"] is None


@pytest.mark.parametrize("args,msg", [
    (["--img-size", "100"], "multiple of 32"),
    (["--nms", "--no-onnx"], "--no-onnx"),
    (["--nms", "--opset", "10"], "opsets 11..19"),
    (["--opset", "20"], "opsets 11..19"),
    (["--batch", "0"], "--batch must be"),
])
def test_bad_arguments_are_clear_errors(weights, tmp_path, capsys, args, msg):
    out = str(tmp_path / "x")
    assert export_tool.main(["--weights", weights["orig"], "--output", out] + args) == 2
    assert msg in capsys.readouterr().err
    assert not os.path.exists(out)


def test_missing_weights_is_a_clear_error(tmp_path, capsys):
    assert export_tool.main(["--weights", str(tmp_path / "nope.pdparams"), "--output", str(tmp_path / "x")]) == 2
    assert "nope.pdparams" in capsys.readouterr().err

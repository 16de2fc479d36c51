"""The hand-built TensorRT network, executed on the CPU stand-in, against the Paddle model:
original, pruned (the real pruner, uneven channel counts) and converted ultralytics
weights; dynamic batch, NMS inside the graph, the FP16 graph, BN as a scale layer;
the CLI's behaviour without TensorRT; the INT8 calibrator's logic; TensorRT 10/11 plans."""
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

import ppyolo_slim  # noqa: F401  (import order)
import paddle

from ppyolo_slim.deploy import builder as B
from ppyolo_slim.deploy import numpy_net
from ppyolo_slim.deploy.check import (EXACT_RTOL, allowed, check_against_paddle, check_input, float32_noise,
                                      run_paddle, run_paddle_float64, run_standin, within_tolerance)
from ppyolo_slim.model import ModelMeta, build_model, load_weights, save_weights
from ppyolo_slim.model.channels import WeightShapeError
from ppyolo_slim.model.spec import DEFAULT_ANCHORS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# anchors for ~128 px images (ultralytics' default / 4): box sizes stay below 256 px, where
# float32 resolves 1e-4 (2-15 spacings), so the strict 1e-4 bound below is robust
SMALL_ANCHORS = [[a / 4 for a in row] for row in DEFAULT_ANCHORS]
META = ModelMeta(nc=3, names=["circle", "square", "triangle"], anchors=SMALL_ANCHORS)


def randomise_bns(model, seed):
    """Trained-looking BN statistics, so folding them into the convs is really exercised."""
    rng = np.random.default_rng(seed)
    for _, layer in model.named_sublayers():
        if isinstance(layer, paddle.nn.BatchNorm2D):
            c = layer.weight.shape[0]
            layer.weight.set_value(rng.uniform(0.05, 1.5, c).astype("float32"))
            layer.bias.set_value((0.1 * rng.standard_normal(c)).astype("float32"))
            layer._mean.set_value((0.1 * rng.standard_normal(c)).astype("float32"))
            layer._variance.set_value(rng.uniform(0.5, 1.5, c).astype("float32"))
    return model


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    paddle.seed(0)
    model = randomise_bns(build_model(META), 0)
    path = str(tmp_path_factory.mktemp("deploy") / "yolov5n.pdparams")
    save_weights(path, model.state_dict(), META)
    return path


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    """Pruned by the project's PaddleSlim pruner to uneven widths (round_to=1)."""
    from ppyolo_slim.slim.pruner import prune_model
    paddle.seed(1)
    model = randomise_bns(build_model(META), 1)
    model.eval()
    res = prune_model(model, META, ratio=0.6, min_channels=3, round_to=1, trace_size=64)
    path = str(tmp_path_factory.mktemp("deploy") / "pruned.pdparams")
    save_weights(path, res.state, META)
    return path


@pytest.mark.compat
def test_check_original_weights(original):
    rep = check_against_paddle(original, img_size=128)
    assert rep.passed and rep.max_abs_diff < 1e-4, rep
    assert rep.output_shape == (1, 3 * (16 * 16 + 8 * 8 + 4 * 4), 8)
    assert rep.layers > 200


def test_check_default_anchors_large_boxes(tmp_path):
    """ultralytics' default anchors give box sizes of ~300 px here: the float32 bound follows the
    model's own float32 noise there, and the float64 comparison is still exact."""
    meta = ModelMeta(nc=3, names=META.names)
    paddle.seed(0)
    path = str(tmp_path / "default_anchors.pdparams")
    save_weights(path, randomise_bns(build_model(meta), 0).state_dict(), meta)
    rep = check_against_paddle(path, img_size=64)
    assert rep.passed and rep.exact_max_rel_diff < 1e-12 and abs(rep.worst["paddle"]) > 64, rep
    assert rep.max_abs_diff <= rep.allowed["box_px"]


@pytest.fixture(scope="module")
def converted_release(tmp_path_factory):
    """tests/fixtures' ultralytics release checkpoint (fp16, one BN with eps 1e-5), converted
    by tools/convert_weights.py, which reads the .pt without torch."""
    from conftest import load_tool
    dst = str(tmp_path_factory.mktemp("deploy") / "converted_release.pdparams")
    src = os.path.join(ROOT, "tests", "fixtures", "ultralytics_yolov5_w0125_release.pt")
    assert load_tool("convert_weights").main(["--src", src, "--dst", dst]) == 0
    return dst


def test_check_converted_release_fixture_without_torch(converted_release):
    """The case a fresh clone hit: at 320 px the graph differs from Paddle by ~0.04 px on a
    ~700 px box side, which is Paddle's own float32 rounding (its float32 and float64 runs differ
    by as much), not a builder error: the float64 graph matches Paddle in float64 to ~1e-13."""
    rep = check_against_paddle(converted_release, img_size=320)
    assert rep.passed, rep
    assert rep.exact_max_rel_diff < 1e-11
    assert rep.float32_noise["box_px"] > 0.01 and rep.max_abs_diff > 0.01   # the old 16-ulp bound failed here
    assert rep.max_abs_diff <= 1.5 * rep.float32_noise["box_px"]
    spacing = float(np.spacing(np.float32(abs(rep.worst["paddle"]))))
    assert rep.max_abs_diff > 16 * spacing, "the old fixed bound would have passed: the figures changed"


def test_exact_check_sees_paddles_float32_bn_epsilon(converted_release, monkeypatch):
    """Paddle's batch_norm keeps epsilon as a float32 (1e-3 -> 0.0010000000475); folding with the
    float64 1e-3 moves outputs by ~1e-8 relative on small-variance BNs: the exact check sees it."""
    real = B._Emitter.__init__

    def float64_eps(self, *a, **k):
        real(self, *a, **k)
        self.eps = B._bn_eps()
    monkeypatch.setattr(B._Emitter, "__init__", float64_eps)
    rep = check_against_paddle(converted_release, img_size=64)
    assert not rep.passed and rep.exact_max_rel_diff > 100 * EXACT_RTOL, rep.exact_max_rel_diff


@pytest.mark.compat
def test_check_pruned_weights_with_uneven_channels(original, pruned):
    state, _ = load_weights(pruned)
    orig, _ = load_weights(original)
    widths = [v.shape[0] for k, v in state.items() if k.endswith("conv.weight")]
    assert any(w % 8 for w in widths), "the pruned model should have widths a multiplier cannot give"
    assert sum(v.size for v in state.values()) < 0.7 * sum(v.size for v in orig.values())
    rep = check_against_paddle(pruned, img_size=(64, 96), batch=2)
    assert rep.passed and rep.max_abs_diff < 1e-4, rep
    for k, v in state.items():        # the builder took every width from the weights
        if k.endswith(".conv.weight"):
            assert rep.channels[k[:-len(".conv.weight")]] == v.shape[0]


def test_check_converted_ultralytics_weights(original, tmp_path):
    """An ultralytics-style checkpoint (torch.save of half tensors with ultralytics' names and
    anchors in stride units) through ppyolo_slim.model.convert, then the CPU check."""
    torch = pytest.importorskip("torch", reason="writing a .pt checkpoint needs torch (extra 'convert')")
    from ppyolo_slim.model.convert import convert_ultralytics
    state, meta = load_weights(original)
    sd = {}
    for k, v in state.items():
        k = k.replace("._mean", ".running_mean").replace("._variance", ".running_var")
        sd[k] = torch.from_numpy(v).half()
        if k.endswith(".bn.running_var"):
            sd[k[:-len("running_var")] + "num_batches_tracked"] = torch.tensor(100)
    anchors = np.asarray(meta["anchors"], np.float32).reshape(3, 3, 2) / np.array([8, 16, 32])[:, None, None]
    sd["model.24.anchors"] = torch.from_numpy(anchors.astype(np.float32))
    pt = str(tmp_path / "yolov5n.pt")
    torch.save({"model": sd, "epoch": -1}, pt)
    dst = str(tmp_path / "converted.pdparams")
    convert_ultralytics(pt, dst, names=META.names)
    rep = check_against_paddle(dst, img_size=64)
    assert rep.passed and rep.max_abs_diff < 1e-4, rep


def test_check_fails_on_a_wrong_graph(original, monkeypatch):
    """The check can fail: a resize that rounds the other way, or a different BN epsilon."""
    up = B.EMITTERS["Upsample"]

    def ceil_upsample(e, r, xs):
        y = up(e, r, xs)
        e.network.get_layer(e.network.num_layers - 1).nearest_rounding = e.trt.ResizeRoundMode.CEIL
        return y
    monkeypatch.setitem(B.EMITTERS, "Upsample", ceil_upsample)
    rep = check_against_paddle(original, img_size=64)
    assert not rep.passed and rep.exact_max_rel_diff > 1e-4
    monkeypatch.setitem(B.EMITTERS, "Upsample", up)
    monkeypatch.setattr(B, "_bn_eps", lambda: 1e-5)
    assert not check_against_paddle(original, img_size=64).passed


def test_bn_as_scale_layer_matches(original):
    rep = check_against_paddle(original, img_size=64, bn_as_scale=True)
    assert rep.passed, rep


def test_dynamic_batch(original):
    state, meta = B.load_checkpoint(original)
    x = check_input((64, 64), 3, seed=5)
    outs, built, _ = run_standin(state, meta, B.BuildOptions(img_size=64, dynamic_batch=True), x)
    assert built.input_shape == (-1, 3, 64, 64) and built.outputs == [("output", (-1, 252, 8))]
    one, _, _ = run_standin(state, meta, B.BuildOptions(img_size=64), x[1:2])
    np.testing.assert_array_equal(outs["output"][1:2], one["output"])
    ref = run_paddle(original, x)
    assert within_tolerance(outs["output"], ref, allowed(float32_noise(ref, run_paddle_float64(original, x))))


@pytest.mark.parametrize("backend", ["layer", "plugin"])
@pytest.mark.compat
def test_nms_in_the_graph_matches_the_project_nms(backend, original, tmp_path):
    """INMSLayer (add_nms) or EfficientNMS_TRT, fed by the graph's own gathers (boxes, obj x cls),
    gives the detections ultralytics-style multi-label NMS gives on the Paddle output."""
    from ppyolo_slim.engine.postprocess import non_max_suppression
    state, meta = load_weights(original)
    state = dict(state)
    for i in range(3):        # confident objectness, so there is something to suppress
        b = state[f"model.24.m.{i}.bias"].reshape(3, 8).copy()
        b[:, 4] += 10.0
        b[:, 5:] += 1.5
        state[f"model.24.m.{i}.bias"] = b.reshape(-1)
    path = str(tmp_path / "confident.pdparams")
    save_weights(path, state, ModelMeta.from_dict(meta))
    st, m = B.load_checkpoint(path)
    x = check_input((64, 64), 2, seed=2)
    nms = B.NMSOptions(score_threshold=0.3, iou_threshold=0.5, max_output_boxes=40, backend=backend)
    outs, built, _ = run_standin(st, m, B.BuildOptions(img_size=64, batch=2, nms=nms), x)
    assert built.nms_backend == backend
    if backend == "plugin":
        assert [n for n, _ in built.outputs] == list(B.NMS_OUTPUTS)
        assert outs["num_detections"].shape == (2, 1) and outs["detection_boxes"].shape == (2, 40, 4)
        assert outs["detection_classes"].dtype == np.int32
    else:       # data-dependent rows: (image, class, box), boxes, scores
        assert [n for n, _ in built.outputs] == list(B.NMS_LAYER_OUTPUTS)
        assert built.outputs[0][1] == (-1, 3) and outs["nms_indices"].dtype == np.int32
    ref = non_max_suppression(run_paddle(path, x), 0.3, 0.5, max_det=40, multi_label=True)
    from ppyolo_slim.deploy.trt_runtime import nms_detections
    got = nms_detections(outs, 2, 40)
    for i in range(2):
        assert len(got[i]) == len(ref[i]) > 3
        np.testing.assert_allclose(got[i], ref[i], atol=2e-3)


def test_fp16_graph_is_strongly_typed_and_close(original):
    state, meta = B.load_checkpoint(original)
    x = check_input((64, 64), 1, seed=1)
    net = numpy_net.create_network(1 << numpy_net.NetworkDefinitionCreationFlag.STRONGLY_TYPED.value)
    built = B.build_network(net, numpy_net, state, meta, B.BuildOptions(img_size=64, fp16_graph=True))
    convs = [net.get_layer(i) for i in range(net.num_layers)
             if isinstance(net.get_layer(i), numpy_net.IConvolutionLayer)]
    assert convs and all(c.kernel.dtype == np.float16 for c in convs)
    out = net.run({built.input_name: x})["output"]
    assert out.dtype == np.float32
    ref = run_paddle(original, x)
    rel = np.abs(out - ref) / np.maximum(np.abs(ref), 1.0)
    assert rel.max() < 2e-2 and rel.max() > 0       # half precision: close, not equal
    # the box decode stays FP32: half's spacing is 0.5 px at 700 px
    layers = {net.get_layer(i).name: net.get_layer(i) for i in range(net.num_layers)}
    assert layers["model.24.m.0"].get_output(0).dtype == numpy_net.DataType.HALF
    for i in range(3):
        assert layers[f"model.24.m.{i}.decoded"].get_output(0).dtype == numpy_net.DataType.FLOAT
        assert layers[f"model.24.m.{i}.anchor_grid"].weights.dtype == np.float32


def test_emitters_mirror_the_paddle_blocks():
    from ppyolo_slim.model.block_types import BLOCK_TYPES
    from ppyolo_slim.model.blocks import PADDLE_LAYERS
    import ppyolo_slim.model.yolo  # noqa: F401  (Detect's Paddle layer registers there)
    assert set(B.EMITTERS) == set(PADDLE_LAYERS) == set(BLOCK_TYPES)


def test_unknown_block_and_bad_weights_are_named(original, monkeypatch):
    state, meta = B.load_checkpoint(original)
    monkeypatch.delitem(B.EMITTERS, "SPPF")
    with pytest.raises(NotImplementedError, match="model.9: no TensorRT emitter for block 'SPPF'"):
        B.build_network(numpy_net.create_network(), numpy_net, state, meta, B.BuildOptions(img_size=64))
    monkeypatch.undo()
    bad = dict(state)
    bad["model.4.cv1.conv.weight"] = bad["model.4.cv1.conv.weight"][:, :-1]
    with pytest.raises(WeightShapeError, match="model.4.cv1.conv.weight"):
        B.build_network(numpy_net.create_network(), numpy_net, bad, meta, B.BuildOptions(img_size=64))
    with pytest.raises(ValueError, match="multiples of the largest stride 32"):
        B.build_network(numpy_net.create_network(), numpy_net, state, meta, B.BuildOptions(img_size=100))


def test_trt_build_check_cli(original, tmp_path, capsys):
    from ppyolo_slim.deploy import trt_build
    out = str(tmp_path / "check.json")
    assert trt_build.main(["--weights", original, "--check", "--img-size", "64", "--json", out]) == 0
    assert "PASS" in capsys.readouterr().out
    rep = json.load(open(out))
    assert rep["passed"] and rep["max_abs_diff"] < 1e-4
    assert trt_build.main(["--weights", str(tmp_path / "missing.pdparams"), "--check"]) == 1
    assert "no such weights file" in capsys.readouterr().err


def _real_trt_here():
    from ppyolo_slim.deploy.trt_compat import TensorRTUnavailable, require_tensorrt_and_gpu
    try:
        require_tensorrt_and_gpu()
        return True
    except TensorRTUnavailable:
        return False


def test_trt_build_without_tensorrt_exits_2_and_says_why(original):
    if _real_trt_here():
        pytest.skip("TensorRT and a GPU are present: the engine would really be built")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "deploy", "trt_build.py"), "--weights", original],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "pip install" in r.stderr and "tensorrt" in r.stderr.lower()
    assert "--check" in r.stderr and "GPU" in r.stderr
    assert "Traceback" not in r.stderr


def test_trt_infer_imports_without_tensorrt_and_exits_2(tmp_path):
    import ppyolo_slim.deploy.trt_infer  # noqa: F401  (importable without TensorRT)
    import ppyolo_slim.deploy.trt_runtime  # noqa: F401
    import ppyolo_slim.deploy.engine  # noqa: F401
    if _real_trt_here():
        pytest.skip("TensorRT and a GPU are present")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "deploy", "trt_infer.py"), "--engine",
                        str(tmp_path / "x.engine"), "--source", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "TensorRT" in r.stderr and "Traceback" not in r.stderr


def test_import_tensorrt_tells_stubs_from_the_real_thing(monkeypatch):
    from ppyolo_slim.deploy.trt_compat import TensorRTUnavailable, import_tensorrt
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))   # what tensorrt-stubs gives
    with pytest.raises(TensorRTUnavailable, match="type stubs"):
        import_tensorrt()
    fake = types.ModuleType("tensorrt")
    fake.Builder = object
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    assert import_tensorrt() is fake


def test_precision_plans_for_tensorrt_10_and_11():
    """FP16 is one strongly typed FP16 graph on both majors (no BuilderFlag.FP16, deprecated
    since 10.12 and gone in 11); INT8 (10 only) stays weakly typed with FP16 as its fallback."""
    from ppyolo_slim.deploy.trt_compat import TensorRTUnavailable, precision_plan
    t10, t11 = types.SimpleNamespace(__version__="10.13.0"), types.SimpleNamespace(__version__="11.4.0")
    for t in (t10, t11):
        p = precision_plan(t, fp16=True, int8=False)
        assert p["fp16_graph"] and not p["fp16_flag"] and p["strongly_typed"] and p["precision"] == "fp16"
    p = precision_plan(t10, fp16=False, int8=False)
    assert not p["strongly_typed"] and not p["fp16_graph"] and p["precision"] == "fp32"
    assert precision_plan(t11, fp16=False, int8=False)["strongly_typed"]
    p = precision_plan(t10, fp16=False, int8=True)
    assert p["int8_flag"] and p["fp16_flag"] and not p["strongly_typed"] and p["precision"] == "int8"
    with pytest.raises(TensorRTUnavailable, match="INT8"):
        precision_plan(t11, fp16=False, int8=True)
    with pytest.raises(TensorRTUnavailable, match="INT8"):
        precision_plan(t10, fp16=False, int8=True, strongly_typed=True)
    for t in (t10, t11):      # explicit Q/DQ: strongly typed FP32 graph, no precision flag, on both
        p = precision_plan(t, fp16=False, int8=False, int8_qdq=True)
        assert p["strongly_typed"] and not (p["int8_flag"] or p["fp16_flag"] or p["fp16_graph"])
        assert p["precision"] == "int8"
    with pytest.raises(ValueError, match="int8-from"):
        precision_plan(t10, fp16=True, int8=False, int8_qdq=True)


def test_calibrator_batches_cache_and_letterbox(tmp_path):
    import cv2
    from ppyolo_slim.deploy.calibrator import CalibrationImages, CalibratorLogic
    d = tmp_path / "calib"
    d.mkdir()
    for i in range(5):
        cv2.imwrite(str(d / f"{i}.png"), np.full((40, 80, 3), 20 * i, np.uint8))   # wide: padded top/bottom
    (d / "notes.txt").write_text("not an image")
    images = CalibrationImages(str(d), 64, batch=2)
    assert len(images) == 2                           # 5 images, batch 2: the last one is dropped
    batches = list(images)
    assert [b.shape for b in batches] == [(2, 3, 64, 64)] * 2 and batches[0].dtype == np.float32
    assert np.allclose(batches[1][1, :, 0, 0], 114 / 255) and np.allclose(batches[1][1, :, 32, 32], 60 / 255)

    class FakeDevice:
        def __init__(self):
            self.copies = []

        def from_host(self, a):
            self.copies.append(a.copy())
            return types.SimpleNamespace(ptr=1000 + len(self.copies))

    cache = str(tmp_path / "calib.cache")
    calib = CalibratorLogic()
    dev = FakeDevice()
    calib._setup(images, cache, dev, log=None)
    assert calib.get_batch_size() == 2 and calib.read_calibration_cache() is None
    assert calib.get_batch(["images"]) == [1001] and calib.get_batch(["images"]) == [1002]
    assert calib.get_batch(["images"]) is None
    np.testing.assert_array_equal(dev.copies[1], batches[1])
    calib.write_calibration_cache(b"TRT-calibration-table")
    again = CalibratorLogic()
    again._setup(images, cache, FakeDevice(), log=None)
    assert again.read_calibration_cache() == b"TRT-calibration-table"
    with pytest.raises(ValueError, match="need at least one batch of 8"):
        CalibrationImages(str(d), 64, batch=8)


class StandinEngine:
    """TrtEngine's interface (side, infer, detections, gpu) over the CPU stand-in, so
    trt_infer.py's letterbox / decode / NMS / JSON / drawing path runs without a GPU."""
    gpu = "cpu stand-in"

    def __init__(self, weights, img_size=64, nms=None):
        state, meta = B.load_checkpoint(weights)
        self.opts = B.BuildOptions(img_size=img_size, dynamic_batch=True, nms=nms)
        self.state, self.meta = state, meta
        self.side = {"img_size": [img_size, img_size], "names": meta.names, "batch": {"min": 1, "opt": 1, "max": 4},
                     "nms": None if nms is None else vars(nms), "precision": "fp32"}

    def infer(self, x):
        return run_standin(self.state, self.meta, self.opts, x)[0]

    def detections(self, outs, batch=None):
        from ppyolo_slim.deploy.trt_runtime import nms_detections
        return nms_detections(outs, batch, self.opts.nms.max_output_boxes)


def test_trt_infer_image_path_on_the_standin(original, tmp_path):
    import cv2
    from ppyolo_slim.deploy import trt_infer
    from ppyolo_slim.engine.predict import DygraphPredictor, predict_image
    src = tmp_path / "imgs"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(50, 90), (80, 60)]):
        cv2.imwrite(str(src / f"im{i}.jpg"), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    out = tmp_path / "out"
    args = trt_infer.parse_args(["--engine", "x.engine", "--source", str(src), "--output", str(out),
                                 "--conf-thres", "0.001", "--compare-weights", original])
    assert trt_infer.run_images(StandinEngine(original), args) == 0
    rec = json.load(open(out / "im0.json"))
    assert rec["max_abs_diff_vs_paddle"] < 1e-4 and (out / "im0.jpg").is_file()
    # the same detections as the project's own predictor path on the Paddle model
    img = cv2.cvtColor(cv2.imread(str(src / "im0.jpg")), cv2.COLOR_BGR2RGB)
    ref = predict_image(DygraphPredictor(ppyolo_slim.load_model(original)), img, 64, conf_thres=0.001)
    got = np.array([d["box"] + [d["score"], d["class_id"]] for d in rec["detections"]], np.float32)
    assert len(got) == len(ref) > 0
    np.testing.assert_allclose(got, ref, atol=0.02)
    r = trt_infer.benchmark(StandinEngine(original), batch=2, warmup=1, iters=3)
    assert r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] and r["throughput_img_s"] > 0
    # an engine with NMS inside: detections come straight from its outputs, boxes in image pixels
    out2 = tmp_path / "out_nms"
    args = trt_infer.parse_args(["--engine", "x.engine", "--source", str(src), "--output", str(out2)])
    eng = StandinEngine(original, nms=B.NMSOptions(score_threshold=0.001, max_output_boxes=20))
    assert trt_infer.run_images(eng, args) == 0
    rec = json.load(open(out2 / "im1.json"))
    boxes = np.array([d["box"] for d in rec["detections"]])
    assert 0 < len(boxes) <= 20 and boxes.min() >= 0 and boxes[:, [0, 2]].max() <= 60 and boxes[:, [1, 3]].max() <= 80


@pytest.mark.parametrize("flag", ["--no-images", "--no-save-images"])
def test_trt_infer_json_only_under_either_flag_name(flag, original, tmp_path):
    """--no-images as in tools/infer.py; --no-save-images, the old name, still works."""
    import cv2
    from ppyolo_slim.deploy import trt_infer
    src = tmp_path / "imgs"
    src.mkdir()
    cv2.imwrite(str(src / "a.jpg"), np.full((40, 70, 3), 128, np.uint8))
    out = tmp_path / "out"
    assert trt_infer.parse_args(["--engine", "x.engine", "--benchmark"]).no_images is False
    args = trt_infer.parse_args(["--engine", "x.engine", "--source", str(src), "--output", str(out), flag])
    assert trt_infer.run_images(StandinEngine(original), args) == 0
    assert sorted(os.listdir(out)) == ["a.json"]

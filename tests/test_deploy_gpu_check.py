"""deploy/gpu_check.py's comparison, timing and report logic, with the NumPy stand-in in place of
TensorRT (which is absent here: the engine builds themselves are never run in CI)."""
import os
import subprocess
import sys

import numpy as np
import pytest

import ppyolo_slim  # noqa: F401  (import order)
import paddle

from ppyolo_slim.deploy import builder as B
from ppyolo_slim.deploy import gpu_check as G
from ppyolo_slim.deploy.check import run_standin
from ppyolo_slim.model import ModelMeta, build_model, save_weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from test_deploy_build import SMALL_ANCHORS, randomise_bns
    meta = ModelMeta(nc=3, names=["a", "b", "c"], anchors=SMALL_ANCHORS)
    paddle.seed(0)
    path = str(tmp_path_factory.mktemp("gpu_check") / "w.pdparams")
    save_weights(path, randomise_bns(build_model(meta), 0).state_dict(), meta)
    return path


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    import cv2
    d = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(50, 90), (80, 60), (64, 64)]):
        cv2.imwrite(str(d / f"im{i}.png"), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    return str(d)


class StandinEngine:
    """A built engine's interface (side, infer) over the CPU stand-in graph."""

    def __init__(self, weights, img_size, fp16=False, bias=None):
        self.state, self.meta = B.load_checkpoint(weights)
        self.opts = B.BuildOptions(img_size=img_size, dynamic_batch=True, fp16_graph=fp16)
        self.fp16, self.bias, self.calls = fp16, bias, 0
        self.side = {"outputs": [{"name": "output"}], "precision": "fp16" if fp16 else "fp32",
                     "tensorrt_version": "numpy stand-in"}

    def infer(self, x):
        self.calls += 1
        out = run_standin(self.state, self.meta, self.opts, x, float64=False, strongly_typed=self.fp16)[0]
        if self.bias is not None:          # a wrong engine: one level's scores off
            out = dict(out)
            out["output"] = out["output"] + self.bias
        return out


def test_levels_and_per_level_differences():
    levels = G.level_rows((64, 96))
    assert [(n, a, b) for n, a, b in levels] == [("P3/8", 0, 288), ("P4/16", 288, 360), ("P5/32", 360, 378)]
    ref = np.zeros((2, 378, 8))
    out = ref.copy()
    out[1, 300, 2] = 0.5            # a box size at P4
    out[0, 370, 6] = 0.01           # a class score at P5
    d = G.compare_per_level(out, ref, (64, 96))
    assert d["P3/8"] == {"box_px": 0.0, "score": 0.0}
    assert d["P4/16"] == {"box_px": 0.5, "score": 0.0} and d["P5/32"] == {"box_px": 0.0, "score": 0.01}
    assert d["all"] == {"box_px": 0.5, "score": 0.01}
    out[0, 0, 0] = np.nan
    assert G.compare_per_level(out, ref, (64, 96))["all"]["box_px"] == np.inf
    assert "error" in G.compare_per_level(out[:, :10], ref[:, :10], (64, 96))
    assert "error" in G.compare_per_level(out[:1], ref, (64, 96))
    v = G.verdict(d, {"box_px": 0.01, "score": 1e-4}, factor=50)
    assert not v["passed"] and v["times_noise"]["box_px"] == pytest.approx(50)
    assert G.verdict(d, {"box_px": 0.02, "score": 1e-3}, factor=50)["passed"]


def test_timing_alternates_and_reports_median_and_p90():
    now = [0.0]
    order = []

    def runner(name, ms):
        def run(x):
            order.append((name, x.shape[0]))
            now[0] += ms * (1 + (len(order) % 10 == 0)) / 1000.0     # every 10th call twice as slow
        return run
    t = G.time_alternating({"a": runner("a", 1.0), "b": runner("b", 3.0)},
                           {1: np.zeros((1, 1)), 8: np.zeros((8, 1))}, iters=20, warmup=2, clock=lambda: now[0])
    assert set(t) == {"a", "b"} and set(t["a"]) == {"1", "8"} and t["a"]["1"]["iters"] == 20
    assert t["a"]["1"]["median_ms"] == pytest.approx(1.0) and t["b"]["8"]["median_ms"] == pytest.approx(3.0)
    assert t["b"]["1"]["p90_ms"] >= t["b"]["1"]["median_ms"]
    timed = [n for n, b in order if b == 1][4:]            # after the warm-up of both
    assert timed[:4] == ["a", "b", "b", "a"]               # turns, the first of each round rotating
    assert order.index(("a", 8)) > max(i for i, (n, b) in enumerate(order) if b == 1)


def test_check_model_on_standin_engines(weights, image_dir):
    """The FP32 stand-in passes the FP32 verdict, the FP16 graph is reported only, an engine with
    one level's scores off fails, and that level is the one the report points at."""
    from ppyolo_slim.engine.predict import list_images
    size = 64
    images = G.load_images(list_images(image_dir), size, 8)
    assert images.shape == (8, 3, 64, 64) and np.allclose(images[3], images[0])    # 3 files, cycled
    bad = np.zeros((1, 252, 8), np.float32)
    bad[:, 240:, 5] = 0.01            # the P5 rows (64 px: 3*8*8 + 3*4*4 = 240 rows before them)
    engines = {"fp32": StandinEngine(weights, size), "fp16": StandinEngine(weights, size, fp16=True),
               "wrong": StandinEngine(weights, size, bias=bad)}
    maps = {None: {"map50_95": 0.5, "map50": 0.7}}

    def score(eng):
        return maps.get(eng, {"map50_95": 0.45, "map50": 0.7})
    rep = G.check_model(weights, engines, ["fp32", "wrong"], images, size, iters=3, warmup=1, score_map=score)
    noise = rep["paddle_float32_noise"]
    assert 0 < noise["box_px"] < 1e-2 and rep["images"] == 8
    e32, e16, bad_e = rep["engines"]["fp32"], rep["engines"]["fp16"], rep["engines"]["wrong"]
    assert e32["verdict"]["judged"] and e32["verdict"]["passed"]
    assert set(e32["max_diff"]) == {"1", "8"} and set(e32["max_diff"]["8"]) == {"P3/8", "P4/16", "P5/32", "all"}
    assert e32["max_diff"]["8"]["all"]["box_px"] <= 4 * noise["box_px"] + 1e-4
    assert not e16["verdict"]["judged"]
    assert e16["max_diff"]["8"]["all"]["box_px"] > e32["max_diff"]["8"]["all"]["box_px"]
    assert bad_e["verdict"]["judged"] and not bad_e["verdict"]["passed"] and not rep["passed"]
    d = bad_e["max_diff"]["8"]
    assert d["P5/32"]["score"] == pytest.approx(0.01, rel=1e-3) and d["P3/8"]["score"] < 1e-4
    assert e32["map_delta_vs_paddle"]["map50_95"] == pytest.approx(-0.05) and rep["paddle_map"]["map50"] == 0.7
    for e in rep["engines"].values():
        assert set(e["timing"]) == {"1", "8"} and e["timing"]["8"]["iters"] == 3
    assert engines["fp32"].calls == 2 + 2 * (3 + 1)         # one compare per batch, then warm-up + timed
    import json
    json.dumps(rep)                                          # the report is plain JSON


def test_engine_kinds_and_the_int8_extension_point(monkeypatch):
    assert list(G.ENGINE_KINDS) == ["fp32", "fp16", "onnx_parser_fp32"]
    assert G.ENGINE_KINDS["fp32"].fp32 and not G.ENGINE_KINDS["fp16"].fp32
    monkeypatch.setattr(G, "ENGINE_KINDS", dict(G.ENGINE_KINDS))
    G.register_engine_kind(G.EngineKind("int8_qdq", lambda *a: "x.engine", fp32=False))
    assert "int8_qdq" in G.ENGINE_KINDS
    with pytest.raises(ValueError, match="exists already"):
        G.register_engine_kind(G.EngineKind("fp16", lambda *a: "", fp32=False))


def test_gpu_check_without_tensorrt_is_one_line(weights, image_dir, tmp_path):
    from ppyolo_slim.deploy.trt_compat import TensorRTUnavailable, require_tensorrt_and_gpu
    try:
        require_tensorrt_and_gpu()
        pytest.skip("TensorRT and a GPU are present: the engines would really be built")
    except TensorRTUnavailable:
        pass
    env = {k: v for k, v in os.environ.items() if k != "PPYOLO_SLIM_ASSUME_GPU"}
    r = subprocess.run([sys.executable, os.path.join(ROOT, "deploy", "gpu_check.py"), "--weights", weights,
                        "--weights", weights, "--output", str(tmp_path / "r.json"), "--images", image_dir],
                       capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("error: gpu_check needs TensorRT and an NVIDIA GPU: ") and "GPU" in lines[0][50:]
    assert not (tmp_path / "r.json").exists()
    r = subprocess.run([sys.executable, os.path.join(ROOT, "deploy", "gpu_check.py"), "--weights", weights,
                        "--output", "r.json"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 2 and "--images DIR or --data" in r.stderr


class Int8StandinEngine:
    """The int8_qdq engine's interface over the stand-in's explicit Q/DQ graph of a PTQ folder."""

    def __init__(self, folder, bias=0.0):
        from ppyolo_slim.deploy.qdq_check import int8_weights
        from ppyolo_slim.deploy.qdq_scales import load_qdq_scales
        self.scales = load_qdq_scales(folder)
        self.state, self.meta, _ = int8_weights(self.scales)
        self.bias = bias
        self.side = {"outputs": [{"name": "output"}], "precision": "int8", "tensorrt_version": "numpy stand-in"}

    def infer(self, x):
        from ppyolo_slim.deploy.qdq_check import run_int8_standin
        return {"output": run_int8_standin(self.state, self.meta, self.scales, x)[0] + self.bias}


@pytest.mark.slow
def test_int8_engine_is_compared_with_the_numpy_qdq_graph_and_onnxruntime(ptq_dir, tiny_data):
    """--int8-from: the INT8 engine is set beside the same Q/DQ network in NumPy and onnxruntime on
    model_int8.onnx, as well as beside Paddle's float model; an engine with its boxes off by
    0.5 px shows it against the NumPy graph, which the right one matches."""
    from test_deploy_qdq import _val_images
    images = _val_images(tiny_data)
    w = G.int8_folders([ptq_dir])
    assert list(w.values()) == [ptq_dir]
    refs = G.int8_references(ptq_dir)
    good, off = Int8StandinEngine(ptq_dir), Int8StandinEngine(ptq_dir, bias=0.5)
    rep = G.check_model(list(w)[0], {"int8_qdq": good, "off": off}, [], images, 64, iters=1, warmup=0,
                        more_refs={"int8_qdq": refs, "off": refs})
    e, o = rep["engines"]["int8_qdq"], rep["engines"]["off"]
    assert not e["verdict"]["judged"] and rep["passed"]          # INT8 is reported, not judged
    assert set(e["max_diff_vs"]) == {"numpy_qdq", "onnxruntime_file"}
    assert e["max_diff_vs"]["numpy_qdq"]["8"]["all"]["box_px"] < 1e-4
    assert e["max_diff"]["8"]["all"]["box_px"] > 0.05                     # INT8 vs float: not nothing
    assert 0 < e["max_diff_vs"]["onnxruntime_file"]["8"]["all"]["box_px"] < 5
    assert o["max_diff_vs"]["numpy_qdq"]["8"]["all"]["box_px"] == pytest.approx(0.5, abs=1e-3)


def test_gpu_check_int8_folder_of_other_weights_is_refused_first(ptq_dir, weights, image_dir, tmp_path):
    """An --int8-from folder must belong to one of --weights; said before TensorRT is looked for."""
    out = str(tmp_path / "r.json")
    assert G.main(["--weights", weights, "--int8-from", ptq_dir, "--output", out, "--images", image_dir]) == 1
    assert G.main(["--weights", weights, "--int8-from", str(tmp_path), "--output", out,
                   "--images", image_dir]) == 1                    # not a quant folder
    assert not os.path.exists(out)

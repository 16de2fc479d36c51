"""INT8 (slim/quant.py, tools/quant.py) on tiny models: PTQ and QAT exports, the onnxruntime
vs Paddle INT8 check (and that it catches a wrong scale), the decode kept float, the graph
edits, broken calibration images, per-layer sensitivity, and a SIGKILLed QAT run resuming."""
import copy
import json
import os
import shutil

import numpy as np
import pytest

import ppyolo_slim  # noqa: F401  (import order)
from conftest import QUANT_TINY as TINY, load_tool, quant_tiny_opts as tiny_opts
from ppyolo_slim.compat import int8_unsupported, int8_via_pir, saved_model_file
from ppyolo_slim.utils.graph import reachable

NO_INT8 = int8_unsupported()   # None where INT8 runs (both sets now)
needs_int8 = pytest.mark.skipif(NO_INT8 is not None, reason=str(NO_INT8))
PIR = int8_via_pir()           # Paddle 3: slim/quant_pir.py instead of PaddleSlim's old-IR export


@needs_int8
@pytest.mark.compat
def test_ptq_writes_paddle_and_onnx_int8(ptq_dir):
    for f in (saved_model_file(), "model.pdiparams", "model_int8.onnx", "infer_cfg.yml", "quant_report.json"):
        assert os.path.isfile(os.path.join(ptq_dir, f)), f
    rep = json.load(open(os.path.join(ptq_dir, "quant_report.json")))
    assert rep["check"]["passed"] and rep["method"] == "ptq"
    fused = rep["onnx"]["onnxruntime_ops"]
    # every conv but the 3 Detect convs (float by default) runs as an integer conv, SiLU in integer ops
    assert rep["paddle_int8"]["float_convs"] == 3 and fused.get("Conv") == 3
    assert fused["QLinearConv"] == rep["paddle_int8"]["quantized_convs"] > 40
    assert fused.get("QLinearSigmoid", 0) == fused["QLinearConv"]
    if PIR:   # the Q/DQ are inserted into the float ONNX, one pair per quantized tensor
        assert rep["onnx"]["edits"]["qdq_pairs_inserted"] > 2 * fused["QLinearConv"]
    else:     # PaddleSlim's conv-output observers, removed from the program (quant_program.py)
        assert rep["program_edits"]["observers"] > 0


@needs_int8
def test_decode_stays_float(ptq_dir):
    import onnx
    from ppyolo_slim.slim import quant_onnx as Q
    m = onnx.load(os.path.join(ptq_dir, "model_int8.onnx"))
    heads = Q.head_convs(m)
    assert len(heads) == 3
    G = Q._Graph(m)
    after = reachable(heads, lambda t: (o for u in G.cons.get(t, []) for o in u.output))
    for t in after:
        for u in G.cons.get(t, []):
            assert u.op_type not in ("QuantizeLinear", "DequantizeLinear"), f"{u.op_type} after a Detect conv"


@needs_int8
def test_eval_and_infer_on_both_int8_forms(ptq_dir, tiny_data, tmp_path):
    ev, inf = load_tool("eval"), load_tool("infer")
    for flag, path in (("--onnx", os.path.join(ptq_dir, "model_int8.onnx")), ("--model-dir", ptq_dir)):
        out = tmp_path / f"eval{flag}.json"
        assert ev.main([flag, path, "--data", tiny_data, "--output", str(out)]) == 0
        rep = json.load(open(out))
        assert 0.0 <= rep["map50_95"] <= 1.0 and rep["num_images"] == 8
        img_dir = os.path.join(os.path.dirname(tiny_data), "images", "val")
        assert inf.main([flag, path, "--source", img_dir, "--output", str(tmp_path / f"inf{flag}"),
                         "--conf-thres", "0.01"]) == 0


@needs_int8
@pytest.mark.compat
def test_check_passes_the_export_and_catches_a_wrong_output(ptq_dir, tiny_data, tmp_path, monkeypatch):
    """The written file passes; an onnxruntime output moved as paddle2onnx's BN-fold scale bug
    moved it (a few percent of the boxes off by tens of pixels, objectness flattened) fails."""
    from ppyolo_slim import load_model
    from ppyolo_slim.data import load_data
    from ppyolo_slim.slim import quant
    spec = load_data(tiny_data, verbose=False)
    imgs = quant.calibration_batches(spec.val[:4], 64, len(spec.names), 4)
    w = json.load(open(os.path.join(ptq_dir, "quant_report.json")))["weights"]
    model = load_model(w)
    fp32 = str(tmp_path / "fp32")
    quant.export_fp32(model, model.meta, fp32, 64, log=lambda m: None)
    rep = quant.check_int8(ptq_dir, os.path.join(fp32, "model.onnx"), imgs)
    assert rep["passed"] and rep["ort_int8_vs_paddle_int8"]["box_px"]["q0.99"] <= \
        quant.CHECK_FACTOR * rep["paddle_int8_vs_fp32"]["box_px"]["q0.99"] + 0.05
    real = quant._ort_session

    def broken(path, *a, **k):
        run = real(path, *a, **k)
        if not path.endswith(quant.ONNX_INT8):
            return run

        def f(x):
            y = run(x).copy()
            rows = np.arange(y.shape[1]) % 20 == 0        # 5 % of the boxes
            y[:, rows, 2:4] += 30.0
            y[:, rows, 4] = 0.0
            return y
        return f
    monkeypatch.setattr(quant, "_ort_session", broken)
    with pytest.raises(quant.QuantError, match="does not compute"):
        quant.check_int8(ptq_dir, os.path.join(fp32, "model.onnx"), imgs)


@needs_int8
def test_uint8_activations_are_exact(ptq_dir):
    """int8 zero point 0 -> uint8 zero point 128 gives the same values (ORT run literally)."""
    import onnx
    import onnxruntime as ort
    from ppyolo_slim.slim import quant_onnx as Q
    m = onnx.load(os.path.join(ptq_dir, "model_int8.onnx"))
    G = Q._Graph(m)
    # back to int8 for the reference
    ref = copy.deepcopy(m)
    from onnx import numpy_helper
    ref.graph.initializer.append(numpy_helper.from_array(np.array(0, np.int8), "zp_s8"))
    for n in ref.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2 and n.input[2] == Q.ACT_ZP_NAME:
            n.input[2] = "zp_s8"
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    x = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
    a = ort.InferenceSession(m.SerializeToString(), so).run(None, {"images": x})[0]
    b = ort.InferenceSession(ref.SerializeToString(), so).run(None, {"images": x})[0]
    np.testing.assert_array_equal(a, b)
    assert len(list(G.qdq_pairs())) > 50


def test_broken_calibration_image_is_reported_and_skipped(tiny_data, tmp_path, capsys):
    root = tmp_path / "set"
    shutil.copytree(os.path.dirname(tiny_data), root)
    import yaml
    data = str(root / os.path.basename(tiny_data))
    d = yaml.safe_load(open(data))
    d["path"] = str(root)
    yaml.safe_dump(d, open(data, "w"))
    for f in root.rglob("*.cache*"):
        f.unlink()
    imgs = sorted((root / d["train"]).iterdir())
    imgs[0].write_bytes(imgs[0].read_bytes()[:200])       # truncated
    from ppyolo_slim.slim import quant
    logs = []
    spec, recs = quant.calibration_records(data, 100, log=logs.append)
    assert imgs[0].name in capsys.readouterr().err       # the data check's report
    assert all(os.path.basename(r.path) != imgs[0].name for r in recs)
    assert len(recs) == len(imgs) - 1 and "skipped" in logs[0] and imgs[0].name in logs[0]
    batches = quant.calibration_batches(recs, 64, 5, 4, log=logs.append)
    assert sum(len(b) for b in batches) == len(recs)
    # an image broken after the data check (between scan and calibration) is skipped too
    os.unlink(recs[1].path)
    batches = quant.calibration_batches(recs, 64, 5, 4, log=logs.append)
    assert sum(len(b) for b in batches) == len(recs) - 1 and "skip" in logs[-1]


def test_quant_config_is_checked():
    from ppyolo_slim.config import ConfigError, load_config
    with pytest.raises(ConfigError, match="quant.algo"):
        load_config("configs/quant.yml", ["quant.algo=median"])
    with pytest.raises(ConfigError, match="quant.calib_images"):
        load_config("configs/quant.yml", ["quant.calib_images=0"])
    with pytest.raises(ConfigError, match="unknown config key 'quant.bits'"):
        load_config("configs/quant.yml", ["quant.bits=4"])


def _qat_args(data, weights, out, epochs=2):
    return ["-c", "configs/quant.yml", "--weights", weights, "--method", "qat", "--output", str(out),
            "-o"] + tiny_opts(data, f"epochs={epochs}", "batch_size=8", "eval.interval=1", "log.interval=1",
                              "schedule.warmup_epochs=0.0", "augment.mosaic=0.0")


@needs_int8
@pytest.mark.compat
@pytest.mark.slow
def test_qat_export_runs_integer_convs_and_refuses_a_float_onnx(tiny_data, tiny5_weights, tmp_path, monkeypatch):
    """A QAT state (BN folded, scales observed on a few batches) exports to an ONNX whose
    convs onnxruntime runs as QLinearConv, one per quantized Paddle conv; with BN left unfolded
    paddle2onnx writes float convs, and the export says so instead of passing a float model."""
    import paddle
    from ppyolo_slim.config import load_config
    from ppyolo_slim.model import load_weights, save_weights
    from ppyolo_slim.slim import quant as Q
    cfg = load_config("configs/quant.yml", tiny_opts(tiny_data))

    def qat_weights(name):
        state, meta = load_weights(tiny5_weights)
        model = Q.wrap_for_qat(Q.load_model_from_state(state, meta, tiny5_weights), cfg["quant"],
                               float_layers=cfg["quant"]["float_layers"])
        model.train()
        for _ in range(3):   # moving-average scales from a few batches, as training makes them
            model(paddle.rand([2, 3, 64, 64]))
        path = str(tmp_path / name)
        save_weights(path, model.state_dict(), model.meta)
        return path

    rep = Q.qat_export(qat_weights("qat.pdparams"), str(tmp_path / "int8"), cfg, log=lambda m: None)
    n = rep["paddle_int8"]["quantized_convs"]
    assert n > 40 and rep["onnx"]["onnxruntime_ops"]["QLinearConv"] == n and rep["check"]["passed"]
    assert rep["onnx"]["onnxruntime_ops"]["Conv"] == rep["paddle_int8"]["float_convs"] == 3
    # the TensorRT builder's explicit Q/DQ finds each folded conv's scales (from the QAT weights)
    from ppyolo_slim.deploy.qdq_check import check_int8_against_onnxruntime
    trt = check_int8_against_onnxruntime(str(tmp_path / "int8"))
    assert trt["passed"], trt["failures"]
    assert trt["int8"]["quantized_convs"] == n and trt["per_layer"]["differ"] == 0
    if PIR:   # paddle2onnx does not place the Q/DQ there: the unfolded case below is the 2.6 route's
        return
    import ppyolo_slim.model.fold as fold
    monkeypatch.setattr(fold, "fold_batchnorm", lambda model: 0)
    with pytest.raises(Q.QuantError, match="paddle2onnx dropped the quantization"):
        Q.qat_export(qat_weights("unfolded.pdparams"), str(tmp_path / "unfolded"), cfg, log=lambda m: None)


@needs_int8
@pytest.mark.slow
def test_qat_killed_resumes_like_training(tiny_data, tiny5_weights, tmp_path):
    """QAT runs in the project's trainer: SIGKILL in the middle of epoch 2, the same command again
    resumes from last.state and ends with the weights of a run never interrupted; both export."""
    from test_reliability_kill import Child, assert_same_weights
    from ppyolo_slim.engine.checkpoint import load_checkpoint
    from ppyolo_slim.slim.quant import is_qat_state
    straight = tmp_path / "straight"
    c = Child("quant", _qat_args(tiny_data, tiny5_weights, straight), tmp_path / "straight.log")
    assert c.finish() == 0, (tmp_path / "straight.log").read_text()[-2000:]
    killed = tmp_path / "killed"
    c = Child("quant", _qat_args(tiny_data, tiny5_weights, killed), tmp_path / "killed.log")
    assert c.wait_for(lambda line: line.startswith("@@ step 1 1")), "never reached epoch 2"
    c.kill()
    st = load_checkpoint(str(killed / "train" / "last.pdparams"))
    assert st["train"]["epoch"] == 0 and is_qat_state(st["model"]) and is_qat_state(st["ema"])
    assert not (killed / "model_int8.onnx").exists()
    c = Child("quant", _qat_args(tiny_data, tiny5_weights, killed), tmp_path / "resumed.log")
    assert c.finish() == 0, (tmp_path / "resumed.log").read_text()[-2000:]
    assert any("resuming" in line for line in c.lines)
    for name in ("last.pdparams", "best.pdparams"):
        assert_same_weights(straight / "train" / name, killed / "train" / name)
    for out in (straight, killed):
        rep = json.load(open(out / "quant_report.json"))
        assert rep["method"] == "qat" and rep["check"]["passed"]
    hist = json.load(open(killed / "train" / "results.json"))["history"]
    assert [h["epoch"] for h in hist] == [0, 1]


@needs_int8
@pytest.mark.slow
def test_pipeline_int8_stage(tiny_data, tmp_path):
    """-o pipeline.quant=ptq: the fine-tuned model quantized, in summary.json as models.int8
    with the other models' fields plus its ONNX path, and a row in summary.md."""
    from conftest import tiny_train_overrides
    from ppyolo_slim.pipeline import run_pipeline
    out = tmp_path / "pipe"
    over = [o for o in tiny_train_overrides(tiny_data, out / "unused", epochs=1, **{"log.images": 0})
            if not o.startswith("output_dir=")] + ["pipeline.finetune_epochs=1", "prune.min_channels=4",
                                                   "pipeline.quant=ptq"] + TINY
    state = run_pipeline(str(out), over, progress=False, log=lambda m: None)
    assert state["done"]["quant"]["method"] == "ptq"
    rows = json.loads((out / "summary.json").read_text())["models"]
    assert set(rows["finetuned"]) - {"onnx"} <= set(rows["int8"]) and os.path.isfile(rows["int8"]["onnx"])
    assert rows["int8"]["onnx"].endswith("model_int8.onnx") and rows["int8"]["ort_cpu_median_ms"] > 0
    assert "| int8 (PTQ) |" in (out / "summary.md").read_text()


@needs_int8
@pytest.mark.slow
def test_quant_benchmark_quick(tmp_path):
    """benchmarks/quant.py --quick runs (tiny random models) and writes its table and JSON."""
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "benchmarks/quant.py", "--quick", "--work", str(tmp_path)], cwd=root,
                       capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.load(open(os.path.join(root, "benchmarks", "work", "quick", "quant.json")))
    assert set(res["accuracy"]) == {"original", "pruned"} and "64px_b1" in res["latency"]
    assert "| pruned | QAT |" in r.stdout and "| pruned | FP32 +1 ep (control) |" in r.stdout
    for row in res["accuracy"].values():   # QAT is also set beside FP32 trained as long
        assert 0 <= row["fp32_control"]["map50_95"] <= 1 and "share_of_fp32_control" in row["qat"]


@needs_int8
def test_sensitivity_puts_each_part_back_in_float(ptq_dir, tiny_data):
    from ppyolo_slim.slim import quant_sensitivity as S
    import onnx
    m = onnx.load(os.path.join(ptq_dir, "model_int8.onnx"))
    v = S.variants(m)
    convs = [k for k in v if k.startswith("conv:")]
    assert len(convs) == 57 and {"silu_input (conv outputs)", "silu_sigmoid", "silu_output (conv inputs)"} <= set(v)
    from ppyolo_slim.slim.quant_onnx import ort_fused_op_counts
    one = ort_fused_op_counts(v[convs[0]].SerializeToString())
    assert one["QLinearConv"] == 56 and one["Conv"] == 4          # that conv runs float now
    from ppyolo_slim.slim.quant import ONNX_INT8
    import tempfile
    from ppyolo_slim import load_model
    from ppyolo_slim.slim import quant
    w = json.load(open(os.path.join(ptq_dir, "quant_report.json")))["weights"]
    with tempfile.TemporaryDirectory() as d:
        quant.export_fp32(load_model(w), load_model(w).meta, d, 64, log=lambda m: None)
        res = S.sensitivity(os.path.join(ptq_dir, ONNX_INT8), os.path.join(d, "model.onnx"), tiny_data, 64,
                            S.layer_names(d), limit=2, log=lambda m: None)
    rows = res["float_parts"]
    assert len(rows) == len(v) and [r["gain"] for r in rows] == sorted((r["gain"] for r in rows), reverse=True)
    assert any(r["float_part"].startswith("conv model.") for r in rows)
    assert all(abs(r["gain"] - (r["map50_95"] - res["int8"])) < 1e-12 for r in rows)

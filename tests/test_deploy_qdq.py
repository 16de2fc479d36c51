"""Explicit INT8 in the hand-built TensorRT network (deploy/builder.py + qdq_scales.py), on the
CPU: the stand-in's Q/DQ semantics against onnxruntime's QuantizeLinear/DequantizeLinear, the
Q/DQ layers the builder emits and their scales, the INT8 graph against onnxruntime on the
tools/quant.py folder's model_int8.onnx (and that a wrong scale fails it), trt_build.py's
--int8-from errors."""
import glob
import os
import shutil

import numpy as np
import pytest

import ppyolo_slim  # noqa: F401  (import order)
from ppyolo_slim.deploy import builder as B
from ppyolo_slim.deploy import numpy_net as T
from ppyolo_slim.deploy.numpy_net import NetworkDefinitionError
from ppyolo_slim.deploy.numpy_quant import dequantize_int8, quantize_int8
from ppyolo_slim.deploy.qdq_scales import ScalesError, load_qdq_scales

STRONG = 1 << T.NetworkDefinitionCreationFlag.STRONGLY_TYPED.value


def _ort_qdq(x, scale, axis):
    """onnxruntime's QuantizeLinear then DequantizeLinear (int8, zero point 0) on ``x``."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    zp = np.zeros(np.shape(scale), np.int8)
    g = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=axis),
         helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=axis)], "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("q", TensorProto.INT8, list(x.shape)),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, list(x.shape))],
        [numpy_helper.from_array(np.asarray(scale, np.float32), "s"), numpy_helper.from_array(zp, "z")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})


def _standin_qdq(x, scale, axis):
    net = T.create_network(STRONG)
    inp = net.add_input("x", T.float32, x.shape)
    s = net.add_constant(np.shape(scale), T.Weights(np.asarray(scale, np.float32))).get_output(0)
    q = net.add_quantize(inp, s)
    q.axis = axis
    dq = net.add_dequantize(q.get_output(0), s)
    dq.axis = axis
    for t, n in ((q.get_output(0), "q"), (dq.get_output(0), "y")):
        t.name = n
        net.mark_output(t)
    out = net.run({"x": x})
    return out["q"], out["y"]


def test_quantize_rounds_half_to_even_and_saturates():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, 127.49, 127.5, 300.0, -128.5, -129.0, -1e9],
                 np.float32)
    want = [0, 2, 2, 0, -2, -2, 126, 127, 127, 127, -128, -128, -128]
    assert quantize_int8(x, np.float32(1.0)).tolist() == want
    assert quantize_int8(x * 0.25, np.float32(0.25)).tolist() == want         # x / scale, exact here
    q, y = _standin_qdq(x, np.float32(1.0), 0)
    assert q.dtype == np.int8 and q.tolist() == want and y.tolist() == [float(v) for v in want]
    oq, oy = _ort_qdq(x, np.float32(1.0), 0)              # the reference we did not write
    assert oq.tolist() == want and np.array_equal(oy, y)
    assert dequantize_int8(np.array([-128, 5], np.int8), np.float32(0.5), np.array(1, np.int8)).tolist() == [-64.5, 2.0]


def test_per_channel_qdq_matches_onnxruntime():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2, 3, 4, 5)) * 3).astype(np.float32)
    x[0, 1, 0, :2] = [0.15, -0.45]                       # .5 steps of the channel-1 scale 0.1 (in float32)
    for axis, n in ((1, 3), (0, 2), (3, 5)):
        scale = rng.uniform(0.005, 0.1, n).astype(np.float32)
        if axis == 1:
            scale[1] = 0.1
        q, y = _standin_qdq(x, scale, axis)
        oq, oy = _ort_qdq(x, scale, axis)
        assert np.array_equal(q, oq) and np.array_equal(y, oy), axis
    assert np.abs(q).max() == 128 or np.abs(q).max() == 127          # saturated somewhere


def test_qdq_layer_checks():
    net = T.create_network(STRONG)
    x = net.add_input("x", T.float32, (1, 3, 2, 2))
    bad = net.add_constant((4,), T.Weights(np.ones(4, np.float32))).get_output(0)
    q = net.add_quantize(x, bad)
    q.axis = 1
    with pytest.raises(NetworkDefinitionError, match="per-channel scale has 4 values"):
        q.get_output(0).shape
    with pytest.raises(NetworkDefinitionError, match="build-time constant"):
        net.add_quantize(x, x).get_output(0).shape
    net = T.create_network(STRONG)
    x = net.add_input("x", T.float32, (1, 3, 2, 2))
    s = net.add_constant((3,), T.Weights(np.ones(3, np.float32))).get_output(0)
    q = net.add_quantize(x, s)
    q.axis = 1
    zp = net.add_constant((3,), T.Weights(np.array([0, 1, 0], np.int8))).get_output(0)
    q.set_input(2, zp)
    out = q.get_output(0)
    out.name = "q"
    net.mark_output(out)
    with pytest.raises(NetworkDefinitionError, match="symmetric"):
        net.run({"x": np.zeros((1, 3, 2, 2), np.float32)})


@pytest.fixture(scope="module")
def scales(ptq_dir):
    return load_qdq_scales(ptq_dir)


def _val_images(tiny_data, n=8):
    from ppyolo_slim.deploy.calibrator import load_letterboxed
    files = sorted(glob.glob(os.path.join(os.path.dirname(tiny_data), "images", "val", "*")))[:n]
    return np.stack([load_letterboxed(f, (64, 64)) for f in files]).astype(np.float32)


def test_builder_emits_qdq_on_conv_inputs_and_kernels(scales):
    state, meta = B.load_checkpoint(scales.weights)
    net = T.create_network(STRONG)
    built = B.build_network(net, T, state, meta, B.BuildOptions(img_size=64, int8=scales))
    layers = {layer.name: layer for layer in net._layers}
    onnx_convs = {c.onnx_name: c for c in scales.convs}
    used = built.int8["onnx_convs"]             # network conv -> the ONNX conv whose scales it took
    quantized = [n for n, o in used.items() if onnx_convs[o].quantized]
    assert len(quantized) == built.int8["quantized_convs"] == 57
    assert built.int8["float_convs"] == ["model.24.m.0", "model.24.m.1", "model.24.m.2"]   # Detect: float
    for name in quantized:
        c = onnx_convs[used[name]]
        conv = layers[f"{name}.conv"]
        x_dq, w_dq = conv._inputs[0]._producer, conv._inputs[1]._producer
        assert isinstance(x_dq, T.IDequantizeLayer) and x_dq.name == f"{name}.input.dequantize"
        assert isinstance(w_dq, T.IDequantizeLayer) and w_dq.name == f"{name}.weight.dequantize"
        assert conv.kernel.size == 0 and conv.bias.size == conv.num_output_maps
        w_q = w_dq._inputs[0]._producer
        assert isinstance(w_q, T.IQuantizeLayer) and w_q.axis == 0 and w_dq.axis == 0
        w_scale = layers[f"{name}.weight.scale"].weights
        assert w_scale.shape == (conv.num_output_maps,) and np.array_equal(w_scale, c.weight_scales)
        x_scale = layers[f"{name}.input.scale"]
        assert x_scale.shape == () and x_scale.weights.tolist() == [np.float32(c.input_scale)]   # per tensor
        kernel = layers[f"{name}.weight"].weights        # PaddleSlim's integers, exactly, after the Q
        assert np.array_equal(quantize_int8(kernel, w_scale, axis=0), c.weight_q)
    qdq = [n for n, layer in layers.items() if isinstance(layer, (T.IQuantizeLayer, T.IDequantizeLayer))]
    assert len(qdq) == 4 * 57 and all(n.rsplit(".", 2)[0] in quantized for n in qdq)
    assert not any(isinstance(layers[n], (T.IQuantizeLayer, T.IDequantizeLayer)) for n in built.decode_layers)
    assert built.int8["weight_flips"] < 1e-4 * sum(v.size for k, v in state.items() if k.endswith("conv.weight"))


def test_int8_graph_agrees_with_onnxruntime(ptq_dir, tiny_data):
    from ppyolo_slim.deploy.qdq_check import check_int8_against_onnxruntime
    rep = check_int8_against_onnxruntime(ptq_dir, x=_val_images(tiny_data))
    assert rep["passed"], rep["failures"]
    assert rep["per_layer"]["differ"] == 0 and rep["per_layer"]["values"] > 1e6     # measured: exact
    assert rep["segments"]["differ"] <= 8 and rep["segments"]["output"]["box_px"]["max"] < 1e-3
    same, effect = rep["outputs"]["same_placement"], rep["int8_vs_own_fp32"]
    assert effect["box_px"]["max"] > 0.05            # INT8 did move the output: the check has teeth
    assert same["diff"]["box_px"]["q0.99"] < 0.25 * effect["box_px"]["q0.99"]


def _forced(Q, state, meta, sc, x, refs):
    out, _, probes, _ = Q.run_int8_standin(state, meta, sc, x, forced=refs["q_out"])
    return out, probes


def _run_and_compare(Q, state, meta, sc, x, refs, fp32):
    got, _, probes, qscale = Q.run_int8_standin(state, meta, sc, x)
    return Q.compare(got, refs, fp32, probes, qscale, _forced(Q, state, meta, sc, x, refs))


def _parts(ptq_dir, tiny_data):
    from ppyolo_slim.deploy import qdq_check as Q
    sc = load_qdq_scales(ptq_dir)
    state, meta, _ = Q.int8_weights(sc)
    x = _val_images(tiny_data, 4)
    got, built, probes, qscale = Q.run_int8_standin(state, meta, sc, x)
    refs = Q.onnx_references(sc, built.int8["onnx_convs"], x)
    fp32 = Q.run_int8_standin(state, meta, None, x)[0]
    rep = Q.compare(got, refs, fp32, probes, qscale, _forced(Q, state, meta, sc, x, refs))
    assert rep["passed"], rep["failures"]
    return Q, sc, state, meta, x, refs, fp32


def test_a_wrong_scale_disagrees_with_onnxruntime(ptq_dir, tiny_data):
    """One conv's input scale 10 % off and the INT8 graph no longer computes what onnxruntime
    does on the file; one channel's kernel scale 10 % off and the build refuses (our kernel no
    longer quantizes to the file's integers)."""
    Q, sc, state, meta, x, refs, fp32 = _parts(ptq_dir, tiny_data)
    c = next(c for c in sc.convs[20:] if c.quantized)
    c.input_scale *= 1.1
    rep = _run_and_compare(Q, state, meta, sc, x, refs, fp32)
    assert not rep["passed"] and any(f.startswith("per layer: ") and "a wrong scale" in f for f in rep["failures"])
    c.input_scale /= 1.1
    c.weight_scales = c.weight_scales.copy()
    c.weight_scales[int(np.argmax(c.weight_scales))] *= 1.1
    with pytest.raises(ScalesError, match="no Conv has the weights of the network's"):
        Q.run_int8_standin(state, meta, sc, x)


def test_a_wrong_layer_fails_right_after_it(ptq_dir, tiny_data, monkeypatch):
    """A float layer between the Q/DQ wired wrongly (the head's concats with their inputs
    swapped): the integers of the first conv input after it differ from onnxruntime's."""
    Q, sc, state, meta, x, refs, fp32 = _parts(ptq_dir, tiny_data)
    monkeypatch.setitem(B.EMITTERS, "Concat", lambda e, r, xs: e.concat(xs[::-1], f"{r.name}.cat"))
    rep = _run_and_compare(Q, state, meta, sc, x, refs, fp32)
    seg = [f for f in rep["failures"] if f.startswith("segment: ")]       # in network order
    assert not rep["passed"] and seg[0].startswith("segment: model.13.cv1's input integers"), seg


def test_int8_from_errors_name_the_file(ptq_dir, tiny_data, tmp_path, capsys):
    from ppyolo_slim.deploy import trt_build
    empty = tmp_path / "empty"
    empty.mkdir()
    assert trt_build.main(["--int8-from", str(empty), "--check"]) == 1
    assert f"{empty}/model_int8.onnx: not found" in capsys.readouterr().err
    # a float ONNX where the QDQ one should be: no scales in it
    floaty = tmp_path / "float"
    floaty.mkdir()
    shutil.copy(os.path.join(ptq_dir, "quant_report.json"), floaty)
    import onnx
    from ppyolo_slim.slim.quant_onnx import _Graph
    m = onnx.load(os.path.join(ptq_dir, "model_int8.onnx"))
    G = _Graph(m)
    for n in m.graph.node:          # every Conv reads the tensors before its Q/DQ
        if n.op_type == "Conv":
            for i in (0, 1):
                dq = G.prod.get(n.input[i])
                if dq is not None and dq.op_type == "DequantizeLinear":
                    n.input[i] = G.prod[dq.input[0]].input[0]
    onnx.save(m, str(floaty / "model_int8.onnx"))
    assert trt_build.main(["--int8-from", str(floaty), "--check"]) == 1
    err = capsys.readouterr().err
    assert "model_int8.onnx: no Conv has QuantizeLinear/DequantizeLinear inputs" in err
    # scales of one model, weights of another: no conv matches
    from ppyolo_slim.model import ModelMeta, build_model, save_weights
    meta = ModelMeta.from_dict(B.load_checkpoint(load_qdq_scales(ptq_dir).weights)[1].to_dict())
    other = str(tmp_path / "other.pdparams")
    save_weights(other, build_model(meta).state_dict(), meta)
    assert trt_build.main(["--int8-from", ptq_dir, "--weights", other, "--check"]) == 1
    assert "no Conv has the weights of the network's model.0" in capsys.readouterr().err
    # no TensorRT here: the build says so (exit 2) once the folder is found good
    assert trt_build.main(["--int8-from", ptq_dir, "-o", str(tmp_path / "m.engine")]) == 2
    assert "TensorRT" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        trt_build.main(["--int8-from", ptq_dir, "--fp16", "--check"])


def test_unfolded_or_asymmetric_scales_are_refused(ptq_dir, tmp_path):
    """TensorRT has symmetric INT8 only: a zero point other than int8 0 / uint8 128 is an error
    naming the conv."""
    import onnx
    from onnx import numpy_helper
    m = onnx.load(os.path.join(ptq_dir, "model_int8.onnx"))
    from ppyolo_slim.slim.quant_onnx import ACT_ZP_NAME
    for t in m.graph.initializer:
        if t.name == ACT_ZP_NAME:
            t.CopyFrom(numpy_helper.from_array(np.array(100, np.uint8), ACT_ZP_NAME))
    d = tmp_path / "asym"
    d.mkdir()
    onnx.save(m, str(d / "model_int8.onnx"))
    with pytest.raises(ScalesError, match=r"Conv .* input: zero point uint8 \[100\] is not symmetric"):
        load_qdq_scales(str(d))

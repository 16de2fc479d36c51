"""The NumPy stand-in for TensorRT's network API, layer by layer, against independent references:
Paddle's functional ops (conv2d, max/avg pool, interpolate, sigmoid), hand NumPy, and
hand-computed index tables for resize rounding; EfficientNMS_TRT's output layout and its
NMS against the project's own (independent) NMS."""
import numpy as np
import pytest

import ppyolo_slim  # noqa: F401  (import order)
import paddle
import paddle.nn.functional as F

from ppyolo_slim.deploy import numpy_net as T
from ppyolo_slim.deploy.numpy_net import NetworkDefinitionError

RNG = np.random.default_rng(0)


def run1(net, x, out):
    """Mark ``out`` and run the network on input 'x'."""
    out.name = "y"
    net.mark_output(out)
    return net.run({"x": x})["y"]


def new(shape, dtype=T.float32, flags=0):
    net = T.create_network(flags)
    return net, net.add_input("x", dtype, shape)


def pd(a):
    return paddle.to_tensor(a)


# ---------------------------------------------------------------- convolution
@pytest.mark.parametrize("k,s,p,groups,dil", [(3, 1, 1, 1, 1), (6, 2, 2, 1, 1), (3, (2, 1), (1, 2), 2, 1),
                                              (3, 1, 2, 1, 2), (1, 1, 0, 1, 1)])
def test_convolution_matches_paddle(k, s, p, groups, dil):
    s2 = s if isinstance(s, tuple) else (s, s)
    p2 = p if isinstance(p, tuple) else (p, p)
    x = RNG.standard_normal((2, 4, 13, 11)).astype(np.float32)
    w = RNG.standard_normal((6, 4 // groups, k, k)).astype(np.float32)
    b = RNG.standard_normal(6).astype(np.float32)
    net, xi = new(x.shape)
    conv = net.add_convolution_nd(xi, 6, (k, k), T.Weights(w), T.Weights(b))
    conv.stride_nd, conv.padding_nd, conv.num_groups, conv.dilation_nd = s2, p2, groups, (dil, dil)
    got = run1(net, x, conv.get_output(0))
    ref = F.conv2d(pd(x), pd(w), pd(b), stride=list(s2), padding=list(p2), dilation=dil, groups=groups).numpy()
    assert conv.get_output(0).shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_convolution_pre_post_padding_and_round_up():
    x = RNG.standard_normal((1, 2, 7, 8)).astype(np.float32)
    w = RNG.standard_normal((3, 2, 3, 3)).astype(np.float32)
    net, xi = new(x.shape)
    conv = net.add_convolution_nd(xi, 3, (3, 3), T.Weights(w))
    conv.pre_padding, conv.post_padding, conv.stride_nd = (0, 2), (1, 0), (2, 2)
    got = run1(net, x, conv.get_output(0))
    xp = np.pad(x, ((0, 0), (0, 0), (0, 1), (2, 0)))
    ref = F.conv2d(pd(xp), pd(w), stride=2).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    # EXPLICIT_ROUND_UP: ceil((8 + 0 - 3) / 2) + 1 = 4 rows where ROUND_DOWN gives 3
    net, xi = new((1, 2, 8, 8))
    c2 = net.add_convolution_nd(xi, 3, (3, 3), T.Weights(w))
    c2.stride_nd, c2.padding_mode = (2, 2), T.PaddingMode.EXPLICIT_ROUND_UP
    assert c2.get_output(0).shape == (1, 3, 4, 4)


def test_convolution_rejects_wrong_channel_count():
    net, xi = new((1, 5, 8, 8))
    with pytest.raises(NetworkDefinitionError, match="does the input really have 5 channels"):
        net.add_convolution_nd(xi, 3, (3, 3), T.Weights(np.zeros((3, 4, 3, 3), np.float32)))


def test_padding_nd_sets_pre_and_post():
    net, xi = new((1, 1, 4, 4))
    c = net.add_convolution_nd(xi, 1, (3, 3), T.Weights(np.ones((1, 1, 3, 3), np.float32)))
    c.padding_nd = (1, 2)
    assert c.pre_padding == (1, 2) and c.post_padding == (1, 2) and c.get_output(0).shape == (1, 1, 4, 6)


# ---------------------------------------------------------------- pooling
@pytest.mark.parametrize("k,s,p", [(5, 1, 2), (3, 2, 1), (2, 2, 0)])
def test_max_pool_matches_paddle(k, s, p):
    x = RNG.standard_normal((2, 3, 9, 10)).astype(np.float32) - 3.0    # mostly negative: padding must not win
    net, xi = new(x.shape)
    pool = net.add_pooling_nd(xi, T.PoolingType.MAX, (k, k))
    pool.stride_nd, pool.padding_nd = (s, s), (p, p)
    got = run1(net, x, pool.get_output(0))
    np.testing.assert_array_equal(got, F.max_pool2d(pd(x), k, s, p).numpy())


def test_pooling_default_stride_is_one_and_average_excludes_padding():
    x = RNG.standard_normal((1, 2, 6, 6)).astype(np.float32)
    net, xi = new(x.shape)
    pool = net.add_pooling_nd(xi, T.PoolingType.AVERAGE, (3, 3))
    pool.padding_nd = (1, 1)       # stride left at TensorRT's default (1, 1)
    got = run1(net, x, pool.get_output(0))
    ref = F.avg_pool2d(pd(x), 3, 1, 1, exclusive=True).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- resize
def test_nearest_x2_matches_paddle_interpolate():
    x = RNG.standard_normal((2, 3, 5, 7)).astype(np.float32)
    net, xi = new(x.shape)
    rs = net.add_resize(xi)
    rs.scales = [1.0, 1.0, 2.0, 2.0]          # defaults: NEAREST, ASYMMETRIC, FLOOR
    got = run1(net, x, rs.get_output(0))
    np.testing.assert_array_equal(got, F.interpolate(pd(x), scale_factor=2, mode="nearest").numpy())


@pytest.mark.parametrize("ct,rnd,n_in,n_out,want", [
    # ASYMMETRIC x = o * 4/6 = [0, .67, 1.33, 2, 2.67, 3.33]
    ("ASYMMETRIC", "FLOOR", 4, 6, [0, 0, 1, 2, 2, 3]),
    ("ASYMMETRIC", "CEIL", 4, 6, [0, 1, 2, 2, 3, 3]),          # 4 clamps to 3
    ("ASYMMETRIC", "HALF_UP", 4, 6, [0, 1, 1, 2, 3, 3]),
    # halfway: x = o * 3/2 = [0, 1.5]
    ("ASYMMETRIC", "HALF_UP", 3, 2, [0, 2]),
    ("ASYMMETRIC", "HALF_DOWN", 3, 2, [0, 1]),
    # HALF_PIXEL x = (o + .5) * 4/6 - .5 = [-.17, .5, 1.17, 1.83, 2.5, 3.17]
    ("HALF_PIXEL", "HALF_UP", 4, 6, [0, 1, 1, 2, 3, 3]),
    ("HALF_PIXEL", "HALF_DOWN", 4, 6, [0, 0, 1, 2, 2, 3]),
    # ALIGN_CORNERS x = o * 3/5 = [0, .6, 1.2, 1.8, 2.4, 3]
    ("ALIGN_CORNERS", "FLOOR", 4, 6, [0, 0, 1, 1, 2, 3]),
])
def test_resize_coordinate_and_rounding_modes(ct, rnd, n_in, n_out, want):
    x = np.arange(n_in, dtype=np.float32).reshape(1, 1, 1, n_in) * 10
    net, xi = new(x.shape)
    rs = net.add_resize(xi)
    rs.shape = (1, 1, 1, n_out)
    rs.coordinate_transformation = getattr(T.ResizeCoordinateTransformation, ct)
    rs.nearest_rounding = getattr(T.ResizeRoundMode, rnd)
    got = run1(net, x, rs.get_output(0))
    np.testing.assert_array_equal(got.reshape(-1), np.asarray(want, np.float32) * 10)


def test_resize_output_size_is_floor_of_scale():
    net, xi = new((1, 1, 5, 5))
    rs = net.add_resize(xi)
    rs.scales = [1, 1, 1.5, 0.5]
    assert rs.get_output(0).shape == (1, 1, 7, 2)


# ---------------------------------------------------------------- scale
@pytest.mark.parametrize("mode", ["UNIFORM", "CHANNEL", "ELEMENTWISE"])
def test_scale_modes(mode):
    x = RNG.uniform(0.5, 2, (2, 3, 4, 5)).astype(np.float32)
    n = {"UNIFORM": 1, "CHANNEL": 3, "ELEMENTWISE": 3 * 4 * 5}[mode]
    shape = {"UNIFORM": (1, 1, 1, 1), "CHANNEL": (1, 3, 1, 1), "ELEMENTWISE": (1, 3, 4, 5)}[mode]
    sc, sh, pw = (RNG.uniform(0.5, 1.5, n).astype(np.float32) for _ in range(3))
    net, xi = new(x.shape)
    layer = net.add_scale(xi, getattr(T.ScaleMode, mode), T.Weights(sh), T.Weights(sc), T.Weights(pw))
    got = run1(net, x, layer.get_output(0))
    ref = (x * sc.reshape(shape) + sh.reshape(shape)) ** pw.reshape(shape)
    np.testing.assert_allclose(got, ref, rtol=1e-5)


def test_scale_defaults_and_wrong_count():
    x = RNG.standard_normal((1, 2, 3, 3)).astype(np.float32)
    net, xi = new(x.shape)
    layer = net.add_scale(xi, T.ScaleMode.CHANNEL, shift=T.Weights(np.array([1, 2], np.float32)))
    got = run1(net, x, layer.get_output(0))
    np.testing.assert_allclose(got, x + np.array([1, 2], np.float32).reshape(1, 2, 1, 1))
    net, xi = new(x.shape)
    bad = net.add_scale(xi, T.ScaleMode.CHANNEL, scale=T.Weights(np.ones(3, np.float32)))
    with pytest.raises(NetworkDefinitionError, match="needs 2"):
        bad.get_output(0).shape


# ---------------------------------------------------------------- elementwise, activation
def test_elementwise_broadcasting_rules():
    a = RNG.standard_normal((2, 1, 4)).astype(np.float32)
    b = RNG.standard_normal((1, 3, 1)).astype(np.float32)
    net, xi = new(a.shape)
    c = net.add_constant(b.shape, T.Weights(b)).get_output(0)
    for op, f in [(T.ElementWiseOperation.SUM, np.add), (T.ElementWiseOperation.PROD, np.multiply),
                  (T.ElementWiseOperation.SUB, np.subtract), (T.ElementWiseOperation.MAX, np.maximum)]:
            n2, x2 = new(a.shape)
            c2 = n2.add_constant(b.shape, T.Weights(b)).get_output(0)
            out = run1(n2, a, n2.add_elementwise(x2, c2, op).get_output(0))
            np.testing.assert_array_equal(out, f(a, b))
    d = net.add_constant((3,), T.Weights(np.ones(3, np.float32))).get_output(0)
    with pytest.raises(NetworkDefinitionError, match="equal ranks"):
        net.add_elementwise(xi, d, T.ElementWiseOperation.SUM).get_output(0).shape
    e = net.add_constant((2, 2, 4), T.Weights(np.ones(16, np.float32))).get_output(0)
    with pytest.raises(NetworkDefinitionError, match="do not broadcast"):
        net.add_elementwise(c, e, T.ElementWiseOperation.SUM).get_output(0).shape


def test_elementwise_needs_equal_types():
    net, xi = new((1, 2), T.float16)
    c = net.add_constant((1, 2), T.Weights(np.ones(2, np.float32))).get_output(0)
    with pytest.raises(NetworkDefinitionError, match="types differ"):
        net.add_elementwise(xi, c, T.ElementWiseOperation.SUM).get_output(0).shape


def test_sigmoid_and_silu_match_paddle():
    x = RNG.standard_normal((2, 3, 4, 4)).astype(np.float32) * 4
    net, xi = new(x.shape)
    sig = net.add_activation(xi, T.ActivationType.SIGMOID).get_output(0)
    silu = net.add_elementwise(xi, sig, T.ElementWiseOperation.PROD).get_output(0)
    np.testing.assert_allclose(run1(net, x, silu), F.silu(pd(x)).numpy(), rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- shuffle, concat, gather, cast
def test_shuffle_transpose_reshape_transpose():
    x = RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)
    net, xi = new(x.shape)
    sh = net.add_shuffle(xi)
    sh.first_transpose = (0, 2, 1, 3)
    sh.reshape_dims = (0, -1, 5)             # 0 copies dim 0 of the transposed input
    sh.second_transpose = (1, 0, 2)
    got = run1(net, x, sh.get_output(0))
    ref = x.transpose(0, 2, 1, 3).reshape(2, 12, 5).transpose(1, 0, 2)
    np.testing.assert_array_equal(got, ref)
    assert sh.get_output(0).shape == (12, 2, 5)


def test_shuffle_with_dynamic_batch_keeps_it_unknown():
    net, xi = new((-1, 6, 2, 2))
    sh = net.add_shuffle(xi)
    sh.reshape_dims = (0, 3, 2, 2, 2)
    sh2 = net.add_shuffle(sh.get_output(0))
    sh2.reshape_dims = (0, -1, 4)
    assert sh2.get_output(0).shape == (-1, 6, 4)
    x = RNG.standard_normal((3, 6, 2, 2)).astype(np.float32)
    np.testing.assert_array_equal(run1(net, x, sh2.get_output(0)), x.reshape(3, 6, 4))
    with pytest.raises(NetworkDefinitionError, match="more than one -1"):
        bad = net.add_shuffle(xi)
        bad.reshape_dims = (-1, -1)
        bad.get_output(0).shape


def test_concatenation_default_axis_is_rank_minus_three():
    a = RNG.standard_normal((2, 3, 4, 4)).astype(np.float32)
    net, xi = new(a.shape)
    c = net.add_constant((2, 1, 4, 4), T.Weights(np.ones(32, np.float32))).get_output(0)
    cat = net.add_concatenation([xi, c])
    assert cat.axis == 1
    np.testing.assert_array_equal(run1(net, a, cat.get_output(0)), np.concatenate([a, np.ones((2, 1, 4, 4))], 1))
    n3, x3 = new((2, 5, 3))
    assert n3.add_concatenation([x3, x3]).axis == 0      # 3-D: axis 0, hence the builder sets it
    cat3 = n3.add_concatenation([x3, x3])
    cat3.axis = 2
    assert cat3.get_output(0).shape == (2, 5, 6)


def test_gather_and_cast():
    x = RNG.standard_normal((2, 4, 7)).astype(np.float32)
    net, xi = new(x.shape)
    idx = net.add_constant((3,), T.Weights(np.array([4, 0, 6], np.int32))).get_output(0)
    g = net.add_gather(xi, idx, 2).get_output(0)
    h = net.add_cast(g, T.float16).get_output(0)
    assert h.dtype == T.float16 and h.shape == (2, 4, 3)
    got = run1(net, x, h)
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, x[:, :, [4, 0, 6]].astype(np.float16))


def test_strongly_typed_conv_weights_must_match_input_type():
    flags = 1 << T.NetworkDefinitionCreationFlag.STRONGLY_TYPED.value
    net, xi = new((1, 2, 4, 4), T.float16, flags)
    with pytest.raises(NetworkDefinitionError, match="strongly typed"):
        net.add_convolution_nd(xi, 1, (1, 1), T.Weights(np.ones((1, 2, 1, 1), np.float32)))


# ---------------------------------------------------------------- EfficientNMS_TRT
def nms_net(n, nc, **params):
    net = T.create_network()
    boxes = net.add_input("boxes", T.float32, (-1, n, 4))
    scores = net.add_input("scores", T.float32, (-1, n, nc))
    kinds = {"score_threshold": T.PluginFieldType.FLOAT32, "iou_threshold": T.PluginFieldType.FLOAT32}
    fields = T.PluginFieldCollection([
        T.PluginField(k, np.array([v], np.float32 if k in kinds else np.int32),
                      kinds.get(k, T.PluginFieldType.INT32)) for k, v in params.items()])
    creator = T.get_plugin_registry().get_creator("EfficientNMS_TRT", "1", "")
    layer = net.add_plugin_v2([boxes, scores], creator.create_plugin("nms", fields))
    for i, name in enumerate(["num", "boxes_out", "scores_out", "classes_out"]):
        t = layer.get_output(i)
        t.name = name
        net.mark_output(t)
    return net, layer


def test_efficient_nms_layout_and_semantics():
    # cx, cy, w, h: box 1 overlaps box 0 (IoU 0.68), box 2 is apart
    boxes = np.array([[[10, 10, 10, 10], [11, 10, 10, 10], [40, 40, 8, 8], [0, 0, 1, 1]]], np.float32)
    scores = np.array([[[0.9, 0.1], [0.8, 0.7], [0.05, 0.6], [0.2, 0.2]]], np.float32)
    net, layer = nms_net(4, 2, score_threshold=0.5, iou_threshold=0.5, max_output_boxes=5, box_coding=1)
    shapes = [layer.get_output(i).shape for i in range(4)]
    assert shapes == [(-1, 1), (-1, 5, 4), (-1, 5), (-1, 5)]
    assert [layer.get_output(i).dtype for i in (0, 3)] == [T.int32, T.int32]
    out = net.run({"boxes": boxes, "scores": scores})
    # class 0: box 0 (0.9) kept, box 1 (0.8) suppressed; class 1: box 1 (0.7), box 2 (0.6)
    assert out["num"].tolist() == [[3]] and out["num"].dtype == np.int32
    np.testing.assert_allclose(out["scores_out"][0], [0.9, 0.7, 0.6, 0, 0])
    assert out["classes_out"][0].tolist() == [0, 1, 1, 0, 0]
    np.testing.assert_allclose(out["boxes_out"][0, :3], [[5, 5, 15, 15], [6, 5, 16, 15], [36, 36, 44, 44]])
    assert not out["boxes_out"][0, 3:].any()                       # zero-filled past num_detections
    agn, _ = nms_net(4, 2, score_threshold=0.5, iou_threshold=0.5, max_output_boxes=2, box_coding=1,
                     class_agnostic=1)
    o2 = agn.run({"boxes": boxes, "scores": scores})
    assert o2["num"].tolist() == [[2]] and o2["classes_out"][0].tolist() == [0, 1]   # box 1 gone, cap 2
    np.testing.assert_allclose(o2["scores_out"][0], [0.9, 0.6])


def test_efficient_nms_matches_the_project_nms():
    """Single class, corner boxes: the same survivors, in the same order, as
    ppyolo_slim.engine.postprocess.nms (ties have probability 0 with random scores)."""
    from ppyolo_slim.engine.postprocess import nms
    rng = np.random.default_rng(3)
    n = 300
    xy = rng.uniform(0, 100, (n, 2))
    wh = rng.uniform(5, 40, (n, 2))
    corners = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    s = rng.uniform(0, 1, n).astype(np.float32)
    net, _ = nms_net(n, 1, score_threshold=0.3, iou_threshold=0.45, max_output_boxes=n, box_coding=0)
    out = net.run({"boxes": corners[None], "scores": s[None, :, None]})
    k = int(out["num"][0, 0])
    keep = nms(corners[s >= 0.3], s[s >= 0.3], 0.45)
    assert k == len(keep) > 10
    np.testing.assert_array_equal(out["boxes_out"][0, :k], corners[s >= 0.3][keep])


def nms_layer_net(n, nc, iou, score, per_class, fmt=None):
    net = T.create_network()
    boxes = net.add_input("boxes", T.float32, (1, n, 4))
    scores = net.add_input("scores", T.float32, (1, n, nc))

    def scalar(v, dt):
        return net.add_constant((), T.Weights(np.array(v, dt))).get_output(0)
    layer = net.add_nms(boxes, scores, scalar(per_class, np.int32))
    if fmt is not None:
        layer.bounding_box_format = fmt
    layer.set_input(3, scalar(iou, np.float32))
    layer.set_input(4, scalar(score, np.float32))
    for i, name in enumerate(["selected", "count"]):
        t = layer.get_output(i)
        t.name = name
        net.mark_output(t)
    return net, layer


def test_nms_layer_follows_onnx_nonmaxsuppression():
    """INMSLayer: a candidate needs score > threshold (equal is out), a box is kept when its IoU
    with the kept ones is <= threshold (equal stays), per class, rows (image, class, box)."""
    boxes = np.array([[[0, 0, 10, 10], [0, 0, 10, 15], [20, 20, 30, 30], [50, 50, 60, 60]]], np.float32)
    iou01 = 100 / 150                      # box 1 contains box 0: IoU exactly 2/3
    scores = np.array([[[0.9, 0.1], [0.8, 0.5], [0.7, 0.5], [0.5, 0.95]]], np.float32)
    net, layer = nms_layer_net(4, 2, iou=np.float32(iou01), score=0.5, per_class=10)
    assert [layer.get_output(i).shape for i in (0, 1)] == [(-1, 3), ()]
    out = net.run({"boxes": boxes, "scores": scores})
    # class 1: box 3 (0.95); class 0: 0 (0.9), 1 (0.8: IoU == threshold, kept), 2 (0.7); the 0.5s are out
    assert out["selected"].tolist() == [[0, 1, 3], [0, 0, 0], [0, 0, 1], [0, 0, 2]]
    assert int(out["count"]) == 4 and out["selected"].dtype == np.int32
    lower, _ = nms_layer_net(4, 2, iou=np.float32(iou01) - 1e-4, score=0.49, per_class=2)
    o2 = lower.run({"boxes": boxes, "scores": scores})
    # IoU just above the threshold now suppresses box 1 in class 0; 0.5 scores count; 2 per class
    assert o2["selected"].tolist() == [[0, 1, 3], [0, 0, 0], [0, 0, 2], [0, 1, 1]]


def test_nms_layer_center_sizes_and_topk_limit():
    centre, _ = nms_layer_net(2, 1, iou=0.1, score=0.0, per_class=5, fmt=T.BoundingBoxFormat.CENTER_SIZES)
    b = np.array([[[10, 10, 4, 4], [12, 10, 4, 4]]], np.float32)     # IoU 1/3 as (cx, cy, w, h)
    got = centre.run({"boxes": b, "scores": np.array([[[0.9], [0.8]]], np.float32)})["selected"]
    assert got.tolist() == [[0, 0, 0]]
    n = 6000                               # disjoint boxes: only the 5000 best scores are considered
    xy = np.arange(n, dtype=np.float32)[:, None] * 10
    boxes = np.concatenate([xy, np.zeros_like(xy), xy + 5, np.full_like(xy, 5)], 1)[None]
    s = np.random.default_rng(0).permutation(n).astype(np.float32)[None, :, None] / n + 0.1
    net, layer = nms_layer_net(n, 1, iou=0.5, score=0.0, per_class=n)
    out = net.run({"boxes": boxes, "scores": s})
    assert int(out["count"]) == 5000 and layer.topk_box_limit == 5000
    assert set(out["selected"][:, 2]) == set(np.argsort(-s[0, :, 0])[:5000])


def test_efficient_nms_plugin_considers_5000_candidates():
    n = 6000
    xy = np.arange(n, dtype=np.float32)[:, None] * 10
    boxes = np.concatenate([xy, np.zeros_like(xy), xy + 5, np.full_like(xy, 5)], 1)[None]
    s = np.random.default_rng(1).permutation(n).astype(np.float32)[None, :, None] / n + 0.1
    net, _ = nms_net(n, 1, score_threshold=0.0, iou_threshold=0.5, max_output_boxes=n, box_coding=0)
    assert int(net.run({"boxes": boxes, "scores": s})["num"][0, 0]) == 5000


def test_creation_flag_values_per_tensorrt_major():
    """STRONGLY_TYPED is bit 1 on TensorRT 10 and bit 0 on 11, where bit 1 is
    PREFER_JIT_PYTHON_PLUGINS and EXPLICIT_BATCH is gone."""
    f10, f11 = T.creation_flag_enum(10), T.creation_flag_enum(11)
    assert int(f10.STRONGLY_TYPED) == 1 and int(f11.STRONGLY_TYPED) == 0
    assert int(f11.PREFER_JIT_PYTHON_PLUGINS) == 1 and "EXPLICIT_BATCH" not in f11.__members__
    assert T.create_network(1 << 1, major=10)._strongly_typed
    assert not T.create_network(1 << 1, major=11)._strongly_typed      # JIT plugins, not typed
    assert T.create_network(1 << 0, major=11)._strongly_typed
    with pytest.raises(NetworkDefinitionError, match="TensorRT 11"):
        T.create_network(1 << 3, major=11)


def test_gather_nd_and_float64_weights_only_in_a_float64_network():
    net, x = new((2, 3, 4))
    idx = net.add_constant((2, 2), T.Weights(np.array([[1, 2], [0, 0]], np.int32))).get_output(0)
    g = net.add_gather_v2(x, idx, T.GatherMode.ND)
    data = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    got = run1(net, data, g.get_output(0))
    np.testing.assert_array_equal(got, data[[1, 0], [2, 0]])
    net32, x32 = new((1, 2))
    with pytest.raises(NetworkDefinitionError, match="float64"):
        net32.add_constant((1, 2), T.Weights(np.zeros((1, 2), np.float64)))
    net64 = T.create_network(float64=True)
    net64.add_constant((1, 2), T.Weights(np.zeros((1, 2), np.float64)))

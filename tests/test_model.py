"""The architecture against the published ultralytics figures, and the decode against NumPy."""

import numpy as np
import pytest

import ppyolo_slim  # noqa: F401  (import order: before paddle)
from conftest import uneven_model
import paddle
import paddle.nn as nn

from ppyolo_slim.model import ModelMeta, build_model, expand_scale
from ppyolo_slim.model.flops import conv_macs, gflops
from ppyolo_slim.model.yolo import YOLOv5, count_parameters

# ultralytics yolov5 v7.0 models/yolov5{n,s,m,l,x}.yaml with nc=80, as the reference builds them
PUBLISHED = {"n": 1_872_157, "s": 7_235_389, "m": 21_190_557, "l": 46_563_709, "x": 86_749_405}


@pytest.mark.parametrize("scale", list(PUBLISHED))
def test_parameter_count_matches_ultralytics(scale):
    model = YOLOv5(expand_scale(scale, nc=80))
    assert count_parameters(model) == PUBLISHED[scale]


def test_bn_statistics_are_not_counted_as_trainable():
    model = YOLOv5(expand_scale("n"))
    # Paddle lists BN mean/var as parameters (docs/dependencies.md): 1,881,661 in all
    assert count_parameters(model, trainable_only=False) == 1_881_661


def test_yolov5n_gflops_at_640_and_paddle_counter_agrees():
    model = YOLOv5(expand_scale("n"))
    g = gflops(model, 640)
    assert 4.4 <= g <= 4.7, g
    # Independent count: Paddle's own counter (MACs), with BN counted as zero (BN folded)
    zero = lambda m, x, y: None  # noqa: E731
    paddle_macs = paddle.flops(model, [1, 3, 640, 640], custom_ops={nn.BatchNorm2D: zero},
                               print_detail=False)
    assert sum(conv_macs(model, 640).values()) == paddle_macs


def test_eval_output_layout_and_train_maps():
    model = build_model(ModelMeta(nc=3, names=list("abc")))
    x = paddle.rand([2, 3, 64, 96])
    model.train()
    raw = model(x)
    assert [list(r.shape) for r in raw] == [[2, 3, 8, 12, 8], [2, 3, 4, 6, 8], [2, 3, 2, 3, 8]]
    model.eval()
    y = model(x)
    assert list(y.shape) == [2, 3 * (8 * 12 + 4 * 6 + 2 * 3), 8]


def _numpy_decode(raw, anchors, strides):
    """The ultralytics v6 decode, written out in NumPy."""
    out = []
    for i, r in enumerate(raw):
        bs, na, ny, nx, no = r.shape
        y = 1 / (1 + np.exp(-r))
        gy, gx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        grid = np.stack([gx, gy], -1)[None, None] - 0.5
        xy = (y[..., :2] * 2 + grid) * strides[i]
        wh = (y[..., 2:4] * 2) ** 2 * np.asarray(anchors[i]).reshape(1, na, 1, 1, 2)
        out.append(np.concatenate([xy, wh, y[..., 4:]], -1).reshape(bs, -1, no))
    return np.concatenate(out, 1)


def test_decode_matches_numpy_reference():
    meta = ModelMeta(nc=2, names=["a", "b"])
    model = build_model(meta)
    model.eval()
    x = paddle.rand([1, 3, 128, 64])
    decoded = model(x).numpy()
    model.detect.training = True           # raw maps, BN still in eval mode
    raw = [r.numpy() for r in model(x)]
    ref = _numpy_decode(raw, np.asarray(meta.anchors).reshape(3, 3, 2), (8, 16, 32))
    np.testing.assert_allclose(decoded, ref, rtol=1e-5, atol=1e-4)
    assert decoded[..., 4:].min() >= 0 and decoded[..., 4:].max() <= 1


def test_uneven_widths_build_from_the_weights_alone(tmp_path):
    from ppyolo_slim.model import save_weights
    model = uneven_model()
    path = str(tmp_path / "uneven.pdparams")
    # the metadata says plain yolov5n multiples: the shapes must win
    save_weights(path, model.state_dict(), ModelMeta(nc=3, names=list("abc")))
    loaded = ppyolo_slim.load_model(path)
    model.eval()
    x = paddle.rand([1, 3, 64, 64])
    np.testing.assert_array_equal(model(x).numpy(), loaded(x).numpy())
    assert loaded.model[0].conv.weight.shape[0] == model.model[0].conv.weight.shape[0] != 16


def test_batchnorm_folds_into_the_convs_and_maps_back():
    """model/fold.py (QAT's first step): the folded model computes what the model did, and its
    state, with each bias carried by an identity BN, loads into a plain model that does too."""
    from ppyolo_slim.model.blocks import Conv
    from ppyolo_slim.model.fold import bias_as_batchnorm, fold_batchnorm
    meta = ModelMeta(nc=3, names=["a", "b", "c"], img_size=64)
    paddle.seed(3)
    model = build_model(meta)
    rng = np.random.default_rng(0)
    for layer in model.sublayers():
        if isinstance(layer, Conv):   # statistics far from the identity an untrained BN has
            c = layer.bn.weight.shape[0]
            layer.bn.weight.set_value(rng.uniform(-2, 2, c).astype("float32"))
            layer.bn.bias.set_value(rng.normal(0, 1, c).astype("float32"))
            layer.bn._mean.set_value(rng.normal(0, 0.5, c).astype("float32"))
            layer.bn._variance.set_value(rng.uniform(0.2, 3, c).astype("float32"))
    model.eval()
    x = paddle.to_tensor(rng.uniform(0, 1, (2, 3, 64, 64)).astype("float32"))
    want = model(x).numpy()
    blocks = sum(isinstance(m, Conv) for m in model.sublayers())
    assert fold_batchnorm(model) == blocks == 57
    assert not any(isinstance(m, nn.BatchNorm2D) for m in model.sublayers())
    np.testing.assert_allclose(model(x).numpy(), want, rtol=5e-3, atol=1e-2)   # float32 over 57 layers
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    plain, n = bias_as_batchnorm(state)
    assert n == blocks and not any(k.endswith(".conv.bias") for k in plain)
    again = build_model(meta, plain)
    again.eval()
    np.testing.assert_allclose(again(x).numpy(), want, rtol=5e-3, atol=1e-2)

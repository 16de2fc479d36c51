"""The trainer's custom CPU ops (engine/cpu_ops): the same forward and gradients as Paddle's
kernels, only in training mode and in dygraph, and plain layers to everything else."""
import copy

import numpy as np
import pytest

import ppyolo_slim  # noqa: F401
import paddle
import paddle.nn as nn

from ppyolo_slim.engine import cpu_ops


def _need(module):
    try:
        module()
    except cpu_ops.CpuOpsUnavailable as e:
        pytest.skip(str(e))


def _fwd_bwd(layer, x, gy):
    x = paddle.to_tensor(x, stop_gradient=False)
    y = layer(x)
    y.backward(paddle.to_tensor(gy))
    grads = [p.grad.numpy() for p in layer.parameters() if p.grad is not None]
    return y.numpy(), x.grad.numpy(), grads


@pytest.mark.compat
def test_silu_op_matches_paddles_silu_forward_and_backward():
    _need(cpu_ops.silu_module)
    rs = np.random.RandomState(0)
    x = (rs.randn(2, 8, 9, 11) * 6).astype("float32")       # far into both tails
    gy = rs.randn(*x.shape).astype("float32")
    ref, fast = nn.Silu(), nn.Silu()
    fast.__class__ = cpu_ops.FastSilu
    y0, gx0, _ = _fwd_bwd(ref, x, gy)
    y1, gx1, _ = _fwd_bwd(fast, x, gy)
    np.testing.assert_allclose(y1, y0, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gx1, gx0, rtol=1e-4, atol=1e-5)
    assert not np.array_equal(y1, x)        # it computed something
    far = np.array([[-1e30, -1e4, -100, -89, -88, 88, 89, 100, 1e4, 1e30]], "float32")
    y0, gx0, _ = _fwd_bwd(ref, far, np.ones_like(far))
    y1, gx1, _ = _fwd_bwd(fast, far, np.ones_like(far))
    assert np.isfinite(y1).all() and np.isfinite(gx1).all()     # exp overflow under -ffast-math
    np.testing.assert_allclose(y1, np.where(far > 0, far, 0), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gx1, np.where(far > 0, 1.0, 0.0), atol=1e-5)


@pytest.mark.compat
@pytest.mark.parametrize("k,s,p,bias", [(6, 2, 2, False), (3, 1, 1, False), (3, 2, 1, False), (3, 1, 1, True)])
def test_onednn_conv_op_matches_paddles_conv(k, s, p, bias):
    _need(cpu_ops.conv_module)
    paddle.seed(0)
    ref = nn.Conv2D(5, 7, k, s, p, bias_attr=None if bias else False)
    fast = nn.Conv2D(5, 7, k, s, p, bias_attr=None if bias else False)
    fast.set_state_dict(ref.state_dict())
    assert cpu_ops.conv_fits(fast)
    fast.__class__ = cpu_ops.FastConv2D
    rs = np.random.RandomState(1)
    x = rs.randn(3, 5, 20, 18).astype("float32")
    gy = rs.randn(*ref(paddle.to_tensor(x)).shape).astype("float32")
    y0, gx0, gw0 = _fwd_bwd(ref, x, gy)
    y1, gx1, gw1 = _fwd_bwd(fast, x, gy)
    np.testing.assert_allclose(y1, y0, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gx1, gx0, rtol=1e-4, atol=1e-4)
    assert len(gw1) == len(gw0) == (2 if bias else 1)
    for a, b in zip(gw1, gw0):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)


def test_a_yolov5n_switches_in_place_and_stays_a_plain_model_outside_training():
    _need(cpu_ops.silu_module)
    from ppyolo_slim.model import ModelMeta, build_model
    paddle.seed(0)
    model = build_model(ModelMeta(nc=3))
    plain = copy.deepcopy(model)
    keys = list(model.state_dict())
    done = cpu_ops.use_cpu_ops(model, "auto", log=lambda m: None)
    assert done["silu"] == 57                               # every SiLU of a YOLOv5n
    convs = sum(cpu_ops.conv_fits(layer) for layer in plain.sublayers())
    assert done["conv"] in (0, convs) and convs == 18         # the 6x6 stem and 17 3x3; 1x1 stay
    assert list(model.state_dict()) == keys                   # checkpoints see the same model
    assert type(copy.deepcopy(model).model[0].act) is cpu_ops.FastSilu   # the EMA copy too
    model.eval()
    plain.eval()
    x = paddle.rand([1, 3, 64, 64])
    np.testing.assert_array_equal(model(x).numpy(), plain(x).numpy())   # eval: Paddle's kernels
    assert cpu_ops.use_cpu_ops(build_model(ModelMeta(nc=3)), "none") == {"silu": 0, "conv": 0}


def test_missing_pieces_are_said_once_and_training_goes_on(monkeypatch):
    monkeypatch.setattr(cpu_ops, "onednn_include", lambda: None)
    monkeypatch.setattr(cpu_ops, "_SAID", set())
    said = []
    from ppyolo_slim.model import ModelMeta, build_model
    for _ in range(2):                              # a second trainer in the process: not said again
        done = cpu_ops.use_cpu_ops(build_model(ModelMeta(nc=3)), "auto", log=said.append)
    assert done["conv"] == 0 and len(said) == 1
    assert "pip install --no-deps onednn-devel-cpu-gomp==2023.2.0" in said[0]


def test_the_trainer_trains_on_them_on_the_cpu(tiny_data, tmp_path):
    _need(cpu_ops.silu_module)
    from conftest import tiny_train_overrides
    from ppyolo_slim.config import load_config
    from ppyolo_slim.engine.trainer import train
    fast = train(load_config(None, tiny_train_overrides(tiny_data, tmp_path / "a", epochs=1, cpu_ops="auto")),
                 progress=False)
    plain = train(load_config(None, tiny_train_overrides(tiny_data, tmp_path / "b", epochs=1, cpu_ops="none")),
                  progress=False)
    assert fast["cpu_ops"]["silu"] == 57 and plain["cpu_ops"] == {"silu": 0, "conv": 0}
    # the same training up to float rounding: one epoch from one seed
    for k in ("box_loss", "obj_loss", "cls_loss"):
        a, b = fast["history"][-1][k], plain["history"][-1][k]
        assert abs(a - b) <= 1e-3 * abs(b), (k, a, b)


def test_an_unwritable_cache_is_said_not_raised(tmp_path, monkeypatch):
    """A read-only cache folder costs the speed, not the training run."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(cpu_ops.CACHE_ENV, str(blocker))
    monkeypatch.setattr(cpu_ops, "_LOADED", {})
    for _ in range(2):          # the second call says it again without building again
        with pytest.raises(cpu_ops.CpuOpsUnavailable, match=r"building silu_op\.cc in .* failed"):
            cpu_ops.silu_module()


def test_convs_the_op_does_not_compute_stay_paddles():
    assert not cpu_ops.conv_fits(nn.Conv2D(4, 4, 1))                       # 1x1: Paddle's GEMM
    assert not cpu_ops.conv_fits(nn.Conv2D(4, 4, 3, padding="same"))
    assert not cpu_ops.conv_fits(nn.Conv2D(4, 4, 3, padding=[1, 0]))
    assert not cpu_ops.conv_fits(nn.Conv2D(4, 4, 3, padding=1, groups=2))
    assert not cpu_ops.conv_fits(nn.Conv2D(4, 4, 3, padding=2, dilation=2))
    assert not cpu_ops.conv_fits(nn.Conv2D(4, 4, 3, stride=[1, 2], padding=1))
    assert cpu_ops.conv_fits(nn.Conv2D(4, 4, 3, stride=2, padding=1))

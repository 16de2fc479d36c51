"""Network-slimming sparsity: which BNs, the exact gradient term, schedules, and that the
L1 norm of gamma really falls faster with it."""
import math

import ppyolo_slim  # noqa: F401  (import order: before paddle)
import numpy as np
import paddle
import pytest

from ppyolo_slim.model import ModelMeta, build_model
from ppyolo_slim.slim.sparsity import (SparsityL1, bottleneck_bns, detect_input_bns, gamma_stats,
                                       prunable_bns, schedule_factor)


def tiny(seed=0, width=0.125, depth=0.33):
    paddle.seed(seed)
    return build_model(ModelMeta(nc=2, names=["a", "b"], depth_multiple=depth, width_multiple=width))


def test_prunable_bns_yolov5n():
    m = build_model(ModelMeta(nc=2, names=["a", "b"]))
    all_bns = prunable_bns(m, exclude_detect_inputs=False)
    assert len(all_bns) == 57                      # one per Conv-BN (Detect's convs have none)
    names = [n for n, _ in all_bns]
    assert names[0] == "model.0.bn" and "model.2.m.0.cv2.bn" in names
    kept = [n for n, _ in prunable_bns(m)]
    assert set(names) - set(kept) == {"model.17.cv3.bn", "model.20.cv3.bn", "model.23.cv3.bn"}
    assert detect_input_bns(m) == {"model.17.cv3.bn", "model.20.cv3.bn", "model.23.cv3.bn"}
    # residual bottlenecks: C3 2, 4, 6, 8 (backbone, shortcut) with 1, 2, 3, 1 bottlenecks
    inner = bottleneck_bns(m)
    assert len(inner) == 2 * (1 + 2 + 3 + 1)
    assert "model.6.m.2.cv1.bn" in inner and not any(n.startswith("model.13.") for n in inner)


@pytest.mark.parametrize("schedule,expect", [
    ("constant", [1e-3, 1e-3, 1e-3]),
    ("linear", [1e-3, (1e-3 + 1e-5) / 2, 1e-5]),
    ("cosine", [1e-3, (1e-3 + 1e-5) / 2, 1e-5]),
])
def test_schedules(schedule, expect):
    got = [schedule_factor(schedule, 1e-3, 1e-5, e, 10) for e in (0, 5, 10)]
    assert np.allclose(got, expect, rtol=1e-9, atol=0)
    if schedule == "cosine":   # a quarter of the way: end + (start-end)*(1+cos(pi/4))/2
        q = schedule_factor(schedule, 1e-3, 1e-5, 2.5, 10)
        assert math.isclose(q, 1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi / 4)))


def test_config_errors():
    m = tiny()
    with pytest.raises(ValueError, match="unknown key 'rat'"):
        SparsityL1(m, {"rat": 1e-4})
    with pytest.raises(ValueError, match="schedule"):
        SparsityL1(m, {"schedule": "step"})
    with pytest.raises(ValueError, match="rate"):
        SparsityL1(m, {"rate": -1.0})


def _grads(model, x):
    model.clear_gradients()
    out = model(x)
    sum(o.square().mean() for o in out).backward()


@pytest.mark.compat
def test_apply_adds_exact_term():
    """grad after apply = grad before + rate*sign(gamma), per group of BNs."""
    m = tiny()
    m.train()
    rng = np.random.RandomState(1)
    for _, bn in prunable_bns(m, False):   # signs of both kinds, some exactly zero
        g = rng.randn(bn.weight.shape[0]).astype("float32")
        g[::7] = 0.0
        bn.weight.set_value(g)
    x = paddle.to_tensor(rng.rand(2, 3, 64, 64).astype("float32"))
    cfg = {"enabled": True, "rate": 1e-2, "bottleneck_rate": 3e-2, "exclude_detect_inputs": True,
           "schedule": "linear", "final_rate": 0.0}
    sp = SparsityL1(m, cfg, epochs=4)
    _grads(m, x)
    before = {n: bn.weight.grad.numpy().copy() for n, bn in prunable_bns(m, False)}
    # rate at epoch 1 of 4, linear to 0: 0.75 of the start
    r = sp.apply(1.0)
    assert math.isclose(r, 0.75e-2)
    inner, det = bottleneck_bns(m), detect_input_bns(m)
    for n, bn in prunable_bns(m, False):
        g = bn.weight.numpy()
        want = 0.0 if n in det else (0.75 * 3e-2 if n in inner else 0.75e-2)
        np.testing.assert_allclose(bn.weight.grad.numpy() - before[n], want * np.sign(g),
                                   rtol=1e-4, atol=1e-6, err_msg=n)
    disabled = SparsityL1(m, {"enabled": False})
    assert disabled.apply(0.0) == 0.0


def _loss_fn(model):
    """The real YOLOv5 loss when the loss module exists, else a plain differentiable loss."""
    try:
        from ppyolo_slim.engine.loss import ComputeLoss
    except ImportError:
        return lambda preds, targets: sum(p.square().mean() for p in preds)
    from ppyolo_slim.config import DEFAULTS
    det = model.detect
    cl = ComputeLoss(det.anchors.numpy(), det.stride, 2, dict(DEFAULTS["loss"]), 64)
    return lambda preds, targets: cl(preds, targets)[0]


def _train_l1(rate, steps=8, lr=0.05):
    m = tiny(seed=3)
    m.train()
    rng = np.random.RandomState(0)
    xs = [paddle.to_tensor(rng.rand(2, 3, 64, 64).astype("float32")) for _ in range(steps)]
    targets = paddle.to_tensor(np.array([[0, 0, .5, .5, .3, .4], [1, 1, .3, .6, .2, .2]], "float32"))
    loss_fn = _loss_fn(m)
    opt = paddle.optimizer.SGD(learning_rate=lr, parameters=m.parameters())
    sp = SparsityL1(m, {"enabled": rate > 0, "rate": rate, "exclude_detect_inputs": False}, steps)
    l1 = [gamma_stats(m)["l1"]]
    for i, x in enumerate(xs):
        loss = loss_fn(m(x), targets)
        loss.backward()
        sp.apply(float(i))
        opt.step()
        opt.clear_grad()
        l1.append(gamma_stats(m)["l1"])
    return np.array(l1), gamma_stats(m)["count"]


@pytest.mark.compat
def test_l1_of_gamma_falls_faster_with_sparsity():
    rate, steps, lr = 2e-2, 8, 0.05
    off, n = _train_l1(0.0, steps, lr)
    on, _ = _train_l1(rate, steps, lr)
    assert off[0] == on[0]                           # same seed, same start
    drop_off, drop_on = off[0] - off[-1], on[0] - on[-1]
    # plain SGD: the penalty alone moves each (positive, far from 0) gamma by lr*rate per step
    expected_extra = lr * rate * steps * n
    assert drop_on - drop_off > 0.5 * expected_extra, (drop_on, drop_off, expected_extra)
    assert drop_on - drop_off < 1.5 * expected_extra
    assert np.all(np.diff(on - off) < 0)            # the gap widens at every step


def test_gamma_stats():
    m = tiny()
    bns = prunable_bns(m, False)
    total = sum(bn.weight.shape[0] for _, bn in bns)
    for i, (_, bn) in enumerate(bns):
        c = bn.weight.shape[0]
        v = np.full(c, 0.5, "float32")
        if i == 0:
            v[:4] = [-5e-3, 5e-4, 0.0, -2.0]
        bn.weight.set_value(v)
    st = gamma_stats(m)
    assert st["count"] == total and st["abs_gamma"].shape == (total,)
    assert math.isclose(st["share_under_1e-2"], 3 / total)
    assert math.isclose(st["share_under_1e-3"], 2 / total)
    assert math.isclose(st["l1"], 0.5 * (total - 4) + 5e-3 + 5e-4 + 2.0, rel_tol=1e-6)
    assert st["gammas"].min() == pytest.approx(-2.0)

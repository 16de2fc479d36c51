"""Output distillation: zero when the student is the teacher, gradients only to the student,
and a fine-tune with a teacher runs and logs its loss; a new prune criterion in a few lines."""
import numpy as np
import paddle
import pytest

import ppyolo_slim  # noqa: F401  (import order: before paddle)
from conftest import tiny_train_overrides
from ppyolo_slim.model import ModelMeta, build_model, save_weights
from ppyolo_slim.slim.distill import OutputDistill, output_distill_loss


def _pair(seed_s=0, seed_t=0):
    meta = ModelMeta(nc=3, names=["a", "b", "c"])
    paddle.seed(seed_s)
    s = build_model(meta)
    paddle.seed(seed_t)
    t = build_model(meta)
    return s, t


def _x():
    return paddle.to_tensor(np.random.RandomState(0).rand(2, 3, 64, 64).astype("float32"))


def test_zero_when_student_equals_teacher():
    _, t = _pair(0, 0)
    cb = OutputDistill(t, 1.0, [4.0, 1.0, 0.4])
    t_maps = cb.teacher_maps(_x())
    loss = output_distill_loss(t_maps, t_maps)     # the student's maps are the teacher's
    assert abs(float(loss)) < 1e-5
    # and a different student gives a clearly positive loss
    s2, _ = _pair(1, 0)
    s2.train()
    assert float(output_distill_loss(s2(_x()), t_maps)) > 1e-2


@pytest.mark.compat
def test_gradient_reaches_only_the_student():
    s, t = _pair(1, 0)
    s.train()
    cb = OutputDistill(t, 1.0, [4.0, 1.0, 0.4])
    x = _x()
    loss, items = cb.extra_loss(None, x, s(x))
    loss.backward()
    assert items["distill_loss"] > 0
    assert all(p.grad is None for p in t.parameters())
    grads = [p.grad for p in s.parameters() if not p.stop_gradient]
    assert any(g is not None and float(paddle.abs(g).sum()) > 0 for g in grads)


def test_shape_mismatch_is_named():
    s, _ = _pair()
    t = build_model(ModelMeta(nc=2, names=["a", "b"]))
    s.train()
    cb = OutputDistill(t, 1.0, [4.0, 1.0, 0.4])
    with pytest.raises(ValueError, match="Detect level 0"):
        cb.extra_loss(None, _x(), s(_x()))


@pytest.mark.compat
def test_finetune_with_a_teacher(tiny_data, tmp_path):
    from ppyolo_slim.config import load_config
    from ppyolo_slim.engine.trainer import train
    from visualdl import LogReader
    import os
    meta = ModelMeta(nc=5, names=["circle", "square", "triangle", "star", "cross"])
    teacher = str(tmp_path / "teacher.pdparams")
    save_weights(teacher, build_model(meta).state_dict(), meta)
    out = tmp_path / "ft"
    cfg = load_config("configs/finetune.yml", tiny_train_overrides(
        tiny_data, out, epochs=1, weights=teacher, **{"distill.enabled": True, "distill.teacher": teacher}))
    train(cfg, progress=False)
    logdir = out / "vdl"
    reader = LogReader(file_path=str(logdir / [f for f in os.listdir(logdir) if f.startswith("vdlrecords")][0]))
    assert "train/distill_loss" in reader.get_tags()["scalar"]
    # a teacher of another class count is refused with both named
    bad = str(tmp_path / "bad.pdparams")
    m2 = ModelMeta(nc=2, names=["a", "b"])
    save_weights(bad, build_model(m2).state_dict(), m2)
    cfg = load_config("configs/finetune.yml", tiny_train_overrides(
        tiny_data, tmp_path / "ft2", epochs=1, weights=teacher, **{"distill.enabled": True, "distill.teacher": bad}))
    with pytest.raises(ValueError, match="2-class model, but the data has 5"):
        train(cfg, progress=False)
    # as many classes in another order: refused too, naming the first that differs
    m3 = ModelMeta(nc=5, names=["circle", "star", "triangle", "square", "cross"])
    save_weights(bad, build_model(m3).state_dict(), m3)
    with pytest.raises(ValueError, match="its class 1 is 'star', the data's is 'square'"):
        train(cfg, progress=False)


def test_a_new_criterion_in_a_few_lines():
    from ppyolo_slim.slim.importance import IMPORTANCE, register_importance
    from ppyolo_slim.slim.pruner import prune_model

    @register_importance("beta_abs_test", comparable=True)
    def beta_abs(ctx, group):
        """|beta| (a toy criterion for the test)."""
        return np.max(np.stack([np.abs(ctx.layers[b].bias.numpy()) for b in group.bns]), axis=0)

    try:
        meta = ModelMeta(nc=2, names=["a", "b"])
        m = build_model(meta)
        rng = np.random.default_rng(0)
        for layer in m.sublayers():
            if isinstance(layer, paddle.nn.BatchNorm2D):
                layer.bias.set_value(rng.uniform(-1, 1, layer.bias.shape[0]).astype("float32"))
        res = prune_model(m, meta, ratio=0.5, min_channels=1, criterion="beta_abs_test")
        for g in res.groups:   # what was kept has the largest |beta|
            sc = g.scores
            assert sc[g.keep].min() >= sc[~g.keep].max() if (~g.keep).any() and g.keep.sum() > 1 else True
        assert res.removed_share >= 0.5
    finally:
        IMPORTANCE.pop("beta_abs_test")

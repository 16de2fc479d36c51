"""The proximal and gradual sparsity methods, FLOP weights, and the trainer's callback hooks."""
import numpy as np
import paddle
import pytest

import ppyolo_slim  # noqa: F401  (import order: before paddle)
from conftest import tiny_train_overrides
from ppyolo_slim.config import load_config
from ppyolo_slim.engine.callbacks import Callback
from ppyolo_slim.engine.trainer import train
from ppyolo_slim.model import ModelMeta, build_model
from ppyolo_slim.slim.sparsity import SparsityL1, cubic_share, prunable_bns


def _model(seed=0):
    paddle.seed(seed)
    return build_model(ModelMeta(nc=2, names=["a", "b"]))


def test_proximal_step_zeroes_exactly_and_leaves_the_rest():
    m = _model()
    bns = dict(prunable_bns(m, exclude_detect_inputs=True))
    name, bn = next(iter(bns.items()))
    g = np.linspace(-0.05, 0.05, bn.weight.shape[0]).astype("float32")
    g[0], g[-1] = 0.3, -0.3
    bn.weight.set_value(g)
    detect_in = {n: l.weight.numpy().copy() for n, l in prunable_bns(m, False) if n not in bns}
    beta = bn.bias.numpy().copy()
    sp = SparsityL1(m, {"enabled": True, "method": "proximal", "rate": 2.0}, epochs=1)
    sp.prox(0.0, lr=0.01)             # threshold lr * rate = 0.02
    out = bn.weight.numpy()
    small = np.abs(g) <= 0.02
    assert small.any() and np.all(out[small] == 0.0)          # exact zeros, not near-zeros
    big = ~small
    np.testing.assert_allclose(np.abs(out[big]), np.abs(g[big]) - 0.02, rtol=0, atol=1e-7)
    assert np.all(np.sign(out[big]) == np.sign(g[big]))       # shrinks, never crosses zero
    np.testing.assert_array_equal(bn.bias.numpy(), beta)     # beta untouched
    for n, l in prunable_bns(m, False):                       # Detect inputs are excluded here
        if n in detect_in:
            np.testing.assert_array_equal(l.weight.numpy(), detect_in[n])
    # the subgradient form does nothing after the step, and the proximal one adds no gradient
    assert SparsityL1(m, {"enabled": True, "method": "subgradient"}, 1).prox(0.0, 0.01) == 0.0
    assert sp.apply(0.0) == 0.0


def test_flop_weights_follow_the_cost_of_a_channel():
    from ppyolo_slim.model.flops import conv_macs
    from ppyolo_slim.slim.pruner import ChannelPruner
    from ppyolo_slim.slim.sparsity import flop_weights
    m = _model()
    pr = ChannelPruner(m, trace_size=64, cost_size=128)
    w = flop_weights(pr)
    # channel-weighted mean is 1 by construction
    tot = sum(pr.relative_cost(g) * g.channels for g in pr.groups)
    assert tot / sum(g.channels for g in pr.groups) == pytest.approx(1.0)
    # by hand for the stem: its own conv's MACs per channel plus its consumer's per input channel
    macs = conv_macs(m, 128)
    g0 = next(g for g in pr.groups if g.convs == ["model.0"])
    by_hand = macs["model.0.conv"] / g0.channels + sum(
        macs[c[:-len(".weight")]] / m.state_dict()[c].shape[1] for c in g0.consumers)
    assert pr.channel_cost(g0) == pytest.approx(by_hand)
    # a high-resolution channel costs more than a deep one
    assert w["model.0.bn"] > w["model.8.cv3.bn"]


def test_cubic_schedule():
    assert cubic_share(0.875, 0, 10) == 0
    assert cubic_share(0.875, 10, 10) == cubic_share(0.875, 50, 10) == 0.875
    assert 0.875 / 2 < cubic_share(0.875, 2.5, 10) < 0.875     # fast early


@pytest.mark.compat
def test_gradual_method_makes_the_cut_exact(tiny_data, tmp_path):
    """Trained with the gradual method, the cut removes only channels held at gamma = beta = 0:
    the pruned model gives the unpruned model's outputs."""
    from ppyolo_slim import load_model
    from ppyolo_slim.slim.workflow import prune_checkpoint
    cfg = load_config("configs/sparse.yml", tiny_train_overrides(
        tiny_data, tmp_path / "g", epochs=2, **{"sparsity.method": "gradual", "sparsity.interval": 1,
                                                "sparsity.ramp": 0.5, "prune.ratio": 0.75,
                                                "prune.min_channels": 2, "weights": "null"}))
    s = train(cfg, progress=False)
    assert s["history"][-1]["masked_share"] >= 0.75
    assert s["history"][-1]["gamma_zero"] >= 0.75 * 0.99     # exact zeros (a few tied layers count once)
    rep = prune_checkpoint(s["last"], str(tmp_path / "p"), ratio=0.75, min_channels=2, img_size=64, visualdl=False,
                           plots=False, log=lambda *_: None)
    a, b = load_model(s["last"]), load_model(rep["paths"]["weights"])
    x = paddle.to_tensor(np.random.RandomState(0).rand(2, 3, 64, 64).astype("float32"))
    with paddle.no_grad():
        ya, yb = a(x).numpy(), b(x).numpy()
    assert np.abs(ya - yb).max() <= 1e-4 * max(1.0, np.abs(ya).max())


def test_a_new_callback_in_a_few_lines(tiny_data, tmp_path):
    """A callback that counts steps and adds a loss term: the trainer calls every hook."""
    class Counting(Callback):
        def __init__(self):
            self.calls = {}

        def _hit(self, k):
            self.calls[k] = self.calls.get(k, 0) + 1

        def on_train_start(self, t): self._hit("start")
        def extra_loss(self, t, imgs, preds):
            self._hit("loss")
            return preds[0].mean() * 0.0, {"zero_term": 0.0}
        def on_after_backward(self, t, e): self._hit("backward")
        def on_after_step(self, t, e): self._hit("step")
        def on_epoch_end(self, t, e, rec): self._hit("epoch"); rec["seen"] = True
        def on_save(self, t, e, rec): self._hit("save")

    cb = Counting()
    cfg = load_config("configs/base.yml", tiny_train_overrides(tiny_data, tmp_path / "c", epochs=2))
    s = train(cfg, progress=False, callbacks=[cb])
    batches, steps = 2 * 2, 2 * 1   # 16 images, batch 8, 2 epochs; nominal batch 16: a step every 2
    assert cb.calls == {"start": 1, "loss": batches, "backward": steps, "step": steps, "epoch": 2, "save": 2}
    assert all(h["seen"] for h in s["history"])

"""Numerical faults: inf/NaN in the gradients while the loss is finite stops training cleanly;
a layer whose BN scales are all zero keeps its floor of channels when pruned (and the pruned
file is refused, with both shapes, by a full-width model)."""
import numpy as np
import paddle
import paddle.nn as nn
import pytest

import ppyolo_slim
from conftest import tiny_train_overrides
from ppyolo_slim.config import load_config
from ppyolo_slim.engine.run import train_main
from ppyolo_slim.engine.trainer import TrainingDiverged, train
from ppyolo_slim.model import ModelMeta, WeightShapeError, assign_state, build_model, save_weights


class _InfGrad(paddle.autograd.PyLayer):
    """Identity forward (the loss is unchanged and finite); its backward multiplies by inf."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, dy):
        return dy * float("inf")


def _cfg(tiny_data, out, epochs):
    return load_config("configs/sparse.yml", tiny_train_overrides(
        tiny_data, out, epochs=epochs, nominal_batch_size=8, **{"log.images": 0}))


def test_inf_gradients_with_a_finite_loss_stop_training_with_step_and_cause(tiny_data, tmp_path,
                                                                            monkeypatch, capsys):
    out = tmp_path / "run"
    train(_cfg(tiny_data, out, 1), progress=False)
    before = (out / "last.pdparams").read_bytes(), (out / "last.state").read_bytes()

    from ppyolo_slim.engine import loss as loss_mod
    real = loss_mod.ComputeLoss.__call__
    seen = []

    def poisoned(self, preds, targets):
        loss, items = real(self, [_InfGrad.apply(preds[0])] + list(preds[1:]), targets)
        seen.append(float(loss))
        return loss, items
    monkeypatch.setattr(loss_mod.ComputeLoss, "__call__", poisoned)

    with pytest.raises(TrainingDiverged) as e:
        train(_cfg(tiny_data, out, 2), resume=str(out / "last.pdparams"), progress=False)
    msg = str(e.value)
    assert msg.startswith("epoch 2, step 0: NaN or inf in the gradients of ")
    assert "Likely causes" in msg and "intact" in msg
    assert seen and all(np.isfinite(seen)), "the loss itself stayed finite"
    assert ((out / "last.pdparams").read_bytes(), (out / "last.state").read_bytes()) == before

    # the command-line entry: one line, no traceback
    assert train_main(_cfg(tiny_data, out, 2), resume="", progress=False) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: epoch 2, step 0: NaN or inf in the gradients")


META = ModelMeta(nc=2, names=["a", "b"])
DEAD = "model.4.cv3.bn"          # a C3's output BN: every gamma set to 0


@pytest.fixture(scope="module")
def pruned_dead_layer():
    """The model pruned twice with one graph analysis: at ratio 0.99 (every layer to its floor)
    and at |gamma| threshold 0.1 (only the dead layer has anything below it)."""
    from ppyolo_slim.slim.pruner import ChannelPruner, prune_model, undo_pruning
    paddle.seed(0)
    model = build_model(META)
    rng = np.random.RandomState(0)
    for name, layer in model.named_sublayers():
        if isinstance(layer, nn.BatchNorm2D):
            c = layer.weight.shape[0]
            gamma = np.zeros(c) if name == DEAD else 0.5 + rng.rand(c)
            layer.weight.set_value(gamma.astype("float32"))
    full = {k: v.shape for k, v in model.state_dict().items()}
    pruner = ChannelPruner(model, trace_size=64)
    by_ratio = prune_model(model, META, ratio=0.99, min_channels=8, pruner=pruner)
    undo_pruning(model)
    by_threshold = prune_model(model, META, threshold=0.1, min_channels=8, pruner=pruner)
    return by_ratio, by_threshold, full


def test_all_zero_gammas_in_a_layer_keep_the_floor_and_the_model_runs(pruned_dead_layer):
    by_ratio, by_threshold, full = pruned_dead_layer
    assert full[f"{DEAD}.weight"] == [64]
    for result in (by_ratio, by_threshold):
        assert result.state[f"{DEAD}.weight"].shape[0] == 8
        for k, v in result.state.items():       # no layer anywhere was cut below its floor
            if k.endswith(".bn.weight"):
                assert v.shape[0] >= min(8, full[k][0]), k
        with paddle.no_grad():
            y = result.model(paddle.rand([1, 3, 64, 64]))
        assert list(y.shape) == [1, 252, 7] and bool(paddle.isfinite(y).all())
    # at the threshold only the dead layer (and channels tied to it) lost anything
    cut = {k for k, v in by_threshold.state.items() if k.endswith(".bn.weight") and v.shape[0] < full[k][0]}
    assert cut == {f"{DEAD}.weight"}, cut


def test_pruned_file_loaded_as_unpruned_names_the_layer_and_both_shapes(pruned_dead_layer, tmp_path):
    result, _, full = pruned_dead_layer
    path = str(tmp_path / "pruned.pdparams")
    save_weights(path, result.state, META)
    assert ppyolo_slim.load_model(path).state_dict()[f"{DEAD}.weight"].shape == [8]   # the intended way
    with pytest.raises(WeightShapeError, match=r"^pruned\.pdparams: model\.0\.conv\.weight has shape "
                                               r"\[8, 3, 6, 6\], the model expects \[16, 3, 6, 6\]$"):
        assign_state(build_model(META), result.state, source="pruned.pdparams")

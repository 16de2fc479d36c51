"""PaddleSlim extended with silu/concat workers: every Conv-BN of YOLOv5n lands in a
collection, concat offsets map both ways, and a pruned model holds together."""
import ppyolo_slim  # noqa: F401  (import order: before paddle)
import numpy as np
import paddle
import paddle.nn as nn
import pytest

from ppyolo_slim.model import ModelMeta, build_model
from ppyolo_slim.model.blocks import Conv
from ppyolo_slim.model.channels import ConvSpec
from ppyolo_slim.slim import workers
from ppyolo_slim.slim.pruner import ChannelPruner, PruneCoverageError, prune_model, undo_pruning
from ppyolo_slim.utils.layers import state_names

from paddleslim.core import GraphWrapper, dygraph2program
from paddleslim.prune.prune_worker import PRUNE_WORKER

META = ModelMeta(nc=2, names=["a", "b"])


@pytest.fixture(scope="module")
def v5n():
    paddle.seed(0)
    model = build_model(META)
    return model, ChannelPruner(model, trace_size=64)


@pytest.mark.compat
def test_workers_registered():
    assert PRUNE_WORKER.get("silu") is workers.silu
    assert PRUNE_WORKER.get("concat") is workers.concat
    workers.register()          # idempotent
    assert PRUNE_WORKER.get("concat") is workers.concat


@pytest.mark.compat
def test_every_conv_bn_of_yolov5n_is_in_a_collection(v5n):
    model, p = v5n
    convs = [n for n, l in model.named_sublayers() if isinstance(l, nn.Conv2D)]
    assert len(convs) == 60
    detect = {"model.24.m.0", "model.24.m.1", "model.24.m.2"}
    assert set(convs) - {c + ".conv" for c in p.covered} == detect
    assert len(p.covered) == 57 and len(p.expected_convs()) == 57
    assert len(p.groups) == 50
    # residual-tied chains: C3 cv1 plus every bottleneck cv2, in the backbone C3s only
    tied = {g.master_key: g.convs for g in p.groups if g.tied}
    assert tied == {
        "model.2.cv1.conv.weight": ["model.2.cv1", "model.2.m.0.cv2"],
        "model.4.cv1.conv.weight": ["model.4.cv1", "model.4.m.0.cv2", "model.4.m.1.cv2"],
        "model.6.cv1.conv.weight": ["model.6.cv1", "model.6.m.0.cv2", "model.6.m.1.cv2", "model.6.m.2.cv2"],
        "model.8.cv1.conv.weight": ["model.8.cv1", "model.8.m.0.cv2"],
    }
    by = {g.master_key: g for g in p.groups}
    # concat consumers: SPPF, C3's cv3, the head's concats (each reaches both C3 input convs)
    assert by["model.9.cv1.conv.weight"].consumers == ["model.9.cv2.conv.weight"]
    assert by["model.2.cv2.conv.weight"].consumers == ["model.2.cv3.conv.weight"]
    assert sorted(by["model.14.conv.weight"].consumers) == [
        "model.17.cv1.conv.weight", "model.17.cv2.conv.weight",
        "model.20.cv1.conv.weight", "model.20.cv2.conv.weight"]
    assert by["model.23.cv3.conv.weight"].consumers == ["model.24.m.2.weight"]


@pytest.mark.parametrize("op,missing", [("concat", "a, b"), ("silu", "a, b, c")])
def test_missing_worker_fails_loudly(monkeypatch, op, missing):
    """Without our workers PaddleSlim drops collections with only a log line; we raise."""
    monkeypatch.delitem(PRUNE_WORKER._module_dict, op)
    with pytest.raises(PruneCoverageError, match=f"in no pruning collection: {missing}\\."):
        ChannelPruner(Toy(), trace_size=32)


@pytest.mark.compat
def test_pruned_yolov5n_holds_together(v5n):
    """PaddleSlim alone left C3.cv3 with 24 inputs while its concat gave 16; check every join."""
    model, p = v5n
    rng = np.random.RandomState(0)
    orig = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    try:
        for _, l in model.named_sublayers():
            if isinstance(l, nn.BatchNorm2D):
                l.weight.set_value(rng.rand(l.weight.shape[0]).astype("float32"))
        r = prune_model(model, META, ratio=0.5, min_channels=1, pruner=p)
    finally:
        undo_pruning(model)
        model.set_state_dict(orig)
    s = {k: v.shape for k, v in r.state.items()}
    out = lambda n: s[f"{n}.conv.weight"][0]          # noqa: E731
    inp = lambda n: s[f"{n}.conv.weight"][1]          # noqa: E731
    assert 0.3 < r.removed_share < 0.6
    for i, n in ((2, 1), (4, 2), (6, 3), (8, 1), (13, 1), (17, 1), (20, 1), (23, 1)):
        last = f"model.{i}.m.{n - 1}.cv2"
        assert inp(f"model.{i}.cv3") == out(last) + out(f"model.{i}.cv2"), i
        assert inp(f"model.{i}.m.0.cv1") == out(f"model.{i}.cv1")
    assert inp("model.9.cv2") == 4 * out("model.9.cv1")
    assert inp("model.13.cv1") == out("model.10") + out("model.6.cv3")
    assert inp("model.17.cv1") == out("model.14") + out("model.4.cv3")
    assert inp("model.20.cv1") == out("model.18") + out("model.14")
    assert inp("model.23.cv1") == out("model.21") + out("model.10")
    for k, c in ((0, 17), (1, 20), (2, 23)):
        assert s[f"model.24.m.{k}.weight"] == (21, out(f"model.{c}.cv3"), 1, 1)
    assert any(s[k] != v.shape for k, v in orig.items())
    y = r.model(paddle.rand([1, 3, 96, 96]))
    assert y.shape == [1, 3 * (144 + 36 + 9), 7]
    assert all(model.state_dict()[k].shape == list(v.shape) for k, v in orig.items())  # undone


class Toy(nn.Layer):
    """a (4 ch) and b (6 ch) concatenated into c; a leaf conv reads c."""

    def __init__(self):
        super().__init__()
        self.a = Conv(ConvSpec("a", 3, 4, 1))
        self.b = Conv(ConvSpec("b", 3, 6, 3, 1, 1))
        self.c = Conv(ConvSpec("c", 10, 5, 1))
        self.head = nn.Conv2D(5, 2, 1)

    def forward(self, x):
        return self.head(self.c(paddle.concat([self.a(x), self.b(x)], axis=1)))


def test_concat_input_to_output_offsets():
    toy = Toy()
    p = ChannelPruner(toy, trace_size=32)
    assert sorted(p.covered) == ["a", "b", "c"]
    toy.a.bn.weight.set_value(np.array([1, 0, 1, 1], "float32"))
    toy.b.bn.weight.set_value(np.array([0, 1, 1, 1, 0, 1], "float32"))
    p.set_threshold(0.5, min_channels=1)
    plan = p.make_plan()
    names = {v: k for k, v in state_names(toy).items()}
    (m,) = [m for m in plan.masks[names["c.conv.weight"]] if m.dims == 1]
    assert list(np.asarray(m.mask, dtype=int)) == [1, 0, 1, 1, 0, 1, 1, 1, 0, 1]
    plan.apply(toy)
    assert toy.c.conv.weight.shape == [5, 7, 1, 1]
    assert toy(paddle.rand([1, 3, 32, 32])).shape == [1, 2, 32, 32]


def test_concat_output_to_inputs_offsets():
    """Entered from its output, the worker slices the mask back onto each input."""
    toy = Toy()
    graph = GraphWrapper(dygraph2program(toy, inputs=[1, 3, 32, 32], dtypes=["float32"]))
    (op,) = [o for o in graph.ops() if o.type() == "concat"]
    found = []
    w = workers.concat(op, pruned_params=found, visited={}, skip_stranger=True)
    w.prune(op.outputs("Out")[0], 1, [])
    by = {v.name(): t for v, axis, t, _ in found if axis == 0 and len(v.shape()) == 4}
    a, b = toy.a.conv.weight.name, toy.b.conv.weight.name
    assert by[a] == [{"src_start": 0, "src_end": 4, "target_start": 0, "target_end": 4, "target_len": 4}]
    assert by[b] == [{"src_start": 4, "src_end": 10, "target_start": 0, "target_end": 6, "target_len": 6}]
    mask = np.array([1, 0, 1, 1, 0, 1, 1, 1, 0, 1])
    p = ChannelPruner.__new__(ChannelPruner)     # _transform_mask is PaddleSlim's own
    assert list(p._transform_mask(mask, by[a][0])) == [1, 0, 1, 1]
    assert list(p._transform_mask(mask, by[b][0])) == [0, 1, 1, 1, 0, 1]

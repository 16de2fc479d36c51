"""A new block is one description, one Paddle layer and one TensorRT emitter: a toy block,
x + Conv3x3(x), put in place of SPPF, is built, resolved from weights, penalised by sparsity
and emitted to the NumPy stand-in of TensorRT, which must agree with Paddle."""
import pytest

import ppyolo_slim  # noqa: F401  (import order: before paddle)
import paddle.nn as nn

from ppyolo_slim.deploy import builder as B
from ppyolo_slim.deploy.check import check_against_paddle
from ppyolo_slim.model import ModelMeta, build_model, expand, resolve, save_weights, spec
from ppyolo_slim.model.block_types import BLOCK_TYPES, BlockType, register
from ppyolo_slim.model.blocks import PADDLE_LAYERS, Conv, paddle_layer
from ppyolo_slim.slim.sparsity import bottleneck_bns, detect_input_bns, prunable_bns


@pytest.fixture
def residual_block(monkeypatch):
    tables = (BLOCK_TYPES, PADDLE_LAYERS, B.EMITTERS)
    before = [dict(t) for t in tables]

    @register
    class ResidualType(BlockType):
        """x + Conv3x3(x): the conv keeps its input's width, and its channels are tied to it."""
        name = "Residual"

        def resolve(self, r, c_in, w, net):
            r.convs["cv1"] = w.conv(f"{r.name}.cv1", c_in[0], c_in[0], 3)
            return c_in[0]

        def residual_convs(self, r):
            return ["cv1"]

    @paddle_layer("Residual")
    class Residual(nn.Layer):
        def __init__(self, r, net):
            super().__init__()
            self.cv1 = Conv(r.convs["cv1"])

        def forward(self, x):
            return x + self.cv1(x)

    @B.emits("Residual")
    def emit(e, r, xs):
        y = e.conv(xs[0], r.convs["cv1"])
        return e.elementwise(xs[0], y, e.trt.ElementWiseOperation.SUM, f"{r.name}.add")

    monkeypatch.setattr(spec, "BACKBONE", spec.BACKBONE[:9] + [(-1, 1, "Residual", [])])
    yield Residual
    for table, old in zip(tables, before):
        table.clear()
        table.update(old)


def test_a_new_block_builds_resolves_and_deploys(residual_block, tmp_path):
    meta = ModelMeta(nc=2, names=["red", "green"], img_size=64)
    model = build_model(meta)
    assert isinstance(model.model[9], residual_block)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["model.9.cv1.conv.weight"] == (256, 256, 3, 3)
    assert not any(k.startswith("model.9.cv2") for k in shapes)

    # channels from a narrower checkpoint: the block passes on its input's width
    narrow = dict(shapes, **{"model.8.cv3.conv.weight": (200, 256, 1, 1), "model.9.cv1.conv.weight": (200, 200, 3, 3),
                             "model.10.conv.weight": (128, 200, 1, 1)})
    layers = resolve(expand(2), narrow)
    assert (layers[9].out_channels, layers[9].convs["cv1"].c1) == (200, 200)
    assert layers[10].convs[""].c1 == 200

    # sparsity: its BN is penalised, tied to the add; Detect's inputs are unchanged
    assert "model.9.cv1.bn" in bottleneck_bns(model)
    assert "model.9.cv1.bn" in dict(prunable_bns(model))
    assert detect_input_bns(model) == {"model.17.cv3.bn", "model.20.cv3.bn", "model.23.cv3.bn"}

    path = str(tmp_path / "residual.pdparams")
    save_weights(path, model.state_dict(), meta)
    rep = check_against_paddle(path, img_size=64)
    assert rep.passed and rep.channels["model.9.cv1"] == 256, rep

    # the check can tell: an emitter that forgets the add fails it (the fixture restores the table)
    B.EMITTERS["Residual"] = lambda e, r, xs: e.conv(xs[0], r.convs["cv1"])
    assert not check_against_paddle(path, img_size=64).passed


def test_a_block_without_a_description_is_refused(monkeypatch):
    with pytest.raises(ValueError, match="unknown block 'Nope'"):
        paddle_layer("Nope")
    with pytest.raises(ValueError, match="unknown block 'Nope'"):
        B.emits("Nope")
    monkeypatch.setattr(spec, "HEAD", spec.HEAD[:-1] + [((17, 20, 23), 1, "Nope", [])])
    with pytest.raises(ValueError, match="unknown block 'Nope'"):
        expand(2)

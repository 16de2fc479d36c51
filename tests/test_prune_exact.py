"""The criterion, the global threshold, floors, rounding, and compensation: exact where the
maths says it must be (gamma = 0 channels; 1x1 consumers), better than nothing elsewhere."""
import ppyolo_slim  # noqa: F401  (import order: before paddle)
import numpy as np
import paddle
import paddle.nn as nn
import pytest

from ppyolo_slim.model import ModelMeta, build_model
from ppyolo_slim.slim.pruner import ChannelPruner, PruneError, prune_model, undo_pruning

META = ModelMeta(nc=2, names=["a", "b"])          # YOLOv5n layout, 2 classes
S = 64


@pytest.fixture(scope="module")
def net():
    paddle.seed(1)
    model = build_model(META)
    rng = np.random.RandomState(1)
    for _, l in model.named_sublayers():          # a trained-looking BN everywhere
        if isinstance(l, nn.BatchNorm2D):
            c = l.weight.shape[0]
            l.weight.set_value((0.5 + rng.rand(c)).astype("float32"))
            l.bias.set_value((0.1 * rng.randn(c)).astype("float32"))
            l._mean.set_value((0.1 * rng.randn(c)).astype("float32"))
            l._variance.set_value((0.5 + rng.rand(c)).astype("float32"))
    model.eval()
    pruner = ChannelPruner(model, trace_size=S)
    orig = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    x = paddle.to_tensor(rng.rand(2, 3, S, S).astype("float32"))
    return model, pruner, orig, x


@pytest.fixture
def fresh(net):
    model, pruner, orig, x = net
    undo_pruning(model)
    model.set_state_dict(orig)
    model.eval()
    pruner.clear_threshold()
    yield model, pruner, x
    undo_pruning(model)
    model.set_state_dict(orig)


def outputs(model, x):
    """Detect's raw 1x1 outputs (logits) and the decoded eval output."""
    raw = []
    hooks = [m.register_forward_post_hook(lambda l, i, o: raw.append(o.numpy())) for m in model.detect.m]
    with paddle.no_grad():
        y = model(x).numpy()
    for h in hooks:
        h.remove()
    return raw, y


def max_diff(a, b):
    """Largest difference of logits, scores, and boxes as a share of the image size (pixel
    boxes at float32 differ by ~1 ulp of the pixel value, which is not what we test)."""
    (ra, ya), (rb, yb) = a, b
    return max(max(float(np.abs(p - q).max()) for p, q in zip(ra, rb)),
               float(np.abs(ya[..., 4:] - yb[..., 4:]).max()),
               float(np.abs(ya[..., :4] - yb[..., :4]).max()) / S)


def zero_channels(model, pruner, groups, rng, beta_scale):
    """gamma = 0 (and beta ~ beta_scale) on half of each chosen group's channels, in every
    BN that holds them (a residual-tied channel in all of its layers)."""
    layers = dict(model.named_sublayers())
    n = 0
    for g in groups:
        idx = rng.choice(g.channels, g.channels // 2, replace=False)
        for b in g.bns:
            bn = layers[b]
            w, bb = bn.weight.numpy(), bn.bias.numpy()
            w[idx] = 0.0
            bb[idx] = beta_scale * rng.randn(idx.size)
            bn.weight.set_value(w)
            bn.bias.set_value(bb)
        n += idx.size * len(g.bns)
    return n


@pytest.mark.compat
def test_zero_gamma_zero_beta_pruning_is_exact(fresh):
    model, pruner, x = fresh
    n = zero_channels(model, pruner, pruner.groups, np.random.RandomState(2), 0.0)
    ref = outputs(model, x)
    r = prune_model(model, META, threshold=1e-6, min_channels=1, pruner=pruner)
    removed = sum((~g.keep).sum() * len(g.bns) for g in r.groups)
    assert removed == n and r.removed_share > 0.45
    assert max_diff(outputs(r.model, x), ref) < 1e-5


def _only_1x1_consumers(model, pruner):
    layers = dict(model.named_sublayers())
    return [g for g in pruner.groups
            if all(layers[c[:-len(".weight")]].weight.shape[2] == 1 for c in g.consumers)]


@pytest.mark.compat
def test_compensation_exact_for_1x1_consumers(fresh):
    """gamma = 0, beta != 0: each removed channel emits silu(beta) (summed along C3's residual
    stream, max-pooled in SPPF, upsampled in the head); folded into 1x1 consumers it is exact."""
    model, pruner, x = fresh
    groups = _only_1x1_consumers(model, pruner)
    labels = {g.label for g in groups}
    assert {"model.9.cv1", "model.10", "model.2.cv2", "model.6.cv1 (+3 tied)"} <= labels
    zero_channels(model, pruner, groups, np.random.RandomState(3), 0.5)
    zeroed = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    ref = outputs(model, x)
    errs = {}
    for comp in (True, False):
        undo_pruning(model)
        model.set_state_dict(zeroed)
        r = prune_model(model, META, threshold=1e-6, min_channels=1, compensate=comp, pruner=pruner)
        assert r.removed_share > 0.1
        errs[comp] = max_diff(outputs(r.model, x), ref)
    assert errs[True] < 1e-5, errs
    assert errs[False] > 1e-2, errs


def test_compensation_reduces_error_with_3x3_consumers(fresh):
    model, pruner, x = fresh
    zero_channels(model, pruner, pruner.groups, np.random.RandomState(4), 0.5)
    zeroed = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    ref = outputs(model, x)
    errs, mean = {}, {}
    for comp in (True, False):
        undo_pruning(model)
        model.set_state_dict(zeroed)
        r = prune_model(model, META, threshold=1e-6, min_channels=1, compensate=comp, pruner=pruner)
        got = outputs(r.model, x)
        errs[comp] = max_diff(got, ref)
        mean[comp] = np.mean([np.abs(a - b).mean() for a, b in zip(got[0], ref[0])])
        if comp:
            assert "model.2.m.0.cv2.conv" in r.compensation["approximate_at_borders"]
            assert r.compensation["consumers"]["model.24.m.0"]["into"] == "model.24.m.0.bias"
    assert errs[True] < errs[False] and mean[True] < 0.5 * mean[False], (errs, mean)


def test_global_threshold_matches_independent_rule(fresh):
    model, pruner, _ = fresh
    rng = np.random.RandomState(5)
    for _, l in model.named_sublayers():
        if isinstance(l, nn.BatchNorm2D):
            l.weight.set_value(rng.rand(l.weight.shape[0]).astype("float32"))
    ratio = 0.6
    thr = pruner.global_threshold(ratio)
    # independent: every BN channel's |gamma|, a tied channel taking its largest |gamma|
    layers = dict(model.named_sublayers())
    allv = []
    for g in pruner.groups:
        s = np.max([np.abs(layers[b].weight.numpy()) for b in g.bns], axis=0)
        allv += list(s) * len(g.bns)
    allv = np.sort(allv)
    assert thr == allv[int(ratio * len(allv))]
    pruner.set_threshold(thr, min_channels=1)
    for g in pruner.groups:
        s = np.max([np.abs(layers[b].weight.numpy()) for b in g.bns], axis=0)
        want = s >= thr
        if not want.any():
            want[np.argmax(s)] = True
        assert np.array_equal(g.keep, want), g.label
    removed = sum((~g.keep).sum() * len(g.bns) for g in pruner.groups)
    assert abs(removed / len(allv) - ratio) < 0.02


def test_ratio_counts_after_floors(fresh):
    """--ratio r removes r of the channels even where floors keep some: the lowest threshold
    that does, and nothing lower would."""
    model, pruner, _ = fresh
    rng = np.random.RandomState(6)
    for _, l in model.named_sublayers():
        if isinstance(l, nn.BatchNorm2D):
            l.weight.set_value(rng.rand(l.weight.shape[0]).astype("float32"))
    ratio, floor = 0.8, 8
    plain = pruner.global_threshold(ratio)
    assert pruner.removed_share_at(plain, floor, 1) < ratio        # floors bind at 80%
    thr, share = pruner.threshold_for_share(ratio, floor, 1)
    assert share >= ratio and share == pruner.removed_share_at(thr, floor, 1)
    below = np.unique(pruner.all_scores()[0])
    below = below[below < thr].max()
    assert pruner.removed_share_at(below, floor, 1) < ratio
    pruner.set_threshold(thr, floor)
    tot = sum(g.channels * len(g.bns) for g in pruner.groups)
    gone = sum((~g.keep).sum() * len(g.bns) for g in pruner.groups)
    assert gone / tot == pytest.approx(share)
    # unreachable: floors of 16 everywhere cannot remove 97%
    thr, share = pruner.threshold_for_share(0.97, 16, 1)
    pruner.set_threshold(thr, 16)
    assert share < 0.97 and all(g.keep.sum() == min(16, g.channels) for g in pruner.groups)


def test_tied_channels_ranked_by_largest_gamma(fresh):
    model, pruner, _ = fresh
    layers = dict(model.named_sublayers())
    (g,) = [g for g in pruner.groups if g.master_key == "model.2.cv1.conv.weight"]
    a, b = layers["model.2.cv1.bn"], layers["model.2.m.0.cv2.bn"]
    ga, gb = np.ones(g.channels, "float32"), np.ones(g.channels, "float32")
    ga[0], gb[0] = 0.0, 0.9        # ch 0: small in cv1, large in the bottleneck -> kept
    ga[1], gb[1] = 0.0, 0.0        # ch 1: small in both -> removed
    ga[2], gb[2] = 0.05, 0.0       # ch 2: largest 0.05 < 0.1 -> removed
    a.weight.set_value(ga)
    b.weight.set_value(gb)
    pruner.set_threshold(0.1, min_channels=1)
    assert list(g.keep[:4]) == [True, False, False, True] and g.keep[4:].all()


def test_floor_rounding_never_zero(fresh):
    model, pruner, _ = fresh
    pruner.set_threshold(1e9, min_channels=1)
    assert all(g.keep.sum() == 1 for g in pruner.groups)
    pruner.set_threshold(1e9, min_channels=12)
    assert all(g.keep.sum() == min(12, g.channels) for g in pruner.groups)
    pruner.set_threshold(0.9, min_channels=1, round_to=8)
    for g in pruner.groups:
        k = int(g.keep.sum())
        assert k % 8 == 0 or k == g.channels
        assert k >= int((pruner.scores(g) >= 0.9).sum())
    pruner.set_threshold(0.0, min_channels=1)
    assert all(g.keep.all() for g in pruner.groups)
    with pytest.raises(PruneError, match="min_channels must be >= 1"):
        pruner.set_threshold(0.5, min_channels=0)
    with pytest.raises(PruneError, match="ratio must be in"):
        pruner.global_threshold(1.0)


def test_per_layer_criteria(fresh):
    model, pruner, _ = fresh
    for crit in ("l1_norm", "fpgm"):
        pruner.criterion = crit
        pruner.set_uniform_ratio(0.5, min_channels=1)
        for g in pruner.groups:
            assert g.keep.sum() == g.channels - g.channels // 2
    pruner.criterion = "bn_scale"
    with pytest.raises(PruneError, match="a threshold is a score value"):
        prune_model(model, META, threshold=0.1, criterion="l1_norm", pruner=pruner)

"""Progressive pruning (slim/progressive.py): the shares mean the same as prune.ratio (of the
original channels), training runs between cuts and not after the last, a rerun keeps finished
steps, and a real tiny training run fits between two cuts."""
import json
import os

import ppyolo_slim  # noqa: F401  (import order: before paddle)
import numpy as np
import paddle.nn as nn
import pytest

from ppyolo_slim import load_model
from ppyolo_slim.model import ModelMeta, build_model, save_weights
from ppyolo_slim.slim.progressive import ProgressiveError, check_steps, progressive_prune, step_ratio, trainer_between
from ppyolo_slim.slim.workflow import prune_checkpoint

from conftest import tiny_train_overrides

META = ModelMeta(nc=5, names=[f"c{i}" for i in range(5)], img_size=64)


def bn_channels(model):
    return sum(l.weight.shape[0] for _, l in model.named_sublayers() if isinstance(l, nn.BatchNorm2D))


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    m = build_model(META)
    rng = np.random.RandomState(0)
    for _, l in m.named_sublayers():
        if isinstance(l, nn.BatchNorm2D):
            l.weight.set_value((0.05 + rng.rand(l.weight.shape[0])).astype("float32"))
    path = str(tmp_path_factory.mktemp("dense") / "dense.pdparams")
    save_weights(path, m.state_dict(), META)
    return path


def test_step_ratio_is_of_the_original_channels():
    assert step_ratio(0.5, 1000, 1000) == pytest.approx(0.5)
    assert step_ratio(0.75, 1000, 500) == pytest.approx(0.5)       # 500 -> 250 = 1000 * 0.25
    assert step_ratio(0.875, 1000, 250) == pytest.approx(0.5)
    assert step_ratio(0.75, 1000, 240) is None                      # an earlier cut went further


@pytest.mark.parametrize("bad", [[], [0.75, 0.5], [0.5, 0.5], [0.5, 1.0], [-0.1]])
def test_bad_steps_are_refused(bad):
    with pytest.raises(ProgressiveError, match="progressive pruning"):
        check_steps(bad)


def test_steps_reach_the_share_and_train_between_only(dense, tmp_path):
    trained = []

    def train_between(pruned, out):          # no training: the cut alone, to check the arithmetic
        trained.append(pruned)
        return pruned

    kw = dict(min_channels=1, img_size=64, visualdl=False, plots=False, log=lambda *_: None)
    rep = progressive_prune(dense, str(tmp_path), [0.5, 0.75], prune=prune_checkpoint,
                            train_between=train_between, **kw)
    assert len(trained) == 1 and trained[0].endswith(os.path.join("step1", "pruned.pdparams"))
    original = bn_channels(load_model(dense))
    final = bn_channels(load_model(rep["paths"]["weights"]))
    # the BN count includes Detect-free layers only if prunable; compare with a one-shot 0.75 cut
    one = prune_checkpoint(dense, str(tmp_path / "oneshot"), ratio=0.75, **kw)
    assert rep["channels"]["after"] == one["channels"]["after"]
    assert rep["channels"]["removed_share"] == pytest.approx(0.75, abs=0.01)
    assert rep["params"]["before"] == one["params"]["before"]           # of the original model
    assert rep["flops"]["gflops_before"] == one["flops"]["gflops_before"]
    assert final < original
    assert [round(e["share"], 3) for e in rep["progressive"]] == [0.5, 0.75]
    with open(os.path.join(str(tmp_path), "prune_report.json")) as f:
        assert json.load(f)["progressive"][1]["channels"] == rep["channels"]["after"]

    # a rerun keeps both finished cuts (the reports exist) and trains step 1's model again
    calls = []

    def counting_prune(*a, **k):
        calls.append(a)
        return prune_checkpoint(*a, **k)
    progressive_prune(dense, str(tmp_path), [0.5, 0.75], prune=counting_prune,
                      train_between=train_between, **kw)
    assert calls == []


def test_threshold_is_refused(dense, tmp_path):
    with pytest.raises(ProgressiveError, match="not a threshold"):
        progressive_prune(dense, str(tmp_path), [0.5], prune=prune_checkpoint,
                          train_between=lambda p, o: p, threshold=0.1)


def test_a_real_training_run_between_cuts(dense, tiny_data, tmp_path):
    path = dense
    between = trainer_between(os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "base.yml"),
                              tiny_train_overrides(tiny_data, tmp_path / "unused", epochs=1, **{"eval.interval": 5}),
                              epochs=1)
    rep = progressive_prune(path, str(tmp_path / "prog"), [0.5, 0.75], prune=prune_checkpoint,
                            train_between=between, img_size=64, visualdl=False, plots=False, log=lambda *_: None)
    step1_train = rep["progressive"][0]["trained"]
    assert os.path.isfile(step1_train) and os.sep + "train" + os.sep in step1_train
    assert rep["channels"]["removed_share"] == pytest.approx(0.75, abs=0.02)
    load_model(rep["paths"]["weights"])


def test_prune_tool_steps(dense, tiny_data, tmp_path):
    """tools/prune.py --steps: the same cut through the command line, its flags as overrides."""
    from conftest import load_tool
    tool = load_tool("prune")
    opts = tiny_train_overrides(tiny_data, tmp_path / "unused", **{"eval.interval": 5, "distill.enabled": "false"})
    opts = [o for o in opts if not o.startswith(("output_dir=", "epochs="))]
    out = tmp_path / "tool"
    rc = tool.main(["--weights", dense, "--output", str(out), "--steps", "0.5", "0.75", "--step-epochs", "1",
                    "--min-channels", "1", "-o", *opts])
    assert rc == 0
    with open(out / "prune_report.json") as f:
        rep = json.load(f)
    assert [e["share"] for e in rep["progressive"]] == [0.5, 0.75]
    assert os.path.isfile(out / "step1" / "train" / "last.pdparams")
    assert not os.path.exists(out / "step2" / "train")            # no training after the last cut
    # progressive and a threshold do not mix: a usage error naming both keys
    assert tool.main(["--weights", dense, "--output", str(out), "--steps", "0.5", "--threshold", "0.1"]) == 2

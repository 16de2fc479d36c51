"""The prune stage end to end: files, report figures against independent counts, the
checkpoint standing alone, VisualDL, sensitivity, and the command line."""
import json
import os

import ppyolo_slim  # noqa: F401  (import order: before paddle)
import numpy as np
import paddle
import paddle.nn as nn
import pytest
import yaml

from ppyolo_slim import load_model
from ppyolo_slim.model import ModelMeta, build_model, load_weights, save_weights
from ppyolo_slim.model.yolo import count_parameters
from ppyolo_slim.slim.sensitivity import sensitivity
from ppyolo_slim.slim.workflow import prune_checkpoint

S = 64
# 5 classes: the generated shapes set's, so the command-line test can evaluate on it
META = ModelMeta(nc=5, names=[f"c{i}" for i in range(5)], depth_multiple=0.1, width_multiple=0.125,
                 img_size=S)


def sparse_like(seed=0):
    """A model whose BNs look sparse-trained: a third of the channels near zero."""
    paddle.seed(seed)
    m = build_model(META)
    rng = np.random.RandomState(seed)
    for _, l in m.named_sublayers():
        if isinstance(l, nn.BatchNorm2D):
            c = l.weight.shape[0]
            g = 0.2 + rng.rand(c)
            g[rng.rand(c) < 0.35] = 1e-4 * rng.rand()
            l.weight.set_value(g.astype("float32"))
            l.bias.set_value((0.1 * rng.randn(c)).astype("float32"))
    m.eval()
    return m


def closeness(reference_model, x):
    """A cheap stand-in for mAP: 1 for the reference outputs, falling as outputs drift."""
    with paddle.no_grad():
        ref = reference_model(x).numpy()

    def score(model):
        with paddle.no_grad():
            y = model(x).numpy()
        return 1.0 / (1.0 + float(np.abs(y[..., 4:] - ref[..., 4:]).mean()) * 10)
    return score


@pytest.fixture(scope="module")
def pruned_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prune")
    run = tmp / "sparse"
    model = sparse_like()
    weights = str(run / "best.pdparams")
    save_weights(weights, model.state_dict(), META)
    from visualdl import LogWriter
    with LogWriter(logdir=str(run / "vdl")) as w:      # the sparse run's dashboard
        w.add_scalar("train/loss", 1.0, 0)
    x = paddle.to_tensor(np.random.RandomState(1).rand(2, 3, S, S).astype("float32"))
    score = closeness(model, x)
    evaluate = lambda m: {"map50_95": score(m), "map50": score(m)}   # noqa: E731
    rep = prune_checkpoint(weights, str(tmp / "out"), ratio=0.5, min_channels=2, round_to=1,
                           img_size=S, flops_sizes=(S,), evaluate=evaluate, sensitivity_eval=score,
                           sensitivity_layers=["model.9.cv1", "model.2.cv2"],
                           sensitivity_metric="closeness", log=lambda s: None)
    return dict(tmp=tmp, run=run, weights=weights, model=sparse_like(), rep=rep, x=x)


@pytest.mark.compat
def test_outputs_and_standalone_checkpoint(pruned_run):
    rep, out = pruned_run["rep"], pruned_run["tmp"] / "out"
    for f in ("pruned.pdparams", "prune_report.json", "gamma_hist.png", "channels_per_layer.png",
              "sensitivity.json", "sensitivity.png"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    on_disk = json.loads((out / "prune_report.json").read_text())
    assert on_disk["params"] == rep["params"] and on_disk["threshold"] == rep["threshold"]
    state, meta = load_weights(str(out / "pruned.pdparams"))
    mb = meta["made_by"]
    assert mb["stage"] == "prune" and mb["ratio"] == 0.5 and mb["threshold"] == rep["threshold"]
    assert mb["source"] == os.path.abspath(pruned_run["weights"])
    pruned = load_model(str(out / "pruned.pdparams"))      # narrower model purely from shapes
    rows = rep["layers"]
    assert sum(r["out_after"] for r in rows) < 0.7 * sum(r["out_before"] for r in rows)
    detect = [r for r in rows if r["name"].startswith("model.24.")]
    assert len(detect) == 3 and all(r["out_after"] == r["out_before"] == 3 * (5 + 5) for r in detect)
    y = pruned(pruned_run["x"])
    assert y.shape == [2, 3 * (64 + 16 + 4), 10]
    # per-layer rows say what the file holds
    for r in rep["layers"]:
        key = f"{r['name']}.conv.weight" if not r["name"].startswith("model.24.") else f"{r['name']}.weight"
        assert list(state[key].shape[:2]) == [r["out_after"], r["in_after"]], r


def gflops_by_hand(m):
    """2 x MACs from the layer list: each conv's resolution follows the strides and resizes."""
    res, macs = {-2: S}, 0
    for r in m.resolved:
        rin = res[r.spec.src[0]]
        rout = {"Conv": rin // r.spec.stride, "Upsample": rin * r.spec.scale}.get(r.spec.block, rin)
        for cs in r.convs.values():
            macs += (rin // cs.s) ** 2 * cs.c2 * cs.c1 * cs.k * cs.k
        for s, (ci, co) in zip(r.spec.src, r.detect):
            macs += res[s] ** 2 * co * (ci + 1)          # 1x1 with bias
        res[r.spec.index] = rout
    return 2 * macs / 1e9


def test_report_figures_against_independent_counts(pruned_run):
    rep, before = pruned_run["rep"], pruned_run["model"]
    after = load_model(str(pruned_run["tmp"] / "out" / "pruned.pdparams"))
    assert rep["params"]["before"] == count_parameters(before)
    assert rep["params"]["after"] == count_parameters(after)
    for m, key in ((before, "gflops_before"), (after, "gflops_after")):
        assert rep["flops"][key][str(S)] == pytest.approx(gflops_by_hand(m), rel=1e-9)
    assert rep["flops"]["gflops_after"][str(S)] < rep["flops"]["gflops_before"][str(S)]
    ch = rep["channels"]
    assert 0.3 < ch["removed_share"] < 0.6          # ratio 0.5 with floors of 2
    assert rep["metrics"]["before"]["map50_95"] == pytest.approx(1.0)
    assert rep["metrics"]["after_prune"]["map50_95"] < 1.0
    assert rep["compensation"]["enabled"] is True


def test_visualdl_summary_next_to_the_sparse_run(pruned_run):
    from visualdl import LogReader
    run = pruned_run["run"] / "vdl"
    assert pruned_run["rep"]["paths"]["visualdl"] == str(run / "prune")
    logs = [f for f in os.listdir(run / "prune") if "vdlrecords" in f]
    assert len(logs) == 1
    with LogReader(file_path=str(run / "prune" / logs[0])) as r:
        vals = r.get_data("scalar", "prune/params_after")
        assert [v.value for v in vals] == [pytest.approx(pruned_run["rep"]["params"]["after"])]
        assert "prune/summary" in r.get_tags()["text"]
    # the training run's own folder still holds only its own log (VisualDL shows the newest
    # file of a folder, so a second one there would hide the training curves)
    assert len([f for f in os.listdir(run) if "vdlrecords" in f]) == 1


def test_sensitivity_written_and_weights_restored(pruned_run):
    sens = json.loads((pruned_run["tmp"] / "out" / "sensitivity.json").read_text())
    assert set(sens["layers"]) == {"model.9.cv1", "model.2.cv2"}
    assert sens["baseline"] == pytest.approx(1.0) and sens["metric"] == "closeness"
    for v in sens["layers"].values():
        assert list(v["loss"]) == [f"{r / 10:.1f}" for r in range(1, 10)]
        assert v["loss"]["0.9"] > v["loss"]["0.1"] >= 0.0

    model = sparse_like()
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    score = closeness(model, pruned_run["x"])
    out = sensitivity(model, score, trace_size=S, layers=["model.9.cv1"])
    assert list(out["layers"]) == ["model.9.cv1"] and out["evaluations"] == 10
    after = model.state_dict()
    assert set(after) == set(before)                 # PaddleSlim's backup buffers are gone
    for k, v in before.items():
        assert np.array_equal(after[k].numpy(), v), k


def test_tool_command_line(pruned_run, tmp_path, capsys, monkeypatch):
    from ppyolo_slim.data import generate_shapes
    import tools.prune as tool
    data = generate_shapes(str(tmp_path / "shapes"), n_train=2, n_val=3, img_size=S, verbose=False)
    cfg = tmp_path / "prune.yml"
    cfg.write_text(yaml.safe_dump({"data": data, "img_size": S, "eval": {"batch_size": 2},
                                   "prune": {"ratio": 0.5, "min_channels": 2}}))
    out = tmp_path / "out"
    rc = tool.main(["-c", str(cfg), "--weights", pruned_run["weights"], "--output", str(out),
                    "--eval", "-o", "prune.round_to=4"])
    assert rc == 0, capsys.readouterr().err
    rep = json.loads((out / "prune_report.json").read_text())
    assert rep["settings"]["round_to"] == 4 and rep["settings"]["min_channels"] == 2
    assert all(g["kept"] % 4 == 0 or g["kept"] == g["channels"] for g in rep["groups"])
    assert "map50_95" in rep["metrics"]["before"] and "map50_95" in rep["metrics"]["after_prune"]
    assert "parameters" in capsys.readouterr().out

    assert tool.main(["-c", str(cfg), "--weights", pruned_run["weights"], "--ratio", "0.5",
                      "--threshold", "0.1"]) == 2
    assert "not both" in capsys.readouterr().err

    # no arguments, nothing trained yet: say what to run first
    monkeypatch.chdir(tmp_path)
    assert tool.main([]) == 2
    err = capsys.readouterr().err
    assert "output/sparse/best.pdparams: no such weights file" in err
    assert "python tools/train.py -c configs/sparse.yml" in err and "Traceback" not in err
    # ... unless the pipeline's sparse model is there: name it
    pipe = tmp_path / "output" / "pipeline" / "sparse"
    pipe.mkdir(parents=True)
    (pipe / "best.pdparams").write_bytes(open(pruned_run["weights"], "rb").read())
    assert tool.main([]) == 2
    err = capsys.readouterr().err
    assert "output/sparse/best.pdparams: no such weights file" in err
    assert "python tools/prune.py --weights output/pipeline/sparse/best.pdparams" in err
    # a file of another kind is named before any data is read
    (tmp_path / "model.onnx").write_bytes(b"\x08\x07\x12\x00")
    assert tool.main(["--weights", "model.onnx", "--eval"]) == 2
    assert "an ONNX model, not .pdparams weights" in capsys.readouterr().err


def test_shipped_config_loads():
    from ppyolo_slim.config import DEFAULTS, load_config
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cfg = load_config(os.path.join(root, "configs", "prune.yml"))
    assert cfg["weights"] == "output/sparse/best.pdparams" and cfg["output_dir"] == "output/prune"
    assert cfg["prune"] == DEFAULTS["prune"]          # the file states the defaults explicitly


@pytest.mark.parametrize("tool,required", [("prune", []), ("eval", ["--weights", "w.pdparams"]),
                                           ("pipeline", [])])
def test_o_takes_repeated_flags_and_paddledetection_lists(tool, required):
    from conftest import load_tool
    parse = load_tool(tool).parse_args
    for form in (["-o", "a=1", "-o", "b=2"], ["-o", "a=1", "b=2"], ["-o", "a=1", "b=2", "-o", "c=3"]):
        want = [x for x in form if x != "-o"]
        assert parse(required + form + ["--output", "o"]).opt == want, form
    assert parse(required).opt == []


def test_sensitivity_layers_match_whole_names_not_prefixes():
    from ppyolo_slim.slim.pruner import ChannelPruner
    from ppyolo_slim.slim.sensitivity import select_groups
    groups = ChannelPruner(sparse_like(), trace_size=S).groups
    labels = [g.label.split(" ")[0] for g in groups]
    assert any(lb.startswith(("model.20.", "model.23.")) for lb in labels)   # what a prefix would catch
    picked = [g.label.split(" ")[0] for g in select_groups(groups, ["model.2", "model.9"])]
    assert picked and all(lb.startswith(("model.2.", "model.9.")) for lb in picked), picked
    assert set(picked) == {lb for lb in labels if lb.startswith(("model.2.", "model.9."))}
    assert [g.label for g in select_groups(groups, ["model.9.cv1"])] == ["model.9.cv1"]
    with pytest.raises(ValueError, match="model.99"):
        select_groups(groups, ["model.99"])


def test_gamma_histogram_log_panel_leaves_exact_zeros_out(tmp_path, monkeypatch):
    """The gradual method's exact zeros have no log10: they are counted in the axis label, not
    drawn as one tall bar at the smallest nonzero |gamma| (where they read as real values)."""
    import numpy as np
    from ppyolo_slim.slim import report
    figs = []
    monkeypatch.setattr(report, "_save_fig", lambda fig, path: figs.append(fig))
    scores = np.concatenate([np.zeros(4000), np.linspace(0.7, 1.2, 500)])
    report.plot_gamma_histogram(scores, 0.69, str(tmp_path / "g.png"))
    log_ax = figs[0].axes[1]
    assert sum(p.get_height() for p in log_ax.patches) == 500
    assert "4,000 exact zeros not shown" in log_ax.get_xlabel()

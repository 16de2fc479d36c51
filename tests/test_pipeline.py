"""tools/pipeline.py at a tiny scale: every stage runs, the summary says what it should."""
import json
import os

import pytest
import yaml

from conftest import tiny_train_overrides
from ppyolo_slim.pipeline import STAGES, run_pipeline


def test_tiny_pipeline_end_to_end_and_rerun_skips(tiny_data, tmp_path):
    out = tmp_path / "pipe"
    over = [o for o in tiny_train_overrides(tiny_data, out / "unused", epochs=1, **{"log.images": 0})
            if not o.startswith("output_dir=")] + ["pipeline.finetune_epochs=1", "prune.min_channels=4"]
    state = run_pipeline(str(out), over, progress=False, log=lambda m: None)
    assert list(state["done"]) == list(STAGES)
    summary = json.loads((out / "summary.json").read_text())
    rows = summary["models"]
    assert list(rows) == ["dense", "sparse", "pruned", "finetuned"]
    # the shipped checkpoint knows these classes: it is the dense model, and the fine-tune's teacher
    assert state["done"]["dense"]["trained"] is False
    assert rows["finetuned"]["map_retention_vs_dense"] == pytest.approx(
        rows["finetuned"]["map50_95"] / max(rows["dense"]["map50_95"], 1e-12))
    assert rows["pruned"]["params"] == rows["finetuned"]["params"] < rows["sparse"]["params"] / 2
    assert rows["pruned"]["flops_ratio_vs_sparse"] > 2
    for r in rows.values():
        assert 0.0 <= r["map50_95"] <= r["map50"] <= 1.0 and r["ort_cpu_median_ms"] > 0
    deploy = state["done"]["deploy"]
    if not deploy["tensorrt"]:   # no TensorRT here: the hand-built graph ran on the CPU instead
        assert deploy["sparse"]["passed"] and deploy["finetuned"]["passed"]
    md = (out / "summary.md").read_text()
    assert "| fine-tuned |" in md and "| pruned (" in md and "## What you are looking at" in md
    assert summary["deploy"] == deploy and ("**passed**" in md or deploy["tensorrt"])
    assert set(summary) >= {"img_size", "data", "models", "latency_note"}
    assert (out / "map_vs_flops.png").stat().st_size > 1000
    # a rerun finds everything done and does no work
    again = run_pipeline(str(out), over, progress=False, log=lambda m: None)
    assert again["done"] == state["done"]


def test_stage_configs_are_recorded_and_a_rerun_with_others_is_refused(tmp_path, monkeypatch):
    from ppyolo_slim.pipeline import DEFAULT_CONFIGS, Pipeline
    monkeypatch.chdir(tmp_path)                 # configs/*.yml are found in the repo from here too
    out = tmp_path / "pipe"

    def pipe(**configs):
        return Pipeline(str(out), ["epochs=3"], configs=configs, progress=False, log=lambda m: None)

    first = pipe(sparse="configs/full.yml")
    assert first.scale == 1.0
    out.mkdir()
    first._save_state()
    state = json.loads((out / "pipeline_state.json").read_text())
    assert state["configs"] == {**DEFAULT_CONFIGS, "sparse": "configs/full.yml"}
    assert state["overrides"] == ["epochs=3"]
    pipe(sparse="./configs/full.yml")            # the same files: continues
    for other in ({}, {"sparse": "configs/full.yml", "finetune": "configs/base.yml"}):
        with pytest.raises(ValueError, match=r"pipeline_state\.json: this folder holds a run with other "
                                             r"settings \(configs .* in the run, .* now\); use --fresh"):
            pipe(**other)
    # a state written before configs were recorded ran the default configs
    del state["configs"]
    (out / "pipeline_state.json").write_text(json.dumps(state))
    pipe()
    with pytest.raises(ValueError, match="other settings"):
        pipe(sparse="configs/full.yml")


def test_pipeline_tool_passes_the_stage_configs(monkeypatch):
    import ppyolo_slim.pipeline
    from conftest import load_tool
    seen = {}

    class Pipeline:
        def __init__(self, *args, **kw):
            seen.update(kw, args=args)

        def run(self, until):
            return {"done": {}}
    monkeypatch.setattr(ppyolo_slim.pipeline, "Pipeline", Pipeline)
    assert load_tool("pipeline").main(["--sparse-config", "configs/full.yml", "-o", "a=1", "b=2"]) == 0
    assert seen["configs"] == {"sparse": "configs/full.yml", "finetune": "configs/finetune.yml"}
    assert seen["args"] == ("output/pipeline", ["a=1", "b=2"])


def test_data_of_other_classes_trains_the_dense_model_first(tiny_data, tmp_path):
    """With data whose classes the shipped checkpoint does not know, the dense stage trains the
    unpruned model (from the checkpoint's body, a new head) and that model teaches the fine-tune."""
    import shutil
    import yaml
    from ppyolo_slim.pipeline import Pipeline
    other = tmp_path / "other"
    shutil.copytree(os.path.dirname(tiny_data), other)
    spec = yaml.safe_load(open(tiny_data))
    spec["path"] = str(other)
    spec["names"] = ["bolt", "nut", "gear", "cog", "pin"]
    (other / "data.yaml").write_text(yaml.safe_dump(spec))
    out = tmp_path / "pipe"
    over = [o for o in tiny_train_overrides(str(other / "data.yaml"), out / "unused", epochs=1,
                                            **{"log.images": 0}) if not o.startswith("output_dir=")]
    over += ["pipeline.finetune_epochs=1", "pipeline.dense_epochs=1", "prune.min_channels=4"]
    p = Pipeline(str(out), over, progress=False, log=lambda m: None)
    p.run(until="finetune")
    dense = p.state["done"]["dense"]
    assert dense["trained"] is True and dense["weights"].startswith(str(out / "dense"))
    assert dense["init"].endswith("yolov5n_shapes_160.pdparams")   # summary.md names it
    from ppyolo_slim.model import read_weights
    _, meta = read_weights(p.state["done"]["finetune"]["weights"])
    assert meta.names == spec["names"]
    saved = yaml.safe_load((out / "finetune" / "config.yml").read_text())
    assert saved["distill"]["enabled"] and saved["distill"]["teacher"] == dense["weights"]


def test_checking_the_initial_weights_classes_prints_no_second_data_summary(tiny_data, capsys):
    """The dense stage asks whether the initial weights know the data's classes; the data
    summary (with its per-file list) is then printed by the trainer alone, not twice."""
    from ppyolo_slim.pipeline import _trained_on
    from ppyolo_slim.config import load_config
    assert _trained_on(load_config("configs/sparse.yml")["weights"], tiny_data) is True   # shapes
    assert "data " not in capsys.readouterr().err


def test_each_finished_stage_logs_its_time_and_best_map():
    from ppyolo_slim.pipeline import _stage_done
    line = _stage_done("dense", {"seconds": 1002.0, "best_map50_95": 0.0951, "epochs": 30, "weights": "w"})
    assert line == "[pipeline] dense: done in 16.7 min, best mAP@0.5:0.95 0.0951 (30 epochs)"
    assert _stage_done("export", {"seconds": 13.5}) == "[pipeline] export: done in 0.2 min"


def test_progressive_prune_stage(tiny_data, tmp_path):
    """-o prune.steps=[...]: the prune stage cuts in steps with a fine-tune between them, taught
    by the dense model, and the fine-tune stage starts from the last cut."""
    from ppyolo_slim.pipeline import Pipeline
    out = tmp_path / "pipe"
    over = [o for o in tiny_train_overrides(tiny_data, out / "unused", epochs=1, **{"log.images": 0})
            if not o.startswith("output_dir=")]
    over += ["pipeline.finetune_epochs=1", "prune.min_channels=4", "prune.steps=[0.5,0.875]", "prune.step_epochs=1"]
    p = Pipeline(str(out), over, progress=False, log=lambda m: None)
    p.run(until="prune")
    rep = json.loads((out / "prune" / "prune_report.json").read_text())
    assert [e["share"] for e in rep["progressive"]] == [0.5, 0.875]
    assert p.state["done"]["prune"]["weights"] == str(out / "prune" / "pruned.pdparams")
    saved = yaml.safe_load((out / "prune" / "step1" / "train" / "config.yml").read_text())
    assert saved["distill"]["teacher"] == p.state["done"]["dense"]["weights"] and saved["epochs"] == 1


def test_a_missing_paddleslim_is_said_before_any_training(tmp_path, monkeypatch, capsys):
    import sys
    from conftest import load_tool
    monkeypatch.setitem(sys.modules, "paddleslim", None)    # import paddleslim now fails
    monkeypatch.delitem(sys.modules, "ppyolo_slim.slim.pruner", raising=False)   # imported anew
    out = tmp_path / "pipe"
    assert load_tool("pipeline").main(["--output", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "PaddleSlim is not installed" in err and "pip install --no-deps paddleslim==2.6.0" in err
    assert not (out / "sparse").exists()        # nothing trained, nothing written
    from conftest import ROOT
    weights = os.path.join(ROOT, "weights", "yolov5n_shapes_160.pdparams")
    assert load_tool("prune").main(["--weights", weights, "--output", str(tmp_path / "prune")]) == 2
    assert "pip install --no-deps paddleslim==2.6.0" in capsys.readouterr().err

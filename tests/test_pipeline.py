"""tools/pipeline.py at a tiny scale: every stage runs, the summary says what it should."""
import json

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
    assert list(rows) == ["sparse", "pruned", "finetuned"]
    assert rows["pruned"]["params"] == rows["finetuned"]["params"] < rows["sparse"]["params"] / 2
    assert rows["pruned"]["flops_ratio_vs_sparse"] > 2
    for r in rows.values():
        assert 0.0 <= r["map50_95"] <= r["map50"] <= 1.0 and r["ort_cpu_median_ms"] > 0
    deploy = state["done"]["deploy"]
    if not deploy["tensorrt"]:   # no TensorRT here: the hand-built graph ran on the CPU instead
        assert deploy["sparse"]["passed"] and deploy["finetuned"]["passed"]
    assert "| finetuned |" in (out / "summary.md").read_text()
    assert (out / "map_vs_flops.png").stat().st_size > 1000
    # a rerun finds everything done and does no work
    again = run_pipeline(str(out), over, progress=False, log=lambda m: None)
    assert again["done"] == state["done"]

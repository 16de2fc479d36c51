"""summary.md and map_vs_flops.png, from a result of known figures (the pipeline test runs the
real thing): labels as in the README, the deploy verdict, a plot whose text is readable."""
import pytest

from ppyolo_slim import summary as S

ROWS = {"sparse": dict(params=1770682, gflops=0.259, gflops_640=4.15, map50_95=0.0303, map50=0.0832,
                       pdparams_mb=6.81, onnx_mb=6.84, ort_cpu_median_ms=4.89, ort_cpu_p90_ms=12.23,
                       speedup_vs_sparse=1.0, flops_ratio_vs_sparse=1.0),
        "pruned": dict(params=26506, gflops=0.023, gflops_640=0.38, map50_95=0.0005, map50=0.0021,
                       pdparams_mb=0.12, onnx_mb=0.15, ort_cpu_median_ms=1.27, ort_cpu_p90_ms=1.80,
                       speedup_vs_sparse=3.86, flops_ratio_vs_sparse=11.03, channels_removed_share=0.875),
        "finetuned": dict(params=26506, gflops=0.023, gflops_640=0.38, map50_95=0.0064, map50=0.0291,
                          pdparams_mb=0.12, onnx_mb=0.15, ort_cpu_median_ms=1.20, ort_cpu_p90_ms=1.79,
                          speedup_vs_sparse=4.07, flops_ratio_vs_sparse=11.03)}
DEPLOY = {"tensorrt": False, "why": "TensorRT is not installed",
          "sparse": {"cpu_check_max_abs_diff": 3.1e-6, "passed": True, "layers": 210},
          "finetuned": {"cpu_check_max_abs_diff": 1.2e-6, "passed": True, "layers": 210}}


def result(deploy=DEPLOY):
    rows = {k: dict(v) for k, v in ROWS.items()}
    for k, r in rows.items():
        r["label"] = S.label(k, rows)
    return {"img_size": 160, "data": "dataset/shapes/data.yaml", "models": rows, "val_images": 100,
            "machine": {"cpu": "Test CPU", "cores": 2, "load_1min": 3.5, "date": "2026-11-23 10:00"},
            "deploy": deploy, "stage_seconds": {"sparse": 570.0, "prune": 24.0}}


def test_report_rows_carry_the_readmes_labels_and_the_deploy_verdict():
    md = S.format_report(result())
    assert "| sparse | 1,770,682 |" in md and "| pruned (8x fewer channels) | 26,506 |" in md
    assert "| fine-tuned | 26,506 | 0.023 | 0.38 | 0.0064 |" in md and "| finetuned |" not in md
    assert "## What you are looking at" in md and "Test CPU, 2 cores, load 3.5, 2026-11-23" in md
    assert "depend on the machine" in md
    assert "TensorRT is not installed" in md and "**passed**" in md
    assert "- fine-tuned: passed, max |difference| 1.2e-06 over 210 layers" in md
    failed = dict(DEPLOY, finetuned={"cpu_check_max_abs_diff": 0.5, "passed": False, "layers": 210})
    assert "**FAILED**" in S.format_report(result(failed))
    assert "## TensorRT" not in S.format_report(result(None))


def test_a_new_model_is_one_more_entry():
    r = result()
    r["models"]["int8"] = dict(ROWS["finetuned"], map50_95=0.006)
    assert "| int8 | 26,506 |" in S.format_markdown(r)


def _texts_overlap(fig, texts):
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in texts if t.get_text() and t.get_visible()]
    return [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:] if a.overlaps(b)]


@pytest.mark.parametrize("gflops", [(0.259, 0.023, 0.023), (4.15, 1.37, 0.37), (0.02, 0.025, 0.03)])
def test_plot_ticks_and_labels_do_not_collide_or_leave_the_figure(gflops, tmp_path, monkeypatch):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figs = []
    monkeypatch.setattr(plt, "close", lambda fig: figs.append(fig))     # keep it to inspect
    rows = {k: dict(v, gflops=g, label=S.label(k, ROWS)) for (k, v), g in zip(ROWS.items(), gflops)}
    path = tmp_path / "map_vs_flops.png"
    S.plot_map_vs_flops(rows, str(path), size=160, data="shapes/data.yaml")
    assert path.stat().st_size > 5000
    (fig,) = figs
    ax = fig.axes[0]
    ticks = [t for t in ax.get_xticklabels() if t.get_text()]
    assert len(ticks) >= 2 and all("10^" not in t.get_text() and "times" not in t.get_text() for t in ticks)
    assert not _texts_overlap(fig, ticks)
    labels = ax.texts
    assert [t.get_text() for t in labels] == ["sparse", "pruned (8x fewer channels)", "fine-tuned"]
    assert not _texts_overlap(fig, labels)
    frame = ax.get_window_extent(fig.canvas.get_renderer())
    for t in labels:                                   # the 'sparse' label was cut at the right edge
        b = t.get_window_extent(fig.canvas.get_renderer())
        assert frame.x0 <= b.x0 and b.x1 <= frame.x1 and frame.y0 <= b.y0 and b.y1 <= frame.y1, t.get_text()
    assert ax.get_title().startswith("Accuracy against compute")


def test_report_says_how_the_dense_model_came_about(tmp_path):
    """Other data: the dense row is a model the pipeline trained; summary.md says so, and says
    when it was still improving at its last epoch (mAP kept is then against a weak reference)."""
    from ppyolo_slim.model import ModelMeta, build_model, save_weights
    w = str(tmp_path / "best.pdparams")
    meta = ModelMeta(nc=2, names=["a", "b"], made_by={"stage": "train", "epoch": 30, "epochs": 30})
    save_weights(w, build_model(meta).state_dict(), meta)
    d = S._dense_origin({"trained": True, "epochs": 30, "init": "weights/x.pdparams"}, w)
    assert d["best_epoch"] == 30
    md = S.format_report(dict(result(), dense_model=d))
    assert "trained in this run" in md and "30 epochs from weights/x.pdparams" in md
    assert "still improving" in md and "pipeline.dense_epochs" in md
    d = S._dense_origin({"trained": True, "epochs": 40, "init": None}, w)
    md = S.format_report(dict(result(), dense_model=d))
    assert "40 epochs from random init" in md and "epoch 30 of 40." in md and "still improving" not in md
    given = S.format_report(dict(result(), dense_model=S._dense_origin({"trained": False}, w)))
    assert "trained on this data's classes before this run" in given

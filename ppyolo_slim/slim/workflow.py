"""The prune stage end to end: checkpoint in, pruned checkpoint + report out.

``tools/prune.py`` parses arguments and calls ``prune_checkpoint``; tests call it too.
"""
from __future__ import annotations

import os
import time
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence

import numpy as np
import paddle

from ..model import ModelMeta, model_from_weights, save_weights
from ..model.flops import gflops
from .pruner import ChannelPruner, PruneError, prune_model, prune_settings
from .selection import PruneConfig
from .report import (build_report, find_visualdl_logdir, format_table, plot_gamma_histogram,
                     plot_layers, write_json, write_visualdl)


def _relative_difference(a, b, img_size: int = 64) -> float:
    """Largest output difference of two models, relative to the output scale (the same
    weights give 0 on CPU; GPU kernels may differ in the last bits)."""
    x = paddle.to_tensor(np.random.RandomState(0).rand(1, 3, img_size, img_size).astype("float32"))
    with paddle.no_grad():
        a.eval(), b.eval()
        ya, yb = a(x).numpy(), b(x).numpy()
    return float(np.abs(ya - yb).max() / max(1.0, float(np.abs(ya).max())))


def prune_checkpoint(weights: str, output_dir: str, settings: Optional[PruneConfig] = None, *,
                     img_size: int = 640, flops_sizes: Optional[Sequence[int]] = None,
                     evaluate: Optional[Callable[[Any], Mapping[str, Any]]] = None,
                     sensitivity_eval: Optional[Callable[[Any], float]] = None,
                     sensitivity_layers: Optional[Iterable[str]] = None,
                     sensitivity_metric: str = "map50_95",
                     trace_size: int = 64, visualdl: bool = True, plots: bool = True,
                     log: Callable[[str], None] = print, **changes) -> Dict[str, Any]:
    """Prune ``weights`` into ``output_dir``/pruned.pdparams with prune_report.json and plots.

    ``settings``: the ``prune:`` section (``PruneConfig.of(cfg)``; default its defaults), with
    ``changes`` to its fields (``ratio=0.5``). ``evaluate(model) -> metrics dict`` (optional)
    is run before and right after pruning; ``sensitivity_eval(model) -> float`` (optional)
    runs PaddleSlim's sensitivity analysis on the unpruned model first. Returns the report
    dict (with ``paths``).
    """
    cut = prune_settings(settings, **changes)
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"{weights}: no such weights file")
    t0 = time.time()
    model, meta = model_from_weights(weights)
    model.eval()
    sizes = sorted({int(s) for s in (flops_sizes or (img_size, 640))})
    flops_before = {s: gflops(model, s) for s in sizes}
    os.makedirs(output_dir, exist_ok=True)
    paths: Dict[str, str] = {}

    metrics_before = dict(evaluate(model)) if evaluate else None
    pruner = ChannelPruner(model, trace_size=trace_size, criterion=cut.criterion)   # the graph analysis
    if sensitivity_eval is not None:
        from .sensitivity import sensitivity, write_sensitivity
        log("sensitivity analysis: 9 prune ratios per layer, one evaluation each ...")
        sens = sensitivity(model, sensitivity_eval, layers=sensitivity_layers, pruner=pruner,
                           metric=sensitivity_metric, progress=log)
        paths.update({f"sensitivity_{k}": v for k, v in write_sensitivity(sens, output_dir).items()})

    result = prune_model(model, meta, cut, trace_size=trace_size, pruner=pruner)
    pruned = result.model
    flops_after = {s: gflops(pruned, s) for s in sizes}
    metrics_after = dict(evaluate(pruned)) if evaluate else None

    settings_used = {**cut.to_dict(), "ratio": cut.requested_ratio}
    out_meta = ModelMeta.from_dict(meta.to_dict())
    out_meta.made_by = {"stage": "prune", "tool": "tools/prune.py", "source": os.path.abspath(weights),
                        "ratio": cut.requested_ratio, "threshold": result.threshold,
                        "removed_share": result.removed_share, "min_channels": cut.min_channels,
                        "round_to": cut.round_to, "compensate": cut.compensate, "criterion": cut.criterion,
                        "parent": meta.made_by or None}
    paths["weights"] = os.path.join(output_dir, "pruned.pdparams")
    save_weights(paths["weights"], result.state, out_meta)

    # the file must stand alone: rebuild from its shapes and compare with the pruned model
    from .. import load_model
    reloaded = load_model(paths["weights"])
    diff = _relative_difference(reloaded, pruned)
    if diff > 1e-5:
        raise PruneError(f"{paths['weights']}: reloaded model differs from the pruned one (max {diff})")

    rep = build_report(result, source=os.path.abspath(weights), settings=settings_used,
                       flops_before=flops_before, flops_after=flops_after,
                       metrics_before=metrics_before, metrics_after=metrics_after)
    rep["seconds"] = round(time.time() - t0, 1)
    if plots:
        paths["gamma_plot"] = os.path.join(output_dir, "gamma_hist.png")
        what = "|gamma|" if cut.criterion == "bn_scale" else f"{cut.criterion} score"
        plot_gamma_histogram(result.scores, result.threshold, paths["gamma_plot"],
                             title=f"{what} of prunable channels ({result.removed_share:.1%} removed)")
        paths["layers_plot"] = os.path.join(output_dir, "channels_per_layer.png")
        plot_layers(rep, paths["layers_plot"])
    if visualdl:
        logdir = find_visualdl_logdir(weights)
        if logdir:
            imgs = [paths[k] for k in ("gamma_plot", "layers_plot") if k in paths]
            paths["visualdl"] = write_visualdl(rep, logdir, result.scores, imgs)
    paths["report"] = os.path.join(output_dir, "prune_report.json")
    rep["paths"] = paths
    write_json(paths["report"], rep)
    log(format_table(rep))
    log(f"wrote {paths['weights']} and {paths['report']}"
        + (f"; VisualDL summary in {paths['visualdl']}" if "visualdl" in paths else ""))
    return rep


def val_evaluator(cfg, n_images: Optional[int] = None):
    """``model -> metrics`` on the first ``n_images`` of the config's val set, with the
    project's evaluator (pycocotools). Errors clearly if the data/eval modules are absent."""
    try:
        from ..data import load_data
        from ..engine.evaluate import EvalConfig, evaluate_model
    except ImportError as e:
        raise PruneError(f"evaluation needs ppyolo_slim.data and ppyolo_slim.engine.evaluate "
                           f"({e}); run without --eval/--sensitivity") from None
    spec = load_data(cfg["data"])
    records = list(spec.val)[:n_images] if n_images else list(spec.val)
    if not records:
        raise PruneError(f"data {cfg['data']!r} has no val images to evaluate on")
    ev = EvalConfig.of(cfg)

    def run(model) -> Dict[str, Any]:
        model.eval()
        nc = getattr(model, "nc", None)
        if nc is not None and nc != len(spec.names):
            raise PruneError(f"the model has {nc} classes but data {cfg['data']!r} has "
                             f"{len(spec.names)} ({', '.join(spec.names[:5])}...); evaluate on "
                             f"the data it was trained on (-o data=...)")

        def predict(images):
            with paddle.no_grad():
                return model(paddle.to_tensor(np.ascontiguousarray(images, dtype=np.float32))).numpy()

        metrics, _ = evaluate_model(predict, records, spec.names, cfg["img_size"], ev.batch_size,
                                    conf_thres=ev.conf_thres, iou_thres=ev.iou_thres, max_det=ev.max_det)
        return metrics
    return run

"""Progressive pruning: reach the cut in steps (for example 2x -> 4x -> 8x), with a short
training run after each intermediate cut so the next ranking is made by a network that has
learnt to do without what the last one removed.

Each step's share is of the ORIGINAL model's prunable channels (0.875 = 8x fewer), so the
steps mean the same as ``prune.ratio``. The step's ratio for the already-pruned model is
``1 - C0 * (1 - share) / C``, with C0 the original and C the current channel count.

Folders: ``DIR/step1`` (pruned.pdparams, prune_report.json, train/), ..., and the last
cut's ``pruned.pdparams`` + ``prune_report.json`` in DIR itself (what a one-shot
tools/prune.py writes, so fine-tuning after it is the same command). A finished step is
kept on rerun (its report is written last); an interrupted training run resumes.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Any, Callable, Dict, List, Optional, Sequence

from ..utils.io import write_json


class ProgressiveError(ValueError):
    pass


def check_steps(steps: Sequence[float]) -> List[float]:
    s = [float(x) for x in steps]
    if not s:
        raise ProgressiveError("progressive pruning: no steps given (e.g. --steps 0.5 0.75 0.875)")
    if any(not 0.0 < x < 1.0 for x in s) or any(b <= a for a, b in zip(s, s[1:])):
        raise ProgressiveError(f"progressive pruning: steps {s}: expected rising shares in (0, 1) of "
                               f"the original channels removed, e.g. 0.5 0.75 0.875 (2x -> 4x -> 8x)")
    return s


def step_ratio(share: float, original: int, current: int) -> Optional[float]:
    """The ratio that takes a model of ``current`` channels to ``original * (1 - share)``;
    None when it has that few already (an earlier cut went further: tied scores, floors)."""
    r = 1.0 - original * (1.0 - share) / current
    return r if r > 0.0 else None


def progressive_prune(weights: str, output_dir: str, steps: Sequence[float], *,
                      prune: Callable[..., Dict[str, Any]],
                      train_between: Callable[[str, str], str],
                      log: Callable[[str], None] = print, **prune_kw) -> Dict[str, Any]:
    """Cut ``weights`` at each share of ``steps``; ``train_between(pruned, out_dir) -> best``
    trains after every cut but the last. ``prune`` is slim.workflow.prune_checkpoint (passed
    in so tests can count the calls); ``prune_kw`` goes to it (min_channels, evaluate, ...).
    Returns the last cut's report with ``steps``: one entry per step."""
    shares = check_steps(steps)
    if prune_kw.get("threshold") is not None:
        raise ProgressiveError("progressive pruning cuts by shares: give steps, not a threshold")
    prune_kw.pop("ratio", None)
    prune_kw.pop("threshold", None)
    os.makedirs(output_dir, exist_ok=True)
    src, first, current, done = weights, None, 0, []
    for k, share in enumerate(shares, 1):
        last = k == len(shares)
        out = os.path.join(output_dir, f"step{k}")
        rep_file = os.path.join(out, "prune_report.json")
        if os.path.isfile(rep_file):
            with open(rep_file) as f:
                rep = json.load(f)
            log(f"progressive step {k}/{len(shares)}: kept from an earlier run ({rep_file})")
        else:
            original = first["channels"]["before"] if first else None
            ratio = share if first is None else step_ratio(share, original, current)
            if ratio is None:
                log(f"progressive step {k}/{len(shares)}: {current} channels left, already at or below "
                    f"the {original * (1 - share):.0f} a share of {share} keeps: no cut")
            else:
                log(f"progressive step {k}/{len(shares)}: {share:.3f} of the original channels "
                    f"(ratio {ratio:.3f} of this model)")
                rep = prune(src, out, ratio=ratio, threshold=None, log=log, **prune_kw)
        first = first or rep     # the original model's sizes and scores, for the final report
        original = int(first["channels"]["before"])
        current = int(rep["channels"]["after"])
        entry = {"share": share, "channels": current, "removed_share": 1 - current / original,
                 "params": rep["params"]["after"], "pruned": rep["paths"]["weights"]}
        if "metrics" in rep and rep["metrics"].get("after_prune"):
            entry["map50_95_after_cut"] = rep["metrics"]["after_prune"].get("map50_95")
        if not last:
            src = train_between(rep["paths"]["weights"], os.path.join(out, "train"))
            entry["trained"] = src
        done.append(entry)
    # the last cut where a one-shot prune writes it
    final: Dict[str, Any] = dict(rep)
    shutil.copyfile(rep["paths"]["weights"], os.path.join(output_dir, "pruned.pdparams"))
    final["paths"] = {**rep["paths"], "weights": os.path.join(output_dir, "pruned.pdparams"),
                      "report": os.path.join(output_dir, "prune_report.json")}
    final["channels"] = {**rep["channels"], "before": original, "removed_share": 1 - current / original}
    # before = the original model, as a one-shot report says (each step's own report keeps its step's)
    p0, p1 = first["params"]["before"], rep["params"]["after"]
    final["params"] = {**rep["params"], "before": p0, "removed_share": 1 - p1 / p0}
    if "flops" in rep and "gflops_before" in first.get("flops", {}):
        final["flops"] = {**rep["flops"], "gflops_before": first["flops"]["gflops_before"]}
        final["flops"]["removed_share"] = {k: 1 - rep["flops"]["gflops_after"][k] / v
                                           for k, v in first["flops"]["gflops_before"].items()}
    if first.get("metrics", {}).get("before"):
        final["metrics"] = {**rep["metrics"], "before": first["metrics"]["before"]}
    final["progressive"] = done
    final["source"] = os.path.abspath(weights)
    write_json(final["paths"]["report"], final)
    log("progressive: " + " -> ".join(f"{e['channels']} channels ({e['removed_share']:.1%} removed)"
                                      for e in done))
    return final


def trainer_between(config: str, overrides: Sequence[str], epochs: int, progress: bool = False):
    """``train_between`` for progressive_prune: ``epochs`` of the project's trainer with
    ``config`` + ``overrides`` (e.g. configs/finetune.yml) from the pruned weights; returns its
    best checkpoint (the last one when no evaluation ran). An interrupted run resumes."""
    from ..config import load_config
    from ..engine.trainer import train

    def run(pruned: str, out: str) -> str:
        cfg = load_config(config, list(overrides) + [f"weights={pruned}", f"epochs={int(epochs)}",
                                                     f"output_dir={out}"])
        last = os.path.join(out, "last.pdparams")
        s = train(cfg, resume=last if os.path.isfile(os.path.join(out, "last.state")) else None,
                  progress=progress)
        return s["best"] if os.path.isfile(s["best"]) else s["last"]
    return run


__all__: Optional[List[str]] = ["progressive_prune", "trainer_between", "check_steps", "step_ratio",
                                "ProgressiveError"]

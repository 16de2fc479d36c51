#!/usr/bin/env python
"""Prune a sparse-trained YOLOv5 with PaddleSlim (BN-scale criterion, one global threshold).

    python tools/prune.py                                   # configs/prune.yml, output/sparse/best.pdparams
    python tools/prune.py -c configs/prune.yml --weights W.pdparams --ratio 0.875 --output DIR
    python tools/prune.py --threshold 0.01 --round-to 8 --eval --sensitivity -o prune.min_channels=4
    python tools/prune.py --steps 0.5 0.75 0.875 --step-epochs 2   # progressive: 2x, train, 4x, train, 8x

Writes DIR/pruned.pdparams (stands alone: its shapes are the model), DIR/prune_report.json,
DIR/gamma_hist.png, DIR/channels_per_layer.png, and with --sensitivity DIR/sensitivity.{json,png}.
"""
from __future__ import annotations

import argparse
import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import ppyolo_slim  # noqa: E402,F401  (owns native import order; before paddle)

DEFAULT_CONFIG = "configs/prune.yml"
PIPELINE_SPARSE = os.path.join("output", "pipeline", "sparse", "best.pdparams")   # tools/pipeline.py's default


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("-c", "--config", default=None, help=f"config YAML (default {DEFAULT_CONFIG})")
    p.add_argument("--weights", help="checkpoint to prune (default: the config's weights)")
    p.add_argument("--ratio", type=float, help="share of prunable channels to remove (0.875: 8x fewer)")
    p.add_argument("--threshold", type=float, help="|gamma| threshold instead of a ratio")
    p.add_argument("--output", help="output folder (default: the config's output_dir)")
    p.add_argument("--min-channels", type=int, help="floor of channels kept per layer (>= 1)")
    p.add_argument("--round-to", type=int, help="round kept channel counts up to a multiple")
    p.add_argument("--steps", type=float, nargs="+", metavar="SHARE",
                   help="progressive: cut at these shares of the original channels in turn (0.5 0.75 0.875)")
    p.add_argument("--step-epochs", type=int, help="progressive: training epochs after each cut but the last")
    p.add_argument("--step-config", default="configs/finetune.yml",
                   help="progressive: the training config between cuts (its -o overrides: this command's)")
    p.add_argument("--no-compensate", action="store_true", help="do not fold removed channels' constants")
    p.add_argument("--eval", action="store_true", help="mAP on val before and right after pruning")
    p.add_argument("--eval-images", type=int, default=None, help="evaluate on the first N val images")
    p.add_argument("--sensitivity", action="store_true",
                   help="PaddleSlim sensitivity analysis (9 ratios per layer) on a slice of val first")
    p.add_argument("--sensitivity-images", type=int, default=32, help="val images per sensitivity eval")
    p.add_argument("--sensitivity-layers", nargs="*",
                   help="only these layers and what lies inside them (model.2: model.2.cv1, "
                        "model.2.m.0.cv1, ...; not model.20)")
    # extend + nargs="+": both `-o a=1 -o b=2` and PaddleDetection's `-o a=1 b=2`
    p.add_argument("-o", "--opt", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="config overrides, e.g. -o prune.min_channels=4 prune.round_to=8 (repeatable)")
    return p.parse_args(argv)


def flag_overrides(args) -> list:
    """The flags as config overrides, after any -o: a flag wins. --ratio asks for a share, so
    it clears a threshold the config may hold (a threshold wins over a ratio)."""
    from ppyolo_slim.config import override
    flags = {"weights": args.weights, "output_dir": args.output, "prune.ratio": args.ratio,
             "prune.threshold": args.threshold, "prune.min_channels": args.min_channels,
             "prune.round_to": args.round_to, "prune.compensate": False if args.no_compensate else None,
             "prune.steps": args.steps, "prune.step_epochs": args.step_epochs}
    over = [override(k, v) for k, v in flags.items() if v is not None]
    return over + ([override("prune.threshold", None)] if args.ratio is not None else [])


def main(argv=None) -> int:
    args = parse_args(argv)
    from ppyolo_slim import cli
    from ppyolo_slim.config import ConfigError, load_config
    from ppyolo_slim.data import DataError
    from ppyolo_slim.engine.evaluate import EvaluationError
    from ppyolo_slim.model import CheckpointError, WeightShapeError
    from ppyolo_slim.model.weights import check_weights_file
    from ppyolo_slim.slim.compensate import CompensationError
    try:
        from ppyolo_slim.slim.pruner import PruneCoverageError, PruneError
    except ModuleNotFoundError as e:    # PaddleSlim: a step of its own on Paddle 3 (README)
        if e.name != "paddleslim":
            raise
        print(f"error: {e}", file=sys.stderr)
        return cli.USAGE
    from ppyolo_slim.slim.selection import PruneConfig
    from ppyolo_slim.slim.workflow import prune_checkpoint, val_evaluator

    if args.ratio is not None and args.threshold is not None:
        print("error: give --ratio or --threshold, not both", file=sys.stderr)
        return cli.USAGE
    if args.steps and args.sensitivity:
        print("error: --sensitivity analyses one cut; run it without --steps", file=sys.stderr)
        return cli.USAGE
    try:
        cfg = load_config(args.config or DEFAULT_CONFIG, list(args.opt) + flag_overrides(args))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return cli.USAGE
    weights = cfg["weights"]
    if not weights:
        print("error: no weights to prune: give --weights or set 'weights' in the config", file=sys.stderr)
        return cli.USAGE
    if not os.path.isfile(weights) and not args.weights:
        hint = "\nTrain the sparse model first:\n    python tools/train.py -c configs/sparse.yml\n"
        if os.path.isfile(PIPELINE_SPARSE):
            hint = f"\nThe pipeline's sparse model is there: python tools/prune.py --weights {PIPELINE_SPARSE}\n"
        print(f"error: {weights}: no such weights file{hint}"
              "or give the checkpoint: python tools/prune.py --weights path/to/best.pdparams", file=sys.stderr)
        return cli.USAGE
    try:
        check_weights_file(weights)         # before any data is scanned for --eval / --sensitivity
    except (CheckpointError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return cli.USAGE
    try:
        evaluate = val_evaluator(cfg, args.eval_images) if args.eval else None
        sens_eval = None
        if args.sensitivity:
            ev = val_evaluator(cfg, args.sensitivity_images)

            def sens_eval(model, ev=ev):
                v = ev(model)["map50_95"]
                return 0.0 if v is None else float(v)    # None: nothing detected at all
        settings = PruneConfig.of(cfg)
        if settings.steps:
            from ppyolo_slim.slim.progressive import ProgressiveError, progressive_prune, trainer_between
            between = trainer_between(args.step_config, [o for o in args.opt if not o.startswith("prune.")],
                                      settings.step_epochs, progress=sys.stderr.isatty())
            try:
                progressive_prune(weights, cfg["output_dir"], settings.steps, prune=prune_checkpoint,
                                  train_between=between, settings=settings, img_size=cfg["img_size"],
                                  evaluate=evaluate)
            except ProgressiveError as e:
                raise ConfigError(str(e)) from None
        else:
            prune_checkpoint(
                weights, cfg["output_dir"], settings, img_size=cfg["img_size"], evaluate=evaluate,
                sensitivity_eval=sens_eval, sensitivity_layers=args.sensitivity_layers)
    except (CheckpointError, WeightShapeError, FileNotFoundError, ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return cli.USAGE
    except (PruneError, PruneCoverageError, CompensationError, EvaluationError) as e:
        print(f"error: {e}", file=sys.stderr)
        return cli.FAILED
    return cli.OK


if __name__ == "__main__":
    sys.exit(main())

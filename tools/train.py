"""Train YOLOv5 (sparse, plain or fine-tune): python tools/train.py -c configs/sparse.yml [-o k=v ...]

Multi-GPU: python -m paddle.distributed.launch --gpus 0,1 tools/train.py -c configs/sparse.yml
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ppyolo_slim  # noqa: E402,F401  (before paddle: import order)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-c", "--config", help="config YAML (default: configs/sparse.yml; with --resume PATH: "
                                           "the run's own saved config)")
    ap.add_argument("-o", "--opt", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                    help="override config keys, e.g. -o epochs=5 optimizer.lr0=0.005 (or -o repeated)")
    ap.add_argument("--weights", help="initial weights (.pdparams); same as -o weights=PATH")
    ap.add_argument("--resume", nargs="?", const="", default=None, metavar="LAST",
                    help="continue a run from its last.pdparams (default: OUTPUT_DIR/last.pdparams), "
                         "with the settings it was started with")
    ap.add_argument("--exist-ok", action="store_true",
                    help="start a new run in an output folder that already holds one (overwrites it)")
    ap.add_argument("--nprocs", type=int, default=None,
                    help="data-parallel training in N CPU processes (gloo); GPUs: paddle.distributed.launch")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    from ppyolo_slim import cli
    from ppyolo_slim.config import ConfigError, override
    from ppyolo_slim.engine.run import check_train_inputs, refuse_to_overwrite_a_run, train_config, train_main
    overrides = list(args.opt) + ([override("weights", args.weights)] if args.weights else [])
    try:
        cfg = train_config(args.config, overrides, args.resume)
        check_train_inputs(cfg, args.resume)       # before the data scan, which can take minutes
        if args.resume is None and not args.exist_ok:
            refuse_to_overwrite_a_run(cfg)
    except (ConfigError, ValueError, FileNotFoundError) as e:    # CheckpointError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return cli.USAGE
    return train_main(cfg, resume=args.resume, progress=not args.no_progress, nprocs=args.nprocs)


if __name__ == "__main__":
    sys.exit(main())

"""Train YOLOv5 (sparse, plain or fine-tune): python tools/train.py -c configs/sparse.yml [-o k=v ...]

Multi-GPU: python -m paddle.distributed.launch --gpus 0,1 tools/train.py -c configs/sparse.yml
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ppyolo_slim  # noqa: E402,F401  (before paddle: import order, STACK.md trap 2)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-c", "--config", default="configs/sparse.yml")
    ap.add_argument("-o", "--opt", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key, e.g. -o epochs=5 -o optimizer.lr0=0.005")
    ap.add_argument("--weights", help="initial weights (.pdparams); same as -o weights=PATH")
    ap.add_argument("--resume", nargs="?", const="", default=None, metavar="LAST",
                    help="continue a run from its last.pdparams (default: OUTPUT_DIR/last.pdparams)")
    ap.add_argument("--nprocs", type=int, default=None,
                    help="data-parallel training in N CPU processes (gloo); GPUs: paddle.distributed.launch")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    from ppyolo_slim.config import ConfigError, load_config
    from ppyolo_slim.engine.run import train_main
    overrides = list(args.opt) + ([f"weights={args.weights}"] if args.weights else [])
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as e:
        sys.exit(f"error: {e}")
    return train_main(cfg, resume=args.resume, progress=not args.no_progress, nprocs=args.nprocs)


if __name__ == "__main__":
    sys.exit(main())
